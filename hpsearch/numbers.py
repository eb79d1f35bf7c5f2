"""Scores as the command line, the report and the model card write them."""
from __future__ import annotations

import math


def score_figure(value: float, signed: bool = False) -> str:
    """``value`` to 4 decimals, as scores between 0 and 1 read best; below 0.01 (the RMSE of targets measured in
    thousandths, a standard deviation or difference between close trials) to 3 significant digits, which 4 decimals
    would round to 0.0000 or to one digit."""
    if not math.isfinite(value) or value == 0 or abs(value) >= 0.01:
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return f"{value:+.3g}" if signed else f"{value:.3g}"


def interval_figure(low: float, high: float, signed: bool = False) -> str:
    """An interval's bounds as :func:`score_figure` writes them: ``[0.5816, 0.8391]``."""
    return f"[{score_figure(low, signed)}, {score_figure(high, signed)}]"


def difference_figure(comparison: dict[str, float]) -> str:
    """A paired comparison's difference with its interval: ``+0.0123 [-0.0040, +0.0286]``."""
    return f"{score_figure(comparison['difference'], signed=True)} {interval_figure(comparison['low'], comparison['high'], signed=True)}"


def amount_figure(value: float) -> str:
    """A measured amount (device-seconds, milliseconds per example) in whole units from 10 up (``1,234``), below
    that to 2 significant digits (``3.2``, ``1.0``, ``0.043``): a whole number would call a small model's second or
    millisecond 0."""
    if not math.isfinite(value) or value == 0 or abs(value) >= 9.95:
        return f"{value:,.0f}"
    return f"{value:#.2g}"
