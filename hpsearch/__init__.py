"""hpsearch: cross-validated search over pretrained models and fine-tuning settings."""
from hpsearch.errors import DataError, HpsearchError, SpecError, TrialError

__version__ = "0.1.0"
__all__ = ["DataError", "HpsearchError", "SpecError", "TrialError", "__version__"]
