"""Property test: no YAML document makes the spec loader fail with anything but SpecError."""
from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpsearch.errors import SpecError
from hpsearch.spec import load_spec_text

KEYS = st.sampled_from(["name", "task", "data", "train", "models", "path", "hub", "space", "cv", "folds", "search",
                        "learning_rate", "type", "low", "high", "log", "choices", "columns", "labels", "n_trials", "x"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=12),
                    st.sampled_from(["text-classification", "float", "int", "categorical", "full", "freeze-2", "d.csv"]))
DOCUMENTS = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)), max_leaves=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=DOCUMENTS)
def test_random_documents_raise_only_spec_errors(tmp_path: Path, document: object) -> None:
    try:
        load_spec_text(yaml.safe_dump(document), tmp_path, "random.yaml")
    except SpecError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_random_text_raises_only_spec_errors(tmp_path: Path, text: str) -> None:
    try:
        load_spec_text(text, tmp_path, "random.yaml")
    except SpecError:
        pass
