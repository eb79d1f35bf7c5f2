#!/usr/bin/env bash
# The demo study: MiniLM candidates on Rotten Tomatoes reviews, on the embedded default storage.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hpsearch run studies/rotten-tomatoes.yaml "$@"
