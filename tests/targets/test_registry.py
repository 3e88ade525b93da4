import pytest

from edgeformer.errors import UserError
from edgeformer.targets import TARGETS, get_target


def test_aliases_and_names_resolve():
    assert get_target("rpi5").name == "rpi5-arm64-xnnpack"
    assert get_target("rpi5-arm64-xnnpack").alias == "rpi5"
    assert {t.alias for t in TARGETS.values()} == {"host", "rpi5", "android", "android-vulkan", "server-cuda"}


def test_unknown_target_lists_known():
    with pytest.raises(UserError, match=r"unknown target 'pi'; use one of: host \(host-x86_64-xnnpack\), rpi5"):
        get_target("pi")


def test_every_target_has_budgets_and_a_valid_recipe():
    for t in TARGETS.values():
        assert t.budgets.max_pte_mb
        if t.backend != "vulkan":  # Vulkan cannot run here: structural budgets only
            assert t.budgets.max_peak_memory_mb
            # an unknown machine (host) gets a ratio measured side by side; known hardware a time
            if t.measure_here:
                assert t.budgets.min_speedup_vs_eager and t.budgets.max_latency_ms_p50 is None
                assert t.lm_budgets.min_speedup_vs_eager and t.lm_budgets.max_latency_ms_p50 is None
            else:
                assert t.budgets.max_latency_ms_p50 and t.budgets.min_speedup_vs_eager is None
        assert t.recipe.quant in ("fp32", "int8", "8da4w")


def test_vulkan_target_lowers_and_is_validated_structurally(tiny_bert, tmp_path, capsys):
    """android-vulkan: everything delegated to Vulkan, size checked, numerics honestly not run;
    running it here is refused with the reason and the fix."""
    from conftest import run_cli

    from edgeformer.artifact import load_artifact

    out = tmp_path / "vk"
    code, _, err = run_cli(["build", str(tiny_bert), "--target", "android-vulkan", "-o", str(out), "--seq-len", "16"], capsys)
    assert code == 0, err
    m = load_artifact(out).manifest
    assert m.delegation["backend"] == "VulkanBackend" and m.delegation["non_delegated_nodes"] == 0
    assert {"EdgeformerModel.kt", "WordPiece.kt", "UnicodeTables.kt"} <= {f.name for f in (out / "android").iterdir()}  # the app's bundle
    assert (out / "report.md").is_file()
    assert m.numerics["sqnr_db"] is None and "no Vulkan backend" in m.numerics["reason"]
    checks = {b["name"]: b for b in m.budgets}
    assert checks["max_pte_mb"]["passed"] is True and checks["min_sqnr_db"]["where"] == "cannot run here"
    code, out_, err = run_cli(["inspect", str(out)], capsys)  # structure only: nothing runs
    assert code == 0 and "not run: the pip ExecuTorch runtime has no Vulkan backend" in " ".join(out_.split()), err
    for cmd in (["bench", str(out)], ["run", str(out), "hello"], ["bench", str(out), "--device", "adb:emulator-5554"]):
        code, _, err = run_cli(cmd, capsys)
        assert code == 2 and "is a Vulkan artifact" in err and "Traceback" not in err
