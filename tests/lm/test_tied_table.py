"""A tied LM's table stored once: the embedding gathers the int8 head's rows, and the lowering
writes tensors that appear twice once, in the program's data file (model.ptd)."""

import copy
import json

import pytest
import torch
from conftest import run_cli
from test_decoder import CTX, steps, tiny_llama

import edgeformer
from edgeformer.models.decoder import export_decoder
from edgeformer.models.lm_families import from_hf
from edgeformer.program import Program
from edgeformer.recipe import Recipe
from edgeformer.targets.xnnpack import lower
from edgeformer.transforms.quantize import quantize_model
from edgeformer.transforms.smooth import calibrate, smooth_head
from edgeformer.transforms.tied_table import SHARED, SharedTableEmbedding
from edgeformer.validate.numerics import sqnr_db

TABLE = 96 * 64  # the tiny Llama's int8 table, bytes


def _int8(share: bool, smooth: bool):
    dec = from_hf(tiny_llama(seed=3), CTX)
    if smooth:
        ids, amax = calibrate(dec, list(range(5, 13)), {"lm_head": dec.lm_head})
        smooth_head(dec, amax["lm_head"], len(ids))
    return quantize_model(dec, Recipe(quant="int8"), share_tied=share)


@pytest.mark.parametrize("smooth", [False, True])
def test_shared_table_is_the_separate_one_within_int8(smooth):
    """The gathered head rows are torchao's int8 table exactly (same per-row codes and scales);
    divided by the head's smoothing, the table to int8 precision: as close to fp32 as two tables."""
    ids = torch.randint(0, 96, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = steps(from_hf(tiny_llama(seed=3), CTX), ids, prefill=8)
        two, one = (steps(_int8(share, smooth), ids, prefill=8) for share in (False, True))
    if not smooth:
        torch.testing.assert_close(one, two, atol=0, rtol=0)
    else:
        assert not torch.equal(one, two)  # the embedding did change
        assert sqnr_db(ref, one) > sqnr_db(ref, two) - 1.5, (sqnr_db(ref, one), sqnr_db(ref, two))


def test_the_table_is_stored_once_and_the_program_is_the_exported_one():
    dec = _int8(share=True, smooth=True)
    assert isinstance(dec.embed, SharedTableEmbedding) and dec.quantization_record["modules"]["embed"] == SHARED
    ep = export_decoder(copy.deepcopy(dec))
    exported = ep.module()  # before lowering, which consumes the program
    low = lower(ep, Recipe(quant="int8"))
    separate = lower(export_decoder(copy.deepcopy(_int8(share=False, smooth=True))), Recipe(quant="int8"))
    assert low.data is not None and separate.data is None
    assert TABLE <= len(low.data) < 2 * TABLE  # one table in the data file
    assert low.size <= separate.size - TABLE + 2048  # the second copy is gone (a few KiB of headers added)
    prog = Program.of(low, 2, causal_lm=True)
    ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = steps(exported, ids, prefill=6)
    got = torch.cat([prog(ids[:, :6], torch.tensor([0]))] + [prog(ids[:, p:p + 1], torch.tensor([p])) for p in range(6, 12)], 1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_an_untied_or_4bit_head_keeps_its_own_table():
    untied = quantize_model(from_hf(tiny_llama(tie=False), CTX), Recipe(quant="int8"), share_tied=True)
    four = quantize_model(from_hf(tiny_llama(), CTX), Recipe(quant="8da4w", group_size=32), share_tied=True)
    assert not isinstance(untied.embed, SharedTableEmbedding) and not isinstance(four.embed, SharedTableEmbedding)


@pytest.fixture(scope="module")
def gguf_build(tiny_gguf, tmp_path_factory):
    return edgeformer.build(str(tiny_gguf), "host", tmp_path_factory.mktemp("tied") / "gguf", quant="gguf",
                            max_context=64, bench_iters=4)


def test_gguf_build_ships_the_data_file(gguf_build, capsys):
    """`--quant gguf` on a tied GGUF: the Q8_0 table becomes the head's int8 rows; the artifact holds
    model.ptd (hashed in the manifest, counted in the size budget) and runs from the CLI."""
    a = gguf_build.path
    m = gguf_build.manifest
    assert (a / "model.ptd").stat().st_size == m.pte["data"]["bytes"] > 256 * 64
    assert m.quantization["modules"]["embed"] == SHARED and m.passed
    size = next(b for b in m.budgets if b["name"] == "max_pte_mb")
    assert size["measured"] == pytest.approx(m.stored_bytes / 2**20, abs=0.01)
    code, out, err = run_cli(["run", str(a), "-p", "hello", "-n", "4", "--no-chat", "--json"], capsys)
    assert code == 0 and json.loads(out)["new_tokens"] == 4, err


def test_a_damaged_data_file_is_named(gguf_build, tmp_path, capsys):
    import shutil

    art = tmp_path / "art"
    shutil.copytree(gguf_build.path, art)
    with open(art / "model.ptd", "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    code, _, err = run_cli(["run", str(art), "-p", "hello", "-n", "2"], capsys)
    assert code == 2 and "model.ptd sha256" in err and "Traceback" not in err


def test_a_prompt_token_past_the_table_is_refused(gguf_build, capsys):
    """The tiny GGUF's tokenizer adds <|endoftext|> as id 256 past the 256-row table: the gather
    kernel would abort the process; the prompt is refused by name instead."""
    code, _, err = run_cli(["run", str(gguf_build.path), "-p", "hi <|endoftext|>", "-n", "2", "--no-chat"], capsys)
    assert code == 2 and "'<|endoftext|>' (token id 256)" in err and "256-row token table" in err, err
