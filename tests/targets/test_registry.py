import pytest

import edgeformer
from edgeformer.errors import UserError
from edgeformer.targets import TARGETS, get_target


def test_aliases_and_names_resolve():
    assert get_target("rpi5").name == "rpi5-arm64-xnnpack"
    assert get_target("rpi5-arm64-xnnpack").alias == "rpi5"
    assert {t.alias for t in TARGETS.values()} == {"host", "rpi5", "android", "server-cuda"}


def test_unknown_target_lists_known():
    with pytest.raises(UserError, match=r"unknown target 'pi'; use one of: host \(host-x86_64-xnnpack\), rpi5"):
        get_target("pi")


def test_every_target_has_budgets_and_a_valid_recipe():
    for t in TARGETS.values():
        assert t.budgets.max_pte_mb and t.budgets.max_latency_ms_p50 and t.budgets.max_peak_memory_mb
        assert t.recipe.quant in ("fp32", "int8", "8da4w")


def test_server_cuda_fails_clearly_and_writes_nothing(tiny_bert, tmp_path):
    with pytest.raises(UserError, match="server-cuda: CUDA lowering is not implemented yet"):
        edgeformer.build(str(tiny_bert), "server-cuda", tmp_path / "x", seq_len=16, bench_iters=0)
    assert list(tmp_path.iterdir()) == []
