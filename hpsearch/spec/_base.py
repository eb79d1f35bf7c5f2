from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo


class SpecModel(BaseModel):
    """Base of every spec section: unknown keys rejected, values frozen after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    # Relative paths are relative to the folder of the YAML file, not the current folder,
    # so a study gives the same result wherever it is started from.
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return Path(value).resolve() if value.is_absolute() else value


ResolvedPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path; relative ones are resolved against the folder holding the study file."""


def _stay_inside(value: Any, info: ValidationInfo) -> Any:
    base = (info.context or {}).get("base_dir")
    if isinstance(value, str) and base is not None and not Path(value).expanduser().is_absolute():
        if not (Path(base) / value).resolve().is_relative_to(Path(base).resolve()):
            raise ValueError(f"{value!r} leaves the study's folder; write an absolute path if that is intended")
    return value


OutputPath = Annotated[Path, BeforeValidator(_stay_inside), AfterValidator(_resolve_path)]
"""Where hpsearch writes: a relative path may not climb out of the study's folder ('../..')."""


def short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
