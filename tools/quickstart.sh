#!/usr/bin/env bash
# Fresh machine -> a validated int8 MiniLM artifact for this host, then run it once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/edgeformer build minilm --target host -o out/minilm-host
.venv/bin/edgeformer inspect out/minilm-host
.venv/bin/edgeformer run out/minilm-host "the coffee was stale and bitter"
