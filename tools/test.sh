#!/usr/bin/env bash
# Fresh machine -> the whole test suite (fast tests, then the slow ones on the real MiniLM).
# Extra arguments go to pytest, e.g. `bash tools/test.sh -m "not slow"`. By default the files that
# build a real model end to end at length (marked heavy: the SmolLM2 build, fine-foods fine-tuning;
# ~43 worker-minutes) are left out so the suite fits CI's 90 minutes;
# `bash tools/test.sh -m heavy` runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/ruff check edgeformer tests benchmarks examples runtimes/python setup.py
# two workers (the CI machine has 2 cores; lowering is single-threaded Python), each file on one
# worker, so a module fixture (the SmolLM2 build, an sshd) is made once
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile --durations=40 -m "not heavy" "$@"
