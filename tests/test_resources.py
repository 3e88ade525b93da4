"""The device runtimes are found from a source checkout and from an installed wheel alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeformer import resources
from edgeformer.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {"android": "EdgeformerModel.kt", "cpp": "CMakeLists.txt", "python": "edgeformer_worker.py"}


@pytest.mark.parametrize("name", resources.RUNTIMES)
def test_runtime_dir_in_the_source_tree(name):
    d = resources.runtime_dir(name)
    assert d == ROOT / "runtimes" / name and (d / EXPECTED[name]).is_file()


def test_runtime_dir_prefers_the_wheels_package_data(tmp_path, monkeypatch):
    (tmp_path / "edgeformer" / "_runtimes" / "cpp").mkdir(parents=True)
    monkeypatch.setattr(resources, "files", lambda package: tmp_path / package)
    assert resources.runtime_dir("cpp") == tmp_path / "edgeformer" / "_runtimes" / "cpp"


def test_runtime_dir_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "files", lambda package: tmp_path / package)
    monkeypatch.setattr(resources, "__file__", str(tmp_path / "site-packages" / "edgeformer" / "resources.py"))
    with pytest.raises(UserError, match=r"has no runtimes/cpp \(looked in .*; reinstall edgeformer"):
        resources.runtime_dir("cpp")


def test_unknown_runtime():
    with pytest.raises(ValueError, match="unknown runtime 'ios'; use one of android, cpp, python"):
        resources.runtime_dir("ios")
