"""Every backend through one chain, as ExecuTorch's `Tester` does: quantize -> export -> lower
-> run -> compare, for each scheme in the backend's own table; skipped (with the reason)
where the backend cannot run here."""

from __future__ import annotations

import copy

import pytest
import torch

from edgeformer.models import load_model
from edgeformer.program import AotiProgram, Program
from edgeformer.recipe import Recipe
from edgeformer.targets.backend import Backend
from edgeformer.targets.cuda import Cuda
from edgeformer.targets.vulkan import VULKAN
from edgeformer.targets.xnnpack import XNNPACK
from edgeformer.transforms.quantize import quantize_model
from edgeformer.validate.numerics import sqnr_db

BACKENDS = {"xnnpack": XNNPACK, "vulkan": VULKAN, "cuda": Cuda("cuda"), "cuda-cpu-fallback": Cuda("cpu")}
CASES = [(name, scheme) for name, b in BACKENDS.items() for scheme in b.linear_configs]


def _device(backend: Backend) -> str:
    return getattr(backend, "device", "cpu")


def _inputs(vocab: int):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (1, 16), generator=g)
    mask = torch.ones(1, 16, dtype=torch.long)
    mask[0, 11:] = 0
    return ids, mask


def _run(backend: Backend, lowered, tmp_path, threads: int = 1):
    if isinstance(backend, Cuda):
        (tmp_path / "model.pt2").write_bytes(lowered.pte)
        return AotiProgram(tmp_path / "model.pt2", backend.device, threads)
    return Program(lowered.pte, threads, data=lowered.data)


@pytest.mark.parametrize("name,scheme", CASES)
def test_backend_chain(name, scheme, tiny_bert, tmp_path):
    backend = BACKENDS[name]
    if _device(backend) == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"{name}: {backend.runs_here()}")  # AOTInductor compiles for the GPU on the GPU
    recipe = Recipe(quant=scheme, embedding_quant="fp32", seq_len=16)
    loaded = load_model(str(tiny_bert))
    fp32 = copy.deepcopy(loaded.encoder).eval()
    module = quantize_model(copy.deepcopy(loaded.encoder).eval().to(_device(backend)), recipe, backend)
    ids, mask = _inputs(loaded.encoder.shape.vocab_size)
    example = (ids.to(_device(backend)), mask.to(_device(backend)))
    with torch.no_grad():
        ep = torch.export.export(module, example)
        lowered = backend.lower(ep, recipe)
    # structure: what the backend took
    d = lowered.delegation
    assert d.delegated_subgraphs >= 1 and d.delegated_nodes > 0 and len(lowered.pte) > 0
    if name == "xnnpack":
        assert d.delegated_subgraphs == 1 and d.coverage > 0.9
    why = backend.runs_here()
    if why is not None:
        pytest.skip(f"{name} lowered and delegated; cannot run here: {why}")
    with torch.no_grad():
        got = _run(backend, lowered, tmp_path)(ids, mask)
        exported = ep.module()(*example).cpu()
        reference = fp32(ids, mask)
    # numerics: tight against the exported (already quantized) program; SQNR against float
    if scheme == "fp32":
        torch.testing.assert_close(got, exported, atol=1e-5, rtol=1e-5)
    else:
        assert sqnr_db(exported, got) > 20
    assert sqnr_db(reference, got) > (60 if scheme == "fp32" else 20)


def test_every_backend_refuses_a_scheme_it_lacks():
    from edgeformer.errors import UserError

    with pytest.raises(UserError, match=r"--quant 8da4w is not available on the cuda backend; use one of: fp32, int8"):
        quantize_model(torch.nn.Linear(4, 4), Recipe(quant="8da4w"), Cuda("cpu"))
    with pytest.raises(UserError, match=r"--embedding-quant int8 is not available on the cuda backend"):
        quantize_model(torch.nn.Linear(4, 4), Recipe(quant="fp32", embedding_quant="int8"), Cuda("cpu"))
