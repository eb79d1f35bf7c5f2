"""``hpsearch run``: search, cross-validated selection, final model, test score, export."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from hpsearch.errors import HpsearchError
from hpsearch.spec import StudySpec, load_spec

FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pick_device(spec: StudySpec) -> str:
    import torch

    devices = spec.execution.devices
    if devices == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{devices[0]}" if isinstance(devices, list) else "cuda:0"


def make_folds(spec: StudySpec, data: Any) -> tuple[list[tuple[list[int], list[int]]], str]:
    """The folds every trial uses, and the split they are scored on."""
    from hpsearch.data import cv_splits

    if "validation" in data.splits:
        return [(list(range(len(data.train))), list(range(len(data.splits["validation"]))))], "validation"
    labels = data.train.columns["label"] if spec.stratify and "label" in data.train.columns else None
    splits = cv_splits(len(data.train), spec.cv.folds, labels=labels, groups=data.groups, shuffle=spec.cv.shuffle, seed=spec.cv_seed)
    return [(train.tolist(), val.tolist()) for train, val in splits], "train"


def counted_trials(study: Any) -> int:
    """Trials that count towards n_trials: finished ones, except those cut short by an interrupt."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state.name in FINISHED_STATES and not t.user_attrs.get("interrupted"))


def requeue_interrupted(study: Any) -> int:
    """Run the configurations of interrupted trials again (once each)."""
    done = set(study.user_attrs.get("requeued", []))
    todo = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("interrupted") and t.number not in done]
    for trial in todo:
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
    if todo:
        study.set_user_attr("requeued", sorted(done | {t.number for t in todo}))
    return len(todo)


def run_study(study_path: Path, *, export: bool = True, say: Callable[[str], None] = _say) -> int:
    from hpsearch.data import prepare_data
    from hpsearch.finetune import FineTuner
    from hpsearch.search import Objective, open_study

    spec = load_spec(study_path)
    out = spec.out_dir
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(spec, cache_dir=out / "cache" / "datasets")
    data.label_map.save(out / "labels.json")
    folds, eval_split = make_folds(spec, data)
    device = pick_device(spec)
    tuner = FineTuner(data, cache_dir=out / "cache", max_length=spec.data.max_length, device=device,
                      precision=spec.execution.precision, metric=spec.metric, direction=spec.direction)
    study = open_study(spec)
    requeue_interrupted(study)
    remaining = spec.search.n_trials - counted_trials(study)
    say(f"study {spec.name!r}: {len(data.train)} training rows, {len(folds)} fold(s), {remaining} of {spec.search.n_trials} trials to run on {device}")
    objective = Objective(spec, tuner, folds, eval_split=eval_split, device=device, on_event=say, checkpoints=out / "checkpoints")
    if remaining > 0:
        from hpsearch.errors import TrialError

        try:
            study.optimize(_interruptible(objective), n_trials=remaining, timeout=spec.search.timeout, catch=(TrialError,))
        except KeyboardInterrupt:
            say(f"interrupted: {counted_trials(study)} of {spec.search.n_trials} trials finished; run the same command to resume")
            return 130
    return finish_study(spec, study, tuner, folds, export=export, say=say)


def _interruptible(objective: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def run(trial: Any) -> Any:
        try:
            return objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("failure_reason", "interrupted by the user")
            raise

    return run


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """Completed trials as the plain rows that ``selection.cv_table`` takes."""
    return [
        {"trial": t.number, "model": t.user_attrs["model"], "params": t.user_attrs["params"],
         "fold_scores": t.user_attrs["fold_scores"], "best_epochs": t.user_attrs["best_epochs"],
         "total_parameters": t.user_attrs["total_parameters"]}
        for t in study.get_trials(deepcopy=False, states=None) if t.state.name == "COMPLETE"
    ]


def finish_study(spec: StudySpec, study: Any, tuner: Any, folds: Any, *, export: bool, say: Callable[[str], None]) -> int:
    from hpsearch import selection

    rows = trial_rows(study)
    if not rows:
        reasons = sorted({t.user_attrs.get("failure_reason", t.state.name) for t in study.get_trials(deepcopy=False)})
        raise HpsearchError(f"no trial completed, so there is nothing to select. Reasons seen: {reasons}")
    table = selection.cv_table(rows, spec.direction)
    csv_path, _ = selection.write_table(table, spec.out_dir)
    chosen = selection.select(table, spec.selection.rule, spec.direction)
    scores = selection.fold_scores(chosen)
    interval = selection.corrected_interval(scores, spec.selection.confidence)
    comparisons = selection.compare_top(table, chosen, spec.selection.confidence)
    report: dict[str, Any] = {
        "metric": spec.metric, "direction": spec.direction, "rule": spec.selection.rule,
        "selected": {k: chosen[k] for k in ("trial", "model", "params", "mean_score", "std_score", "best_epochs", "total_parameters")},
        "cv_interval": {"mean": interval.mean, "low": interval.low, "high": interval.high, "confidence": interval.confidence},
        "paired_comparisons": comparisons,
        "trials": {state: sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == state) for state in FINISHED_STATES},
    }
    if spec.search.second_objective:
        report["pareto_front"] = [t.number for t in study.best_trials]
    final, test_scores = final_model(spec, tuner, chosen, folds, say)
    try:
        report["test_scores"] = test_scores
        report["final_policy"] = spec.export.policy
        if export and spec.export.enabled:
            final.save(spec.export_dir)
            report["export_dir"] = str(spec.export_dir)
    finally:
        final.close()
    (spec.out_dir / "selection.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    say_summary(spec, report, comparisons, csv_path, say)
    return 0


def final_model(spec: StudySpec, tuner: Any, chosen: dict[str, Any], folds: Any, say: Callable[[str], None]) -> tuple[Any, dict[str, float] | None]:
    """Refit on all training data for the chosen epoch count, or load the best fold's model; then test once."""
    from hpsearch.finetune import load_fitted

    candidate = spec.candidate(chosen["model"])
    folder = spec.out_dir / "checkpoints" / f"trial-{chosen['trial']}"
    if spec.export.policy == "best-fold" and (folder / "config.json").is_file():
        say(f"final model: best fold of trial {chosen['trial']} ({folder})")
        final = load_fitted(tuner, candidate, folder)
    else:
        started = time.perf_counter()
        say(f"final model: refit of trial {chosen['trial']} on all {len(tuner.data.train)} training rows for {chosen['best_epochs']} epoch(s)")
        params = {**chosen["params"], "epochs": chosen["best_epochs"]}
        final = tuner.fit(candidate, params, train_rows=list(range(len(tuner.data.train))), eval_rows=[], seed=spec.seed)
        say(f"refit took {time.perf_counter() - started:.0f}s")
    test_scores = tuner.score(final, "test") if "test" in tuner.data.splits else None
    return final, test_scores


def say_summary(spec: StudySpec, report: dict[str, Any], comparisons: list[dict[str, Any]], csv_path: Path, say: Callable[[str], None]) -> None:
    chosen, ci = report["selected"], report["cv_interval"]
    lines = [
        "",
        f"winner ({report['rule']}): trial {chosen['trial']}, {chosen['model']}, {_params(chosen['params'])}, {chosen['best_epochs']} epoch(s)",
        f"  CV {spec.metric}: {ci['mean']:.4f}  [{ci['low']:.4f}, {ci['high']:.4f}] {ci['confidence']:.0%} CI (corrected resampled t), std {chosen['std_score']:.4f}",
    ]
    if report.get("test_scores"):
        lines.append(f"  test {spec.metric}: {report['test_scores'][spec.metric]:.4f} (held-out, evaluated once)")
    for c in comparisons:
        lines.append(f"  vs trial {c['other']} ({c['other_model']}): difference {c['difference']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}], p={c['p_value']:.3f}")
    trials = report["trials"]
    lines.append(f"trials: {trials['COMPLETE']} complete, {trials['PRUNED']} pruned, {trials['FAIL']} failed")
    lines.append(f"results: {spec.out_dir} (CV table {csv_path.name}, selection.json)")
    if "export_dir" in report:
        lines.append(f"model: {report['export_dir']} (load it with transformers.pipeline(model=...))")
    lines.append(f"look: {csv_path} lists every completed trial, ranked; selection.json has the details")
    print("\n".join(lines), flush=True)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
                     if k in ("learning_rate", "batch_size", "scope", "weight_decay", "warmup_ratio"))
