from __future__ import annotations

import math

from hpsearch.numbers import amount_figure, difference_figure, interval_figure, score_figure


def test_scores_keep_four_decimals_and_small_figures_three_significant_digits() -> None:
    assert score_figure(0.71034) == "0.7103" and score_figure(1.739275) == "1.7393" and score_figure(0.0) == "0.0000"
    assert score_figure(0.00153) == "0.00153" and score_figure(0.0015) == "0.0015" and score_figure(2.1e-05) == "2.1e-05"
    assert score_figure(0.0123, signed=True) == "+0.0123" and score_figure(-3.24e-05, signed=True) == "-3.24e-05"
    assert score_figure(math.nan) == "nan"


def test_a_difference_reads_with_its_interval() -> None:
    assert difference_figure({"difference": -0.00042, "low": -0.0021, "high": 0.0013}) == "-0.00042 [-0.0021, +0.0013]"
    assert interval_figure(0.58164, 0.83911) == "[0.5816, 0.8391]" and interval_figure(0.0, 0.00204) == "[0.0000, 0.00204]"


def test_seconds_and_milliseconds_are_whole_from_ten_and_two_digits_below() -> None:
    assert amount_figure(1234.4) == "1,234" and amount_figure(12.3) == "12" and amount_figure(9.96) == "10"
    assert amount_figure(6.63) == "6.6" and amount_figure(0.4321) == "0.43" and amount_figure(0.0417) == "0.042"
    assert amount_figure(0.0) == "0" and amount_figure(math.inf) == "inf" and amount_figure(0.996) == "1.0" and amount_figure(5) == "5.0"
