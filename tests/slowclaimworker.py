"""`hpsearch worker` that pauses between finding room in the study and starting its trial (a test helper).

Used as ``python slowclaimworker.py STUDY [ARGS]``. The pause widens the window in which workers
without a shared claim lock would all see room for the last trials and overshoot ``n_trials``; with
the lock, the pause only makes the others wait.
"""
from __future__ import annotations

import sys
import time

import optuna

_original = optuna.Study.optimize


def _slow(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - same signature as the original
    time.sleep(1.0)
    return _original(self, *args, **kwargs)


optuna.Study.optimize = _slow

if __name__ == "__main__":
    from hpsearch.cli import main

    sys.exit(main(["worker", *sys.argv[1:]]))
