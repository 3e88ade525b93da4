#!/usr/bin/env bash
# Fresh machine -> the whole test suite (fast tests, then the slow ones on the real MiniLM).
# Extra arguments go to pytest, e.g. `bash tools/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/ruff check edgeformer tests benchmarks examples runtimes/python setup.py
# two workers (the CI machine has 2 cores; lowering is single-threaded Python), each file on one
# worker, so a module fixture (the SmolLM2 build, an sshd) is made once
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile --durations=40 "$@"
