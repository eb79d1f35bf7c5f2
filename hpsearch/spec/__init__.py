"""The study spec: typed, documented, frozen settings read from a YAML file."""
from hpsearch.spec._load import load_spec, load_spec_text, local_model_dir, package_model_dir
from hpsearch.spec._models import (
    CVSpec,
    Candidate,
    Columns,
    DataSource,
    DataSpec,
    ExecutionSpec,
    ExportSpec,
    PrunerSpec,
    SamplerSpec,
    SearchSpec,
    SelectionSpec,
    StudySpec,
    Subsample,
    TrackingSpec,
)
from hpsearch.spec._space import CategoricalParam, FixedParam, FloatParam, IntParam, SearchSpace

__all__ = [
    "CVSpec", "Candidate", "CategoricalParam", "Columns", "DataSource", "DataSpec", "ExecutionSpec",
    "ExportSpec", "FixedParam", "FloatParam", "IntParam", "PrunerSpec", "SamplerSpec", "SearchSpace",
    "SearchSpec", "SelectionSpec", "StudySpec", "Subsample", "TrackingSpec",
    "load_spec", "load_spec_text", "local_model_dir", "package_model_dir",
]
