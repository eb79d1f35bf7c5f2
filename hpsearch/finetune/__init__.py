"""The shared fine-tune core. Never imports optuna or mlflow."""
from hpsearch.finetune.core import CandidateInputs, FineTuner, Fitted, load_fitted, release_memory
from hpsearch.finetune.loop import EpochRecord, TrainConfig, TrainResult
from hpsearch.finetune.modeling import Scope

__all__ = ["CandidateInputs", "EpochRecord", "FineTuner", "Fitted", "load_fitted", "Scope", "TrainConfig", "TrainResult", "release_memory"]
