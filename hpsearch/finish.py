"""After the search: the selection, what it means (per-model table, trivial baseline, bias-corrected
estimate), the final model, its one test evaluation, the export, MLflow's study run and the summary."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hpsearch.errors import HpsearchError
from hpsearch.numbers import amount_figure, difference_figure, interval_figure, score_figure
from hpsearch.selection import NEVER_TRIED, SPLIT_SE_ATTR, compared_by, counts_text, ended_state, is_repeat, score_text, spent, trained_complete, untried_warning
from hpsearch.spec import StudySpec
from hpsearch.tasks import get_task

if TYPE_CHECKING:
    from hpsearch.session import Session
    from hpsearch.selection import Evidence

FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")


def shown_state(trial: Any) -> str:
    """The trial's state as the summaries count it (see ``selection.TRIAL_STATES``)."""
    return "REPEAT" if is_repeat(trial) else ended_state(trial)


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """Completed trials as the plain rows that ``selection.cv_table`` takes."""
    return [
        {"trial": t.number, "model": t.user_attrs["model"], "params": t.user_attrs["params"],
         "fold_scores": t.user_attrs["fold_scores"], "best_epochs": t.user_attrs["best_epochs"],
         "total_parameters": t.user_attrs["total_parameters"], "train_seconds": t.user_attrs.get("train_seconds"),
         "latency_ms": t.user_attrs.get("objective_latency"), "train_samples": t.user_attrs.get("train_samples"),
         "device_seconds": t.user_attrs.get("device_seconds"), "flops": t.user_attrs.get("flops"),
         "peak_memory_mb": t.user_attrs.get("peak_memory_mb"), SPLIT_SE_ATTR: t.user_attrs.get(SPLIT_SE_ATTR)}
        for t in study.get_trials(deepcopy=False, states=None) if trained_complete(t)
    ]


def _nothing_completed(spec: StudySpec, study: Any) -> str:
    """Why there is no winner: each reason the study's trials ended with, and how to go on."""
    from hpsearch.binding import superseded
    from hpsearch.accounting import counted_trials

    old, trials = superseded(study), study.get_trials(deepcopy=False)
    ended: dict[str, list[int]] = {}
    for t in trials:  # interrupted trials run again, and those that failed under earlier settings do not count
        if t.state.name in FINISHED_STATES and t.number not in old and not t.user_attrs.get("interrupted"):
            ended.setdefault(str(t.user_attrs.get("failure_reason", t.state.name.lower())), []).append(t.number)
    running = sum(1 for t in trials if t.state.name == "RUNNING")
    lines = [f"no trial completed, so there is nothing to select or export{'; the trials ended so:' if ended else ''}"]
    lines += [f"  - {reason} (trial{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))})" for reason, numbers in ended.items()]
    if running:
        lines.append(f"{running} trial(s) still running: ask again once one has completed")
    elif ended and spec.search.n_trials is not None and counted_trials(study) >= spec.search.n_trials:
        lines.append("fix the cause, then raise search.n_trials to run more trials (failed ones count toward it) or start afresh "
                     "with --new-study")
    else:
        lines.append(f"{'fix the cause, then ' if ended else ''}run the study: 'hpsearch run' resumes it")
    return "\n".join(lines)


def select_from_study(spec: StudySpec, study: Any, evidence: Evidence | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The winner, its interval and the paired comparisons; and the CV table (not written anywhere). ``evidence``: how
    trials are told apart (default: their fold scores; see :func:`split_evidence` for one fixed validation split)."""
    from hpsearch import selection
    from hpsearch.cost import totals
    from hpsearch.tasks import metric_bounds

    rows = trial_rows(study)
    if not rows:
        raise HpsearchError(_nothing_completed(spec, study))
    evidence = evidence or selection.FoldEvidence(spec.selection.confidence, metric_bounds(spec.metric))
    table = selection.cv_table(rows, spec.direction)
    chosen = selection.select(table, spec.selection.rule, spec.direction, spec.selection.cost)
    interval = evidence.interval(chosen)
    trials = study.get_trials(deepcopy=False)
    report: dict[str, Any] = {
        "metric": spec.metric, "direction": spec.direction, "rule": spec.selection.rule,
        "selected": {k: chosen[k] for k in ("trial", "model", "params", "mean_score", "std_score", "best_epochs", "total_parameters")},
        "cv_interval": {"mean": chosen["mean_score"], "confidence": spec.selection.confidence,
                        **({"low": interval.low, "high": interval.high} if interval else {})},
        "paired_comparisons": selection.compare_top(table, chosen, evidence),
        "trials": selection.trial_counts([shown_state(t) for t in trials]),
        "considered_trials": sorted(row["trial"] for row in rows),
        "running_trials": sorted(t.number for t in trials if t.state.name == "RUNNING"),
    }
    costs = trial_costs(trials)
    report["study_cost"] = totals(costs)
    report["gives_up"] = selection.gives_up(table, chosen, spec.selection.cost)
    report["per_model"] = selection.per_model(table, costs, [m.name for m in spec.models], chosen, evidence, spec.direction)
    if spec.search.second_objective:
        report["pareto_front"] = [t.number for t in study.best_trials if not is_repeat(t)]
    return report, table


def trial_costs(trials: list[Any]) -> list[dict[str, Any]]:
    """What each finished trial was and cost: model, state, training samples, device-seconds, parameters, latency."""
    out = []
    for t in trials:
        if t.state.name not in FINISHED_STATES or "model" not in t.user_attrs:
            continue
        a, used = t.user_attrs, spent(t.state.name, t.user_attrs)
        out.append({"trial": t.number, "model": a["model"], "state": shown_state(t), "train_samples": int(used["train_samples"] or 0),
                    "device_seconds": float(used["device_seconds"] or 0.0),
                    "trainable_parameters": a.get("trainable_parameters"), "total_parameters": a.get("total_parameters"),
                    "latency_ms": a.get("objective_latency"), "flops": a.get("flops"), "peak_memory_mb": a.get("peak_memory_mb")})
    return out


def finish_study(session: Session, *, export: bool, target: Path | None = None, force: bool = False) -> int:
    """Selection, final model, one test evaluation, export, MLflow registration, summary."""
    from hpsearch.export import check_target, final_model, kept_export, write_export
    from hpsearch.selection import write_table
    from hpsearch.trackingdb import experiment_name

    spec, study, tuner, say = session.spec, session.study, session.tuner, session.say
    session.catch_up_tracking()
    tracker, parent = session.tracker, session.parent_run
    export = export and (spec.export.enabled or target is not None)
    target = target or spec.export_dir
    if export:
        check_target(target, force)  # before the refit, not after it
    evidence = split_evidence(spec, session)
    report, table = select_from_study(spec, study, evidence)
    csv_path, _ = write_table(table, spec.out_dir)
    chosen_trial = next(t for t in study.get_trials(deepcopy=False) if t.number == report["selected"]["trial"])
    length = tuner.max_length_of(spec.candidate(report["selected"]["model"]))  # the chosen model may take fewer than data.max_length
    task = tuner.data.task.cut_at(length)
    report.update(labels=list(tuner.data.label_map.labels), task_settings=task.export_settings(), max_length=length,
                  train_rows=len(tuner.data.train),
                  test_rows=len(tuner.data.splits["test"]) if "test" in tuner.data.splits else None, final_policy=spec.final_policy)
    report["baseline"] = compare_with_baseline(spec, session, next(r for r in table if r["trial"] == report["selected"]["trial"]), evidence)
    report["warnings"] = [report["baseline"]["warning"]] if report["baseline"].get("warning") else []
    if untried := [r["model"] for r in report["per_model"] if r["verdict"] == NEVER_TRIED]:
        report["warnings"].append(untried_warning(untried))
    report["bias_corrected"] = bias_corrected(spec, session, table)
    _measure_latency(spec, session, report["per_model"])
    if tracker.enabled:
        number = report["selected"]["trial"]
        report["mlflow"] = {"experiment": experiment_name(spec), "study_run": parent,
                            "trial_run": chosen_trial.user_attrs.get("mlflow_run_id") or tracker.trial_run(parent, number)}
    report["test_scores"] = None
    kept = kept_export(spec, target, report) if export else None
    if kept is not None:
        say(f"final model: {target} already holds trial {report['selected']['trial']}, exported by an earlier run from these same "
            "trials; kept as it is (delete the folder to train it again)", event="final_model_kept", trial=report["selected"]["trial"])
        report.update({key: kept[key] for key in ("final_policy", "test_scores", "registered_model") if key in kept}, export_dir=str(target))
    elif export or "test" in tuner.data.splits:  # else nothing would use the final model
        final, report["final_policy"] = final_model(spec, tuner, report["selected"], say)
        try:
            # In fp32, as pipeline() serves the export: the score users will see, whatever the training precision.
            if "test" in tuner.data.splits:
                say(f"final model: scoring it on the {report['test_rows']:,} test rows (once, in fp32 as it is served)",
                    event="test_scoring", rows=report["test_rows"])
                report["test_scores"] = tuner.score(final, "test", served=True)
            if export:
                write_export(spec, final, report, table, target, force, task)
                report["export_dir"] = str(target)
        finally:
            final.close()
    if export and tracker.enabled and not (report.get("registered_model") or {}).get("version"):  # a kept export registered before keeps its version
        if tracker.lost is None:  # else the call below does nothing
            say(f"MLflow: logging the exported model and registering it as a new version of {spec.name!r}", event="register_model")
        report["registered_model"] = {"name": spec.name, "version": tracker.log_model(parent, target, tuner.data.task.mlflow_pipeline, spec.name)}
    tracker.log_study_result(parent, *_study_figures(spec, report))
    selection_path = _write_selection(spec, report, tracker.lost)
    tracker.end_study(parent, "FINISHED", [csv_path, spec.out_dir / "cv_results.json", selection_path])
    if tracker.lost is not None and "stopped" not in report["mlflow"]:  # it stopped at that last call
        _write_selection(spec, report, tracker.lost)
    say_summary(spec, report, report["paired_comparisons"], csv_path, say)
    return 0


def _saving(traded: dict[str, Any]) -> str:
    """What a cheaper choice saves (see ``selection.gives_up``): its cost where that is lower, else (the same cost) its
    fewer epochs, by which the one-standard-error rule chose it then."""
    cost, chosen, best = traded["cost"], traded["chosen_cost"], traded["best_cost"]
    unit = {"latency": " ms per example", "train_time": " s"}.get(cost, "")
    shown = (lambda v: f"{v:,.0f}") if cost == "parameters" else (lambda v: f"{v:,.4g}")
    epochs = f"{traded.get('chosen_epochs')} epoch(s) of training instead of {traded.get('best_epochs')}"
    if chosen == best and traded.get("chosen_epochs") is not None:  # None for both costs where unknown (taken as infinite)
        return f"{epochs} (the same {cost}{f' {shown(chosen)}{unit}' if chosen is not None else ''})"
    return f"{cost} {shown(chosen)}{unit} instead of {shown(best)}{unit}" if None not in (chosen, best) else f"{cost} (not known)"


def _write_selection(spec: StudySpec, report: dict[str, Any], tracking_stopped: str | None) -> Path:
    """selection.json, with why MLflow tracking stopped where it did (the summary says it too)."""
    if tracking_stopped is not None:
        report["mlflow"]["stopped"] = tracking_stopped
    path = spec.out_dir / "selection.json"
    path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return path


def compare_with_baseline(spec: StudySpec, session: Session, winner: dict[str, Any], evidence: Evidence | None) -> dict[str, Any]:
    """The trivial baseline on the study's folds, and whether the winner (its CV-table row) clearly beats it (else a
    warning); on one fixed validation split, compared on its rows where ``evidence`` holds them."""
    from hpsearch.selection import scores_row, clearly_beats, fold_scores

    baseline = dict(session.baseline)
    on_rows = evidence.compare(winner, scores_row(baseline["fold_scores"])) if evidence else None
    beaten, comparison = clearly_beats(fold_scores(winner), baseline["fold_scores"], spec.selection.confidence, spec.direction, on_rows)
    baseline.update(clearly_beaten=beaten, comparison=comparison)
    if not beaten:
        baseline["warning"] = (
            f"the winner is not clearly better than predicting {baseline['predicts']} ({spec.metric} {score_figure(baseline['cv_mean'])} on the "
            f"same {'rows' if spec.one_split else 'folds'}): it may have learned nothing from the text. Likely causes: too few epochs, "
            f"a learning rate too high or too low for this model, too little training data, or a frozen scope that leaves too little to train; "
            f"widen the search (epochs, learning_rate, scope) or add data before trusting this model")
    return baseline


def _measure_latency(spec: StudySpec, session: Session, rows: list[dict[str, Any]]) -> None:
    """Inference latency of each candidate model that completed a trial, for the per-model table."""
    from hpsearch.search import candidate_latency

    for row in rows:
        if row.get("best_trial") is not None and row.get("latency_ms") is None:
            row["latency_ms"] = candidate_latency(session.study, session.tuner, spec.candidate(row["model"]), session.objective.eval_split,
                                               session.say)


def _estimation_input(spec: StudySpec, session: Session, considered: set[int], with_baseline: bool = False) -> tuple[list[Any], Any, Any, list[int]] | str:
    """What the bootstrap estimates take: the ``considered`` trials that recorded out-of-fold predictions on the study's
    split; each one's predictions of the rows every one of them predicted, or with ``gold`` None each row's ratio parts
    (see ``Task.ratio_parts``), the trivial baseline's last where asked; the gold; those rows. Or why there are none."""
    from hpsearch import estimate

    split, data = session.objective.eval_split, session.data
    trials = [t for t in session.study.get_trials(deepcopy=False) if t.number in considered and (t.user_attrs.get("oof") or {}).get("split") == split]
    if not trials:
        return "no completed trial recorded its out-of-fold predictions"
    kept = [t.user_attrs["oof"]["predictions"] for t in trials]
    predicted = [i for i in range(len(kept[0])) if all(i < len(p) and p[i] is not None for p in kept)]
    predictions = [[p[i] for i in predicted] for p in kept]
    if with_baseline:  # fitted on the training rows of the one split, as its score is
        predictions.append(data.task.baseline(data, session.folds[0][0], data.splits[split], predicted)[0])
    found = estimate.task_inputs(data.task, data.splits[split], data.label_map, spec.metric, predictions, predicted)
    if found is None:
        return f"not computed for the metric {spec.metric!r}"
    return trials, *found, predicted


def split_evidence(spec: StudySpec, session: Session) -> Evidence | None:
    """On one fixed validation split, the intervals and paired comparisons of the trials and the trivial baseline from
    a bootstrap over its rows (``selection.RowEvidence``); None with k folds, or where no predictions were recorded."""
    from hpsearch import estimate
    from hpsearch.selection import BASELINE, RowEvidence

    if not spec.one_split:
        return None
    found = _estimation_input(spec, session, {t.number for t in session.study.get_trials(deepcopy=False) if trained_complete(t)}, with_baseline=True)
    if isinstance(found, str):
        return None
    trials, matrix, gold, _ = found
    index = {**{t.number: i for i, t in enumerate(trials)}, BASELINE: len(trials)}
    known: dict[int | str, tuple[float, Any]] = {}

    def scores(key: int | str) -> tuple[float, Any] | None:  # only the trials compared, each once: same seed, same samples
        if key in index and key not in known:
            observed, resampled = estimate.paired_bootstrap(matrix[index[key]:index[key] + 1], gold, spec.metric,
                                                            classes=len(session.data.label_map), seed=spec.seed)
            known[key] = (float(observed[0]), resampled[0])
        return known.get(key)

    return RowEvidence(scores, spec.selection.confidence)


def bias_corrected(spec: StudySpec, session: Session, table: list[dict[str, Any]]) -> dict[str, Any]:
    """BBC-CV over the out-of-fold predictions of the trials in the CV ``table``, each bootstrap sample's pick made by
    the study's selection rule (see :mod:`hpsearch.estimate`)."""
    from hpsearch import estimate
    from hpsearch.selection import picker

    rows = {row["trial"]: row for row in table}
    found = _estimation_input(spec, session, set(rows))
    if isinstance(found, str):
        return {"skipped": found}
    trials, matrix, gold, predicted = found
    session.say(f"bias-corrected estimate: resampling {len(trials)} trial(s)' predictions of {len(predicted):,} rows "
                f"({estimate.BBC_SAMPLES} bootstrap samples)", event="estimating", trials=len(trials), rows=len(predicted))
    fold_of = {row: fold for fold, (_, validated) in enumerate(session.folds) for row in validated}
    result = estimate.bbc_cv(matrix, gold, spec.metric, spec.direction, folds=[fold_of[i] for i in predicted], classes=len(session.data.label_map),
                             confidence=spec.selection.confidence, seed=spec.seed,
                             pick=picker([rows[t.number] for t in trials], spec.selection.rule, spec.direction, spec.selection.cost))
    return {**result, "rule": spec.selection.rule}


def _study_figures(spec: StudySpec, report: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics and tags of the study run: the winner's CV score and interval, its test score, the trial counts."""
    ci, chosen = report["cv_interval"], report["selected"]
    metrics = {f"cv_{spec.metric}": ci["mean"], **{f"cv_{spec.metric}_{end}": ci[end] for end in ("low", "high") if end in ci},
               "cv_std": chosen["std_score"], "best_epochs": chosen["best_epochs"], "total_parameters": chosen["total_parameters"],
               **{f"trials_{state.lower()}": count for state, count in report["trials"].items()}}
    for name, value in (report.get("test_scores") or {}).items():
        metrics[f"test_{name}"] = value
    if report.get("test_scores") and report.get("test_rows"):
        metrics["test_rows"] = report["test_rows"]
    for key, value in (report.get("study_cost") or {}).items():
        metrics[f"study_{key}"] = value
    corrected = report.get("bias_corrected") or {}
    if "estimate" in corrected:
        metrics.update({f"bbc_{spec.metric}": corrected["estimate"], f"bbc_{spec.metric}_low": corrected["low"],
                        f"bbc_{spec.metric}_high": corrected["high"]})
    baseline = report.get("baseline") or {}
    if "cv_mean" in baseline:
        metrics[f"baseline_cv_{spec.metric}"] = baseline["cv_mean"]
    if "test" in baseline:
        metrics[f"baseline_test_{spec.metric}"] = baseline["test"]
    for row in report.get("per_model", []):
        if row.get("best_trial") is not None:
            metrics[f"model_{row['model']}_cv_{spec.metric}"] = row["mean_score"]
        if row.get("latency_ms") is not None:
            metrics[f"model_{row['model']}_latency_ms"] = row["latency_ms"]
        for key in ("train_samples", "device_seconds", "flops", "peak_memory_mb"):  # what the model's trials cost together
            if row.get(key) is not None:
                metrics[f"model_{row['model']}_{key}"] = row[key]
    tags = {"winner_trial": str(chosen["trial"]), "winner_model": chosen["model"], "metric": spec.metric,
            "beats_baseline": str(baseline.get("clearly_beaten", "unknown")).lower()}
    tags.update({f"model_{row['model']}_verdict": row["verdict"] for row in report.get("per_model", [])})
    return metrics, tags


def say_summary(spec: StudySpec, report: dict[str, Any], comparisons: list[dict[str, Any]], csv_path: Path, say: Callable[..., None]) -> None:
    from hpsearch.space import describe_params, shown_params

    chosen, ci = report["selected"], report["cv_interval"]
    lines = [
        "",
        f"winner ({report['rule']}): trial {chosen['trial']}, {chosen['model']}, "
        f"{describe_params({k: v for k, v in shown_params(spec, chosen['model'], chosen['params']).items() if k != 'epochs'})}, "
        f"{chosen['best_epochs']} epoch(s)",
        f"  {score_text(spec.metric, ci, chosen['std_score'], spec.one_split)}",
    ]
    lines += [f"  {sentence}" for _, sentence in findings(spec, report)]
    for c in comparisons:
        lines.append(f"  vs trial {c['other']} ({c['other_model']}): difference {difference_figure(c)}, p={c['p_value']:.3f}")
    lines += per_model_lines(spec, report.get("per_model", []))
    trials = report["trials"]
    lines.append(f"trials: {counts_text(trials)}")
    spent = report.get("study_cost")
    if spent:
        lines.append(f"cost: {spent['train_samples']:,} training samples, {amount_figure(spent['device_seconds'])} device-seconds, "
                     f"~{spent['flops']:.3g} FLOPs (estimated) over {spent['trials']} finished trial{'s' if spent['trials'] != 1 else ''}")
    lines.append(f"results: {spec.out_dir} (CV table {csv_path.name}, selection.json)")
    if "export_dir" in report:
        lines.append(f"model: {report['export_dir']} (serve it with transformers.{get_task(spec.task).load_call(str(report['export_dir']))})")
    lines.append(f"look: {csv_path} lists every completed trial, ranked; selection.json has the details")
    stopped = (report.get("mlflow") or {}).get("stopped")
    if stopped:
        lines.append(f"MLflow: tracking stopped during this run ({stopped}); run the same command again once it works, to log "
                     "the trial runs it is missing")
    elif spec.tracking.enabled:
        from hpsearch.trackingdb import ui_command

        lines.append(f"compare trials in MLflow: {ui_command(spec)}")
    lines += [f"WARNING: {w}" for w in report.get("warnings", [])]
    show = getattr(say, "result", None)
    if show is None:
        print("\n".join(lines), flush=True)
        return
    show("\n".join(lines), trial=chosen["trial"], model=chosen["model"], params=chosen["params"], best_epochs=chosen["best_epochs"],
         metric=spec.metric, cv_mean=ci["mean"], cv_low=ci.get("low"), cv_high=ci.get("high"), test_scores=report.get("test_scores"),
         export_dir=report.get("export_dir"), results=str(spec.out_dir), warnings=report.get("warnings", []))


def findings(spec: StudySpec, report: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, sentence) for what the result says beside the winner's CV score: its test score, what a cheaper
    choice gave up, the bias-corrected estimate and the trivial baseline. Worded once, for the summary, the
    report and the model card."""
    metric, out, scored = spec.metric, [], spec.scored_on
    test = report.get("test_scores")
    if test:
        rows = f"{report['test_rows']:,} " if report.get("test_rows") else ""
        out.append(("test", f"test {metric}: {score_figure(test[metric])} (the final model on the {rows}held-out rows, evaluated once)"))
    traded = report.get("gives_up")
    if traded:
        out.append(("gives-up", f"the {report['rule']} rule chose it over trial {traded['best_trial']} ({scored} {score_figure(traded['best_mean'])}): it scores "
                                f"{score_figure(abs(traded['score_given_up']))} {'higher' if spec.direction == 'minimize' else 'lower'} in {metric}, "
                                f"for {_saving(traded)}"))
    corrected = report.get("bias_corrected") or {}
    if "estimate" in corrected:
        many = corrected["configurations"] > 1
        out.append(("bbc", f"bias-corrected {metric} (BBC-CV over {corrected['configurations']} configuration{'s' if many else ''}, "
                           f"{corrected['samples']} bootstrap samples): {score_figure(corrected['estimate'])} "
                           f"{interval_figure(corrected['low'], corrected['high'])}; " + (f"the raw {scored} score of a winner picked from many trials is optimistic" if many
                                                           else "one configuration, so no choice among trials to correct for")))
    baseline = report.get("baseline")
    if baseline:
        on_test = f", test {score_figure(baseline['test'])}" if "test" in baseline else ""
        if baseline.get("comparison"):
            verdict = "clearly beaten by the winner" if baseline["clearly_beaten"] else "NOT clearly beaten by the winner"
        else:  # one fixed validation split without its rows' predictions: the two scores, with no interval to say 'clearly'
            verdict = f"{'' if baseline['clearly_beaten'] else 'NOT '}beaten by the winner (a plain difference, without an interval)"
        out.append(("baseline", f"trivial baseline (predicting {baseline['predicts']}): {scored} {metric} {score_figure(baseline['cv_mean'])}{on_test}; {verdict}"))
    return out


def per_model_lines(spec: StudySpec, rows: list[dict[str, Any]]) -> list[str]:
    """The per-model answer as text: CV score and interval, trials, compute, size, and the verdict."""
    if not rows:
        return []
    scored = "on the validation split" if spec.one_split else "CV"
    lines = [f"which model (best trial of each, {spec.metric} {scored} with interval; compared with the winner by {compared_by(spec.one_split)}):"]
    for r in rows:
        counts = r["trials"]
        spent = f"{counts_text(counts, '/')}, {r['train_samples']:,} samples, {amount_figure(r['device_seconds'])} device-s"
        if r.get("flops"):
            spent += f", ~{r['flops']:.2g} FLOPs"
        if r.get("peak_memory_mb") is not None:
            spent += f", peak {r['peak_memory_mb']:,.0f} MiB"
        if r["best_trial"] is None:
            lines.append(f"  {r['model']}: {r['verdict']} ({spent})")
            continue
        size = f"{r['trainable_parameters'] or 0:,}/{r['total_parameters'] or 0:,} params trained/total"
        if r.get("latency_ms") is not None:
            size += f", {amount_figure(r['latency_ms'])} ms/example"
        versus = ""
        if r.get("comparison"):
            c = r["comparison"]
            versus = f", winner minus it {difference_figure(c)} p={c['p_value']:.3f}"
        interval = f" {interval_figure(r['low'], r['high'])}" if "low" in r else ""
        lines.append(f"  {r['model']}: {score_figure(r['mean_score'])}{interval} (trial {r['best_trial']}) - {r['verdict']}{versus}; {spent}; {size}")
    return lines
