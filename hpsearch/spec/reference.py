"""Markdown reference of every study setting, generated from the spec models' field descriptions.

``python -m hpsearch.spec.reference > docs/study-reference.md``
"""
from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from hpsearch.spec._models import StudySpec
from hpsearch.spec._space import SearchSpace


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        dumped = value.model_dump(exclude_defaults=False)
        return "`" + ", ".join(f"{k}: {v}" for k, v in dumped.items() if v is not None) + "`" if "type" in dumped else "see below"
    return f"`{value!r}`" if value not in ({}, []) else f"`{value}`"


def _sections(model: type[BaseModel], prefix: str, out: list[tuple[str, type[BaseModel]]]) -> None:
    out.append((prefix, model))
    for name, field in model.model_fields.items():
        for candidate in (field.annotation, *get_args(field.annotation), *[a for arg in get_args(field.annotation) for a in get_args(arg)]):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate is not SearchSpace and (name, candidate) != ("space", SearchSpace):
                if not any(m is candidate for _, m in out):
                    _sections(candidate, f"{prefix}.{name}" if prefix else name, out)


def reference() -> str:
    sections: list[tuple[str, type[BaseModel]]] = []
    _sections(StudySpec, "", sections)
    sections.append(("space", SearchSpace))
    lines = ["# Study file reference", "", "Generated from the code (`python -m hpsearch.spec.reference`). Unknown keys are errors.", ""]
    for prefix, model in sections:
        title = prefix or "top level"
        lines += [f"## `{title}`", "", (model.__doc__ or "").strip().split("\n")[0], "", "| key | default | meaning |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            lines.append(f"| `{name}` | {_default(field)} | {field.description or ''} |")
        lines.append("")
    lines += [
        "## Search-space entries",
        "",
        "Each entry of `space` (and of a candidate's `space` overrides) is one of:",
        "",
        "- a range: `{type: float, low: 1.0e-5, high: 1.0e-4, log: true}` or `{type: int, low: 2, high: 4}` (optional `step`);",
        "- a list of choices: `[16, 32]` (same as `{type: categorical, choices: [16, 32]}`);",
        "- a fixed value: `3` (same as `{type: fixed, value: 3}`).",
        "",
        "Numbers are read as YAML 1.2 reads them: `2e-5`, `1e-8` and `3E-4` are numbers, with or without a dot.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference())
