"""Reading a study file: safe YAML, every problem reported at once with its file:line."""
from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from hpsearch.errors import SpecError
from hpsearch.spec._base import short_repr
from hpsearch.spec._models import Candidate, StudySpec

_FIXES = {
    "missing": "add it",
    "int_parsing": "write a whole number",
    "int_from_float": "write a whole number",
    "float_parsing": "write a number",
    "bool_parsing": "write true or false",
    "literal_error": "use one of the values listed",
    "string_type": "write a string",
    "list_type": "write a list",
    "dict_type": "write a mapping (key: value)",
    "model_type": "write a mapping (key: value)",
    "greater_than_equal": "raise the value",
    "greater_than": "raise the value",
    "less_than_equal": "lower the value",
    "less_than": "lower the value",
    "too_short": "add at least one entry",
    "string_pattern_mismatch": "use letters, digits, '.', '_' and '-' only",
    "union_tag_invalid": "set type to one of float, int, categorical, fixed",
}


def load_spec(path: str | Path) -> StudySpec:
    """Read, validate and resolve a study file. Raises :class:`SpecError` listing every problem."""
    path = Path(path).expanduser().resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"study file not found: {path}; check the path"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"cannot read study file {path}: {exc}"]) from None
    return load_spec_text(text, base_dir=path.parent, source=str(path))


def load_spec_text(text: str, base_dir: Path, source: str = "<string>") -> StudySpec:
    """Validate study YAML given as text; relative paths resolve against ``base_dir``."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}: " if mark is not None else f"{source}: "
        raise SpecError([f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"], source) from None
    if not isinstance(data, dict):
        raise SpecError([f"{source}: the study file must be a mapping of settings, got {type(data).__name__}"], source)
    data.setdefault("output_dir", f"runs/{data.get('name', 'study')}")
    try:
        spec = StudySpec.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = [_describe(err, root, source) for err in exc.errors()]
        raise SpecError(problems, source) from None
    problems = _check_resources(spec)
    if problems:
        raise SpecError(problems, source)
    return spec


def _describe(err: Any, root: yaml.Node | None, source: str) -> str:
    loc = tuple(err["loc"])
    node = _node_at(root, loc)
    line = f"{source}:{node.start_mark.line + 1}" if node is not None else source
    field = _dotted(loc) or "(top level)"
    kind = err["type"]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{line}: {field}: unknown key; {hint}allowed keys: {', '.join(allowed)}"
    if kind == "value_error":
        return f"{line}: {field}: {msg}"
    fix = _FIXES.get(kind)
    given = "" if kind == "missing" else f", got {short_repr(err.get('input'))}"
    return f"{line}: {field}: {msg}{given}" + (f"; {fix}" if fix else "")


def _dotted(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("float", "int", "categorical", "fixed") or str(item).startswith(("function-", "tagged-union")):
            continue  # names of union members, not keys the user wrote
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _node_at(root: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """Deepest YAML node along ``loc`` (pydantic's error path), for the line number."""
    node = root
    for item in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == item), None)
            if match is None:
                key = next((k for k, _ in node.value if k.value == str(item)), None)
                if key is not None:
                    return key
                continue  # a union tag or a missing key: stay on the parent
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(item, int) and item < len(node.value):
            node = node.value[item]
    return node


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the spec section at ``loc``, for 'did you mean' hints."""
    cls: Any = StudySpec
    for item in loc:
        cls = _step(cls, item)
        if cls is None:
            return []
    model = _first_model(cls)
    return list(model.model_fields) if model else []


def _step(cls: Any, item: Any) -> Any:
    model = _first_model(cls, tag=item)
    if model is not None and item in model.model_fields:
        return model.model_fields[item].annotation
    if model is not None and isinstance(item, str) and item in ("float", "int", "categorical", "fixed"):
        return model
    origin, args = get_origin(cls), get_args(cls)
    if origin is list and isinstance(item, int):
        return args[0]
    if origin is dict:
        return args[1]
    return cls if model is not None else None


def _first_model(cls: Any, tag: Any = None) -> type[BaseModel] | None:
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return cls
    members = [a for a in get_args(cls) if isinstance(a, type) and issubclass(a, BaseModel)]
    for member in members:  # a discriminated union: pick the member the tag names
        type_field = member.model_fields.get("type")
        if type_field is not None and tag in get_args(type_field.annotation):
            return member
    for arg in get_args(cls):
        found = _first_model(arg) if get_origin(arg) is not None else None
        if found:
            return found
    return members[0] if members else None


def _check_resources(spec: StudySpec) -> list[str]:
    """Files, folders and packages the spec points at must exist before any training starts."""
    problems = []
    for split in ("train", "validation", "test"):
        source = getattr(spec.data, split)
        if source is not None and source.path is not None and not source.path.exists():
            problems.append(f"data.{split}.path: file not found: {source.path}; check the path (relative paths start at the study file's folder)")
    for i, model in enumerate(spec.models):
        if model.path is not None and not (model.path / "config.json").is_file():
            problems.append(f"models[{i}].path: no config.json in {model.path}; point it at a folder written by save_pretrained")
        if model.package is not None:
            folder = package_model_dir(model)
            if folder is None:
                problems.append(f"models[{i}].package: package {model.package!r} is not installed; pip install it")
            elif not (folder / "config.json").is_file():
                problems.append(f"models[{i}].package_path: no config.json in {folder}; set package_path to the model folder inside the package")
    return problems


def package_model_dir(model: Candidate) -> Path | None:
    """Folder of a model shipped inside an installed package (found without importing it)."""
    assert model.package is not None
    try:
        found = importlib.util.find_spec(model.package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / model.package_path
