from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch.data import prepare_data
from hpsearch.finetune import FineTuner
from hpsearch.spec import load_spec
from toydata import toy_study


@pytest.fixture
def make_tuner(tmp_path: Path, tiny_bert: Path):
    """Build (spec, tuner) for a toy study of ``task`` on the tiny model."""

    def make(task: str = "text-classification", rows: int = 160, model: Path | None = None, **kwargs: object):
        spec = load_spec(toy_study(tmp_path, model or tiny_bert, task=task, rows=rows))
        tuner = FineTuner(prepare_data(spec), cache_dir=tmp_path / "cache", max_length=32, **kwargs)
        return spec, tuner

    return make
