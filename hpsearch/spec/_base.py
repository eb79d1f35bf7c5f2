from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo


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


def short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
