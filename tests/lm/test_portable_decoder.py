"""The portable decoder (`--lm-ops portable`): core ATen ops only, equal to the custom-op one."""

import copy

import pytest
import torch
from test_decoder import CTX, steps, tiny_llama

from edgeformer.models.decoder import export_decoder
from edgeformer.models.lm_families import from_hf
from edgeformer.program import Program
from edgeformer.recipe import Recipe
from edgeformer.targets.xnnpack import lower


@pytest.mark.parametrize("window,sinks", [(None, 0), (6, 2)])
def test_portable_equals_custom_ops_eager(window, sinks):
    hf = tiny_llama(seed=2)
    ids = torch.randint(0, 96, (1, 20))
    with torch.no_grad():
        ref = steps(from_hf(hf, CTX, window, sinks, chunk=8), ids[:, :20], prefill=8)
        got = steps(from_hf(hf, CTX, window, sinks, chunk=8, portable=True), ids[:, :20], prefill=8)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_portable_pte_has_no_custom_ops_and_equals_eager():
    dec = from_hf(tiny_llama(seed=3), CTX, portable=True)
    lowered = lower(export_decoder(copy.deepcopy(dec)), Recipe(quant="fp32"))
    ops = lowered.delegation.to_dict()["non_delegated_ops"]
    assert not [op for op in ops if op.startswith("llama")], ops
    prog = Program.of(lowered, 2)  # no custom-op kernels loaded
    ids = torch.randint(0, 96, (1, 13))
    with torch.no_grad():
        for prefill in (9, 4):  # the second sequence starts over a stale cache
            torch.testing.assert_close(steps(prog, ids, prefill), steps(dec, ids, prefill), atol=1e-5, rtol=0)
