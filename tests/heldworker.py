"""`hpsearch worker` whose trials finish only once a gate file exists, with a top score (a test helper).

Used as ``python heldworker.py GATE STUDY``: it lets a test keep a trial RUNNING in another process
for as long as it needs, and makes that trial the study's true winner.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import hpsearch.search as search

GATE = Path(sys.argv[1])
_original = search.best_epoch_aggregate


def _held(curves, direction):  # noqa: ANN001, ANN202 - same signature as the original
    while not GATE.exists():
        time.sleep(0.2)
    epochs, scores = _original(curves, direction)
    return epochs, [0.99 for _ in scores]


search.best_epoch_aggregate = _held

if __name__ == "__main__":
    from hpsearch.cli import main

    sys.exit(main(["worker", *sys.argv[2:]]))
