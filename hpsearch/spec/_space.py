"""The search space: one entry per hyperparameter, each a float, int, categorical or fixed value."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from hpsearch.spec._base import SpecModel

Scalar = Union[bool, int, float, str]
SCOPE_PATTERN = re.compile(r"^(full|head|lora|freeze-\d+)$")
SCOPE_HELP = "one of 'full', 'head', 'lora' or 'freeze-K' (embeddings and the bottom K layers frozen)"


class FloatParam(SpecModel):
    """A float drawn between ``low`` and ``high`` (inclusive); ``log: true`` samples on a log scale."""

    type: Literal["float"]
    low: float = Field(description="Smallest value.")
    high: float = Field(description="Largest value.")
    log: bool = Field(False, description="Sample on a log scale (needs low > 0).")
    step: float | None = Field(None, description="Grid step; null for a continuous range.")

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.step is not None and (self.step <= 0 or self.log):
            raise ValueError(f"step must be > 0 and cannot be combined with log, but got step={self.step}, log={self.log}")
        return self

    def values_hint(self) -> tuple[float, float]:
        return (self.low, self.high)


class IntParam(SpecModel):
    """An integer drawn between ``low`` and ``high`` (inclusive)."""

    type: Literal["int"]
    low: int = Field(description="Smallest value.")
    high: int = Field(description="Largest value.")
    log: bool = Field(False, description="Sample on a log scale (needs low > 0).")
    step: int = Field(1, ge=1, description="Distance between neighbouring values.")

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        return self

    def values_hint(self) -> tuple[int, int]:
        return (self.low, self.high)


class CategoricalParam(SpecModel):
    """One of a list of choices (numbers, strings or booleans)."""

    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1, description="The values to choose from.")

    def values_hint(self) -> list[Scalar]:
        return list(self.choices)


class FixedParam(SpecModel):
    """A value that is not searched."""

    type: Literal["fixed"]
    value: Scalar = Field(description="The value used in every trial.")

    def values_hint(self) -> list[Scalar]:
        return [self.value]


def value_problem(name: str, param: Any, value: Any) -> str | None:
    """Why ``value`` (a ``search.enqueue`` entry's) is not one that ``param`` (the space's ``name``) can take; None when it is.

    Optuna would run a value outside a range (with a warning), fail the trial on a choice the list lacks, and silently
    use the space's value instead of one given for a fixed parameter: each is the user's mistake, said before anything runs.
    """
    if isinstance(param, FixedParam):
        return None if value == param.value else (f"{name} is fixed at {param.value!r} in the space, so {value!r} would be ignored; "
                                                   f"search {name} in the space, or remove it from the entry")
    if isinstance(param, CategoricalParam):
        return None if value in param.choices else f"{value!r} is not one of space.{name}'s choices {param.choices}; add it there or change the entry"
    if isinstance(param, (FloatParam, IntParam)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(param, IntParam) and value != int(value)):
            return f"{value!r} is not {'a whole number' if isinstance(param, IntParam) else 'a number'}; space.{name} is {param.type}"
        if not param.low <= value <= param.high:
            return f"{value!r} is outside space.{name} [{param.low:g}, {param.high:g}]; widen the range or change the entry"
    return None


def _check_range(low: float, high: float, log: bool) -> None:
    if low > high:
        raise ValueError(f"low must be <= high, but got low={low}, high={high}; swap them")
    if log and low <= 0:
        raise ValueError(f"a log-scale range needs low > 0, but got low={low}; raise low or set log: false")


def _shorthand(value: Any) -> Any:
    # `epochs: 3` fixes a value; `batch_size: [16, 32]` is a categorical choice.
    if isinstance(value, (bool, int, float, str)):
        return {"type": "fixed", "value": value}
    if isinstance(value, list):
        return {"type": "categorical", "choices": value}
    return value


Param = Annotated[
    Union[FloatParam, IntParam, CategoricalParam, FixedParam],
    Field(discriminator="type"),
    BeforeValidator(_shorthand),
]

ParamName = Literal[
    "learning_rate", "adam_epsilon", "epochs", "batch_size", "weight_decay", "warmup_ratio",
    "scope", "scheduler", "grad_accumulation", "max_grad_norm", "lora_r", "lora_alpha", "lora_dropout",
]


def _float(low: float, high: float, log: bool = False) -> FloatParam:
    return FloatParam(type="float", low=low, high=high, log=log)


def _fixed(value: Scalar) -> FixedParam:
    return FixedParam(type="fixed", value=value)


class SearchSpace(SpecModel):
    """Hyperparameters of the fine-tuning run. Each is a range, a list of choices or a fixed value."""

    learning_rate: Param = Field(_float(1e-5, 1e-4, log=True), description="AdamW peak learning rate.")
    adam_epsilon: Param = Field(_fixed(1e-8), description="AdamW epsilon.")
    epochs: Param = Field(
        IntParam(type="int", low=2, high=4), description="Maximum epochs; the best epoch is scored."
    )
    batch_size: Param = Field(CategoricalParam(type="categorical", choices=[16, 32]), description="Examples per step.")
    weight_decay: Param = Field(_float(0.0, 0.1), description="AdamW weight decay (not on bias and LayerNorm).")
    warmup_ratio: Param = Field(_float(0.0, 0.2), description="Share of steps with linear warm-up.")
    scope: Param = Field(_fixed("full"), description=f"What is trained: {SCOPE_HELP}.")
    scheduler: Param = Field(_fixed("linear"), description="Learning-rate decay after warm-up: linear or cosine.")
    grad_accumulation: Param = Field(_fixed(1), description="Batches accumulated per optimizer step.")
    max_grad_norm: Param = Field(_fixed(1.0), description="Gradient clipping norm; 0 turns clipping off.")
    lora_r: Param = Field(_fixed(8), description="LoRA rank (scope 'lora' only).")
    lora_alpha: Param = Field(_fixed(16), description="LoRA scaling alpha (scope 'lora' only).")
    lora_dropout: Param = Field(_fixed(0.1), description="LoRA dropout (scope 'lora' only).")

    @field_validator("*")
    @classmethod
    def _check_domain(cls, param: Any, info: ValidationInfo) -> Any:
        problem = check_domain(str(info.field_name), param)
        if problem:
            raise ValueError(problem)
        return param

    def as_dict(self) -> dict[str, FloatParam | IntParam | CategoricalParam | FixedParam]:
        return {name: getattr(self, name) for name in type(self).model_fields}


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _non_negative(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


_DOMAINS: dict[str, tuple[Any, str]] = {
    "learning_rate": (_positive, "a number > 0"),
    "adam_epsilon": (_positive, "a number > 0"),
    "epochs": (_positive_int, "an integer >= 1"),
    "batch_size": (_positive_int, "an integer >= 1"),
    "weight_decay": (_non_negative, "a number >= 0"),
    "warmup_ratio": (lambda v: _non_negative(v) and v < 1, "a number in [0, 1)"),
    "scope": (lambda v: isinstance(v, str) and bool(SCOPE_PATTERN.match(v)), SCOPE_HELP),
    "scheduler": (lambda v: v in ("linear", "cosine", "constant"), "'linear', 'cosine' or 'constant'"),
    "grad_accumulation": (_positive_int, "an integer >= 1"),
    "max_grad_norm": (_non_negative, "a number >= 0"),
    "lora_r": (_positive_int, "an integer >= 1"),
    "lora_alpha": (_positive, "a number > 0"),
    "lora_dropout": (lambda v: _non_negative(v) and v < 1, "a number in [0, 1)"),
}


def check_domain(name: str, param: FloatParam | IntParam | CategoricalParam | FixedParam) -> str | None:
    """Message if ``param`` can produce a value outside what ``name`` accepts, else None."""
    ok, expected = _DOMAINS[name]
    if ok is _positive_int and isinstance(param, FloatParam):
        return f"{name} must be an integer range (type: int), but got type: float"
    bad = [v for v in param.values_hint() if not ok(v)]
    if bad:
        return f"{name} must be {expected}, but got {', '.join(map(repr, bad))}"
    return None
