"""Packaging beyond pyproject.toml: the repository's `runtimes/` (what runs on the device) goes
into the wheel as the package data `edgeformer/_runtimes/`, which a TOML table cannot say
next to automatic package discovery. Read them with `edgeformer.resources.runtime_dir`."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

RUNTIMES = sorted(p.name for p in Path(__file__).parent.joinpath("runtimes").iterdir() if p.is_dir())
PACKAGES = find_namespace_packages(include=["edgeformer*"])  # what pyproject's packages.find gave

setup(
    packages=PACKAGES + ["edgeformer._runtimes"] + [f"edgeformer._runtimes.{r}" for r in RUNTIMES],
    package_dir={"edgeformer._runtimes": "runtimes"},
    package_data={"edgeformer._runtimes": ["*"], **{f"edgeformer._runtimes.{r}": ["*"] for r in RUNTIMES}},
)
