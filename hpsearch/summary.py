"""Human-readable summary of a resolved study spec (``hpsearch validate``)."""
from __future__ import annotations

from hpsearch.space import LORA_SETTINGS
from hpsearch.spec import Candidate, CategoricalParam, FixedParam, FloatParam, IntParam, StudySpec, local_model_dir
from hpsearch.tasks import get_task
from hpsearch.workers import crowded


def describe_param(param: FloatParam | IntParam | CategoricalParam | FixedParam) -> str:
    if isinstance(param, FixedParam):
        return f"{param.value!r} (fixed)"
    if isinstance(param, CategoricalParam):
        return "one of " + ", ".join(map(repr, param.choices))
    scale = ", log" if param.log else ""
    return f"{param.type} in [{param.low:g}, {param.high:g}{scale}]"


def describe_spec(spec: StudySpec) -> str:
    lines = [f"study {spec.name!r}: {spec.task}, output in {spec.out_dir}"]
    data = spec.data
    for split in ("train", "validation", "test"):
        source = getattr(data, split)
        if source is not None:
            where = source.path if source.path is not None else f"hub:{source.hub} ({source.split})"
            lines.append(f"  data.{split}: {where}")
    if (folds := data.holdout_folds) is not None:
        lines.append(f"  data.test: one row in {folds} of the training data ({100 / folds:.0f} %), held out of the search "
                     "(data.holdout), cut as the CV folds are")
    elif data.test is None:
        lines.append("  data.test: none, so the winner is not scored on held-out data; add a test file (data.test) or keep "
                     "a share of the training rows out (data.holdout: 0.2)")
    lines.append(f"  max_length {data.max_length}; labels: {data.labels or 'from the training data'}")
    lines.append(f"candidates ({len(spec.models)}):")
    for m in spec.models:
        source = m.hub or m.path or f"{m.package}/{m.package_path}"
        layers = f", first {m.num_layers} layers" if m.num_layers else ""
        lines.append(f"  {m.name}: {source}{layers}{_cut_note(m, data.max_length)}")
        for name, param in sorted(m.space.items()):
            lines.append(f"    {name}: {describe_param(param)} (this candidate's own)")
    lines.append("search space (shared):")
    lora = any("lora" in spec.scopes_of(m) for m in spec.models)
    for name, param in spec.space.as_dict().items():
        if not lora and name in LORA_SETTINGS:
            continue
        owners = [m.name for m in spec.models if name in m.space]
        if len(owners) == len(spec.models):
            note = " - every candidate overrides it (see above)"
        elif owners:
            note = f" - overridden for {', '.join(owners)}"
        else:
            note = ""
        lines.append(f"  {name}: {describe_param(param)}{note}")
    if not lora:
        lines.append(f"  ({', '.join(LORA_SETTINGS)}: unused, as no candidate's scope can be 'lora')")
    if spec.data.validation is not None:
        lines.append("scoring: the fixed validation split")
    else:
        grouped = f"{spec.cv.group_column!r}" if spec.cv.group_column else get_task(spec.task).grouped_by
        group = f", grouped by {grouped}" if grouped else ""
        strat = "stratified" if spec.stratify and get_task(spec.task).stratifies else "not stratified"
        lines.append(f"scoring: {spec.cv.folds}-fold CV ({strat}{group}, seed {spec.cv_seed})")
    s = spec.search
    lines.append(
        f"search: {s.budget_text}, metric {spec.metric} ({spec.direction}), sampler {s.sampler.name} "
        f"(seed {spec.sampler_seed}), pruner {s.pruner.name}, {len(s.enqueue)} enqueued"
        + (f", timeout {s.timeout:g}s" if s.timeout and s.n_trials is not None else "")
    )
    lines += search_budget_lines(spec) + untried_odds_lines(spec) + space_size_lines(spec) + lora_rate_lines(spec)
    lines.append(f"storage: {redact(s.storage) if s.storage else 'embedded, in ' + str(spec.out_dir)}")
    ex = spec.execution
    threads = ex.threads or "cores shared by the workers on each machine"
    lines.append(f"execution: devices {ex.devices}, {ex.workers_per_device} worker(s) per device, precision {ex.precision}, CPU threads per worker: {threads}")
    if ex.devices == "cpu" and (crowd := crowded(ex.workers_per_device)):  # with 'auto', run says it where it finds no GPU
        lines.append(f"warning: {crowd}")
    t = spec.tracking
    tracking = (redact(t.uri) if t.uri else f"embedded, in {spec.out_dir}") if t.enabled else "off"
    lines.append(f"tracking: {tracking}" + (f", experiment {t.experiment or spec.name!r}" if t.enabled else ""))
    lines.append(
        f"selection: rule {spec.selection.rule}; export: {'to ' + str(spec.export_dir) if spec.export.enabled else 'off'}"
        f" (policy {spec.final_policy})"
    )
    if spec.export.enabled:
        from hpsearch.errors import HpsearchError
        from hpsearch.export import check_target

        try:
            check_target(spec.export_dir, force=False, run=True)
        except HpsearchError as exc:
            lines.append(f"warning: run would stop before its search: {exc}")
    return "\n".join(lines)


def _cut_note(model: Candidate, max_length: int) -> str:
    """Where a local candidate takes fewer tokens than data.max_length: what its inputs are cut at."""
    from hpsearch.architectures import input_length
    from hpsearch.spec._files import model_config

    folder = local_model_dir(model)
    length, cut_by = input_length(model_config(folder) if folder is not None else None, max_length)
    return f"; takes at most {length} tokens, so its inputs are cut there (data.max_length {max_length})" if cut_by else ""


def search_budget_lines(spec: StudySpec) -> list[str]:
    """How the budget splits between random start-up and guided trials, and a warning when nothing is left to guide."""
    from hpsearch.study import STARTUP_DEFAULTS

    s = spec.search
    if s.sampler.name not in STARTUP_DEFAULTS:
        return []
    startup = int(s.sampler.options.get("n_startup_trials", STARTUP_DEFAULTS[s.sampler.name]))
    enqueued = len(s.enqueue)
    among = f" (the {enqueued} enqueued setting(s) count among them)" if enqueued else ""
    if s.n_trials is None:
        return [f"  sampler budget: {startup} random start-up trial(s){among}, then guided by "
                f"{s.sampler.name} until the timeout ('hpsearch plan' estimates how many trials fit)"]
    guided = max(0, s.n_trials - max(startup, enqueued))
    first = min(startup, s.n_trials)
    lines = [f"  sampler budget: all {first} trial(s) fall in {s.sampler.name}'s random start-up of {startup}{among}, so none is guided by it"
             if first < startup else f"  sampler budget: {first} random start-up trial(s){among}, then {guided} guided by {s.sampler.name}"]
    from hpsearch.space import configurations

    every = configurations(spec)
    if guided < 2 and (every is None or len(every) > s.n_trials):  # where n_trials covers a finite space, every configuration is tried
        shorter = max(2, s.n_trials // 4)
        fix = (f"raise search.n_trials, or set search.sampler.options.n_startup_trials (e.g. {shorter}), or narrow the space"
               if s.n_trials - max(shorter, enqueued) >= 2 else "raise search.n_trials (this budget is too small for any sampler to learn from), or narrow the space")
        lines.append(f"warning: with n_trials {s.n_trials} the {s.sampler.name} sampler has {guided} trial(s) to learn from its start-up of "
                     f"{startup}: the study is close to a random search; {fix}")
    return lines


def untried_odds_lines(spec: StudySpec) -> list[str]:
    """A warning where the study's random draws of the candidate model may well leave a candidate untried (1 study in 20
    or more): its winner is then chosen without it. Candidates named in ``search.enqueue`` are tried first."""
    from math import comb

    from hpsearch.study import STARTUP_DEFAULTS

    s, names = spec.search, [m.name for m in spec.models]
    if len(names) < 2 or s.n_trials is None or s.sampler.name not in ("random", *STARTUP_DEFAULTS):
        return []
    enqueued = {e.get("model", names[0]) for e in s.enqueue}
    left = [n for n in names if n not in enqueued]
    random = s.n_trials if s.sampler.name == "random" else min(s.n_trials, int(s.sampler.options.get("n_startup_trials", STARTUP_DEFAULTS[s.sampler.name])))
    draws, m = max(random - len(s.enqueue), 0), len(names)
    # P(at least one of the candidates left is never drawn in `draws` uniform draws among m), by inclusion-exclusion.
    odds = sum((-1) ** (j + 1) * comb(len(left), j) * (1 - j / m) ** draws for j in range(1, len(left) + 1))
    if not left or odds < 0.05:
        return []
    after = "" if random >= s.n_trials else f", and the {s.n_trials - random} trial(s) {s.sampler.name} guides after them may not draw it either"
    if draws == 0:
        lead = f"the enqueued trials take all {random} random trial(s), so {', '.join(left)} {'is' if len(left) == 1 else 'are'} never drawn at random"
    else:
        which = f"{' or '.join(left)}" if len(left) <= 2 else f"one of {', '.join(left)}"
        lead = f"the study's {draws} random draw(s) of the model among {m} candidates leave {which} untried in about {odds:.0%} of studies"
    return [f"warning: {lead}{after}: its winner is then chosen without it; add a trial of each candidate to search.enqueue "
            "(enqueued trials run first) to try every one"]


def search_warnings(spec: StudySpec) -> list[str]:
    """The warnings ``validate`` gives about the search itself (a budget too small to guide, a candidate random draws may
    leave untried, LoRA under full fine-tuning's learning rate), for ``run`` to say as its trials start."""
    lines = search_budget_lines(spec) + untried_odds_lines(spec) + lora_rate_lines(spec)
    return [line.removeprefix("warning: ") for line in lines if line.startswith("warning: ")]


def lora_rate_lines(spec: StudySpec) -> list[str]:
    """A warning for each candidate that searches scope lora beside another scope under one learning_rate."""
    lines = []
    for model in spec.models:
        space = spec.space_for(model)
        scopes = spec.scopes_of(model)
        others = [s for s in scopes if s != "lora"]
        if "lora" in scopes and others:
            lines.append(f"warning: candidate {model.name} searches scope lora beside {', '.join(others)} with one learning_rate "
                         f"({describe_param(space['learning_rate'])}); LoRA adapters learn at learning rates several times those of "
                         "full fine-tuning, so its LoRA trials start at a loss: give LoRA a candidate entry of its own (scope: lora "
                         "and its own learning_rate in that entry's space), as studies/wnut.yaml does")
    return lines


def space_size_lines(spec: StudySpec) -> list[str]:
    """The number of configurations of a space without continuous parameters, and a note when n_trials is larger."""
    from hpsearch.space import configurations

    every = configurations(spec)
    if every is None:
        return []
    lines = [f"  search space: {len(every)} configuration(s); a trial that draws the settings of a completed one takes its score "
             "without training again and does not count toward n_trials"]
    if spec.search.n_trials is not None and spec.search.n_trials > len(every):
        lines.append(f"note: n_trials {spec.search.n_trials} is more than the {len(every)} configuration(s) of the space: the study ends "
                     "once every one has been tried")
    return lines


def describe_data(spec: StudySpec) -> list[str]:
    """The study's data as ``run`` reads it: rows per split, the labels' counts and the data's warnings. Raises the
    ``DataError`` that ``run`` would (a label the training data lacks, an empty target, a QA answer that is not at its
    start, ...). Data on the hub is not fetched: ``run`` checks it when it reads it."""
    import statistics
    import tempfile
    from collections import Counter
    from pathlib import Path

    from hpsearch.data import prepare_data

    sources = {split: getattr(spec.data, split) for split in ("train", "validation", "test")}
    hub = [f"data.{split}" for split, source in sources.items() if source is not None and source.hub is not None]
    if hub:
        return [f"data: not read ({', '.join(hub)} on the hub); run checks it when it reads it"]
    from hpsearch.session import make_folds

    with tempfile.TemporaryDirectory(prefix="hpsearch-validate-") as cache:  # validate writes nothing of its own
        data = prepare_data(spec, cache_dir=Path(cache))
    make_folds(spec, data)  # cut as run cuts them: more folds than rows (or than a class or the groups allow) is said here
    lines = ["data: " + ", ".join(f"{len(split):,} {name} rows" for name, split in data.splits.items()) + " (read and checked as run reads them)"]
    values = data.train.columns.get(data.task.target) if data.task.target is not None else None
    if values and data.task.has_label_list and all(isinstance(value, int) for value in values):  # one label per row
        counts = Counter(values)
        names = data.label_map.labels
        lines.append("  training labels: " + ", ".join(f"{names[i]} ({counts[i]:,})" for i in range(len(names))))
    elif values and not data.task.has_label_list and all(isinstance(value, float) for value in values):  # regression
        lines.append(f"  training targets: mean {statistics.fmean(values):.4g}, standard deviation {statistics.pstdev(values):.4g}, "
                     f"from {min(values):.4g} to {max(values):.4g}")
    return lines + [f"warning: {warning}" for warning in data.warnings]


def redact(url: str) -> str:
    """Hide the password of a URL such as postgresql://user:secret@host/db."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
