"""The artifact folder's writing rules: a bad -o is refused before any work, staging folders
never outlive their build, a publish replaces an earlier artifact whole."""

from __future__ import annotations

import os
import stat

import pytest
from conftest import SEQ, run_cli

from edgeformer import artifact, stopping
from edgeformer.errors import UserError


def _file(tmp_path):
    f = tmp_path / "OUT"
    f.write_text("not an artifact")
    return f


def _foreign_folder(tmp_path):
    d = tmp_path / "OUT"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    return d


def test_check_out_accepts_what_it_may_replace(tmp_path):
    artifact.check_out(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    artifact.check_out(tmp_path / "empty")
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / artifact.MANIFEST).write_text("{}")
    artifact.check_out(tmp_path / "ours")


@pytest.mark.parametrize("make,what", [(_file, "a file"), (_foreign_folder, "a non-empty folder without manifest.json")])
def test_check_out_refuses_what_is_not_ours(tmp_path, make, what):
    out = make(tmp_path)
    with pytest.raises(UserError, match=f"output '{out}' exists and is not an edgeformer artifact \\({what}\\); "
                                        "choose another -o or remove it"):
        artifact.check_out(out)


def test_check_out_with_another_marker(tmp_path):
    out = _foreign_folder(tmp_path)
    with pytest.raises(UserError, match=r"is not a model folder \(a non-empty folder without config.json\)"):
        artifact.check_out(out, marker="config.json")
    (out / "config.json").write_text("{}")
    artifact.check_out(out, marker="config.json")


@pytest.mark.parametrize("make", [_file, _foreign_folder])
def test_staging_refuses_too(tmp_path, make):
    out = make(tmp_path)
    with pytest.raises(UserError, match="exists and is not an edgeformer artifact"):
        with artifact.staging(out):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUT"]


def test_staging_is_gone_after_a_failure_and_unregistered(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with artifact.staging(tmp_path / "OUT") as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".OUT.") and tmp in stopping._staging
            (tmp / "model.pte").write_bytes(b"half")
            raise RuntimeError("boom")
    assert not list(tmp_path.iterdir()) and not stopping._staging


def test_commit_replaces_an_artifact_whole(tmp_path):
    out = tmp_path / "OUT"
    for version in ("1", "2"):
        with artifact.staging(out) as tmp:
            (tmp / artifact.MANIFEST).write_text(version)
            if version == "1":
                (tmp / "only-in-1").write_text("")
            artifact.commit(tmp, out)
    assert sorted(p.name for p in out.iterdir()) == [artifact.MANIFEST] and (out / artifact.MANIFEST).read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUT"]  # no .OUT.old, no .OUT.*.tmp
    stopping._reset()  # forget the publishes recorded for the stop line


def test_a_published_folder_has_the_umasks_mode(tmp_path):
    """Not mkdtemp's 0700: an artifact is for others to read (a server, a device sync)."""
    old = os.umask(0o022)
    try:
        with artifact.staging(tmp_path / "OUT") as tmp:
            artifact.commit(tmp, tmp_path / "OUT")
    finally:
        os.umask(old)
        stopping._reset()
    assert stat.S_IMODE((tmp_path / "OUT").stat().st_mode) == 0o755


@pytest.mark.parametrize("make", [_file, _foreign_folder])
def test_build_refuses_a_bad_out_before_any_stage(tiny_bert, tmp_path, capsys, make):
    out = make(tmp_path)
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else out.read_text()
    code, stdout, err = run_cli(["build", str(tiny_bert), "--target", "host", "-o", str(out), "--seq-len", str(SEQ)], capsys)
    lines = [s for s in err.splitlines() if s.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: output '{out}' exists and is not"), err
    assert "✓" not in err and not stdout  # refused before loading the model
    assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else out.read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUT"]
