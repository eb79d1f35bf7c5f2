"""``hpsearch report``: one self-contained HTML file and the PNGs in it.

Optuna's visualisation module draws the optimization history, the parameter importances and the
Pareto front; matplotlib draws what Optuna has no plot for (fold scores per model, per-fold learning
curves). The selection table and the paired comparisons are the same numbers `run` reports.
"""
from __future__ import annotations

import base64
import html
import warnings
from pathlib import Path
from typing import Any, Callable

from hpsearch.numbers import amount_figure, difference_figure, interval_figure, score_figure
from hpsearch.selection import compared_by, counts_text, latency_measured, same_selection, score_text, trained_complete
from hpsearch.space import describe_params, shown_params
from hpsearch.spec import StudySpec


def write_report(spec: StudySpec, study: Any, out: Path) -> list[Path]:
    """Write report.html and its PNGs to ``out``; returns every file written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from hpsearch.finish import select_from_study

    out.mkdir(parents=True, exist_ok=True)
    report, table = select_from_study(spec, study)
    report.update(_final_figures(spec, report))
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    figures: list[tuple[str, str, Callable[[], Any]]] = [
        ("optimization_history", "Optimization history", lambda: _history(spec, study)),
        ("param_importances", _importances_title(complete), lambda: _importances(spec, study, complete)),
        ("fold_scores", f"Fold scores ({spec.metric}) per model", lambda: _fold_scores(spec, study)),
        ("learning_curves", "Validation curves per fold, top trials", lambda: _curves(spec, study, table)),
    ]
    if spec.search.second_objective:
        figures.append(("pareto_front", "Pareto front", lambda: _pareto(spec, study)))
    written, sections = [], []
    for name, title, draw in figures:
        path = out / f"{name}.png"
        note = _save(draw, path)
        if note is None:
            written.append(path)
            encoded = base64.b64encode(path.read_bytes()).decode()
            sections.append(f"<h2>{html.escape(title)}</h2>\n<img alt='{name}' src='data:image/png;base64,{encoded}'>")
        else:
            sections.append(f"<h2>{html.escape(title)}</h2>\n<p class='note'>{html.escape(note)}</p>")
    page = out / "report.html"
    page.write_text(_page(spec, report, table, sections, _progress(spec, study)), encoding="utf-8")
    return [page, *written]


def _progress(spec: StudySpec, study: Any) -> str | None:
    """What a report of a study that has not finished must say first: that its winner and figures are those so far.
    None where it has finished (every trial it is to run, or a time budget whose end the storage cannot tell)."""
    from hpsearch.accounting import counted_trials, search_over

    counted = counted_trials(study)
    running = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING")
    if running:
        return (f"The study is still running: {spec.search.done_text(counted)} finished, {running} running. The winner and the "
                "figures below are those so far; make the report again when it has finished.")
    if spec.search.n_trials is not None and search_over(spec, study, counted) is None:
        return (f"The study has not finished: {spec.search.done_text(counted)} finished, none running. The winner and the figures "
                "below are those so far; 'hpsearch run' on the study file resumes it.")
    return None


def _final_figures(spec: StudySpec, report: dict[str, Any]) -> dict[str, Any]:
    """Test score, baseline and warnings from the last ``run`` (selection.json), when it selected the same winner
    from the same trials: they need the data and the final model, which the report does not load."""
    import json

    path = spec.out_dir / "selection.json"
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text(encoding="utf-8"))
    if not same_selection(saved, report):
        return {"stale_note": "the study has changed since the last run selected its winner: run it (or 'hpsearch export') for the test score and baseline"}
    # On one fixed validation split the intervals and comparisons are a bootstrap over its rows, which needs them too.
    split_figures, copied = (("cv_interval", "paired_comparisons"), ("low", "high", "comparison", "verdict")) if spec.one_split else ((), ())
    figures = {k: saved[k] for k in ("test_scores", "test_rows", "baseline", "warnings", "bias_corrected", *split_figures) if k in saved}
    shown = {row["model"]: row for row in saved.get("per_model", [])}
    for row in report.get("per_model", []):
        mine = shown.get(row["model"], {})
        if row.get("latency_ms") is None:  # measured by run (it needs the model), not by the report
            row["latency_ms"] = mine.get("latency_ms")
        row.update({k: mine[k] for k in copied if k in mine})
    return figures


def _save(draw: Callable[[], Any], path: Path) -> str | None:
    """Draw and save one figure; a figure that cannot be drawn yet returns the reason instead."""
    import matplotlib.pyplot as plt

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            result = draw()
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        plt.close("all")
        return f"not drawn: {exc}"
    figure = result.get_figure() if hasattr(result, "get_figure") else result
    figure = getattr(figure, "figure", figure)
    figure.set_size_inches(8, 4.5)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close("all")
    return None


def _target(spec: StudySpec) -> dict[str, Any]:
    return {"target": (lambda t: t.values[0]), "target_name": spec.metric} if spec.search.second_objective else {"target_name": spec.metric}


def _history(spec: StudySpec, study: Any) -> Any:
    from matplotlib.ticker import MaxNLocator
    from optuna.visualization.matplotlib import plot_optimization_history

    axes = plot_optimization_history(study, **_target(spec))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers, not 0.25 steps
    return axes


ROUGH_BELOW = 10
"""Completed trials under which the parameter importances are said to be a rough guide: a forest fitted to a handful of
points ranks settings on noise."""


def _importances_title(complete: list[Any]) -> str:
    count = len(complete)
    rough = f"; with fewer than {ROUGH_BELOW}, a rough guide only" if count < ROUGH_BELOW else ""
    return f"Parameter importances (from {count} completed trial{'s' if count != 1 else ''}{rough})"


def _importances(spec: StudySpec, study: Any, complete: list[Any]) -> Any:
    from optuna.visualization.matplotlib import plot_param_importances

    if len(complete) < 2 or not any(len({str(t.params.get(k)) for t in complete}) > 1 for t0 in complete[:1] for k in t0.params):
        raise ValueError("needs at least two completed trials whose searched parameters differ")
    return plot_param_importances(study, **_target(spec))


def _pareto(spec: StudySpec, study: Any) -> Any:
    from optuna.visualization.matplotlib import plot_pareto_front

    second = {"latency": "latency (ms per example, as served)", "params": "parameters"}[str(spec.search.second_objective)]
    return plot_pareto_front(study, target_names=[spec.metric, second])


def _fold_scores(spec: StudySpec, study: Any) -> Any:
    import matplotlib.pyplot as plt

    by_model: dict[str, list[float]] = {}
    for t in study.get_trials(deepcopy=False):
        if trained_complete(t):
            by_model.setdefault(t.user_attrs["model"], []).extend(t.user_attrs["fold_scores"])
    if not by_model:
        raise ValueError("no completed trial yet")
    figure, axis = plt.subplots()
    names = sorted(by_model)
    axis.boxplot([by_model[n] for n in names])
    axis.set_xticks(range(1, len(names) + 1), names)
    for i, name in enumerate(names, start=1):
        axis.scatter([i] * len(by_model[name]), by_model[name], alpha=0.5, s=12)
    axis.set_ylabel(f"{spec.metric} per fold")
    return figure


def _curves(spec: StudySpec, study: Any, table: list[dict[str, Any]]) -> Any:
    import matplotlib.pyplot as plt

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    top = [trials[r["trial"]] for r in table[:3]]
    figure, axes = plt.subplots(1, len(top), squeeze=False, sharey=True)
    for axis, trial in zip(axes[0], top):
        for fold, curve in enumerate(trial.user_attrs.get("epoch_curves", []), start=1):
            axis.plot(range(1, len(curve) + 1), curve, marker="o", label=f"fold {fold}")
        axis.axvline(trial.user_attrs["best_epochs"], color="grey", linestyle=":", linewidth=1)
        axis.set_title(f"trial {trial.number} ({trial.user_attrs['model']})", fontsize=9)
        axis.set_xlabel("epoch")
    axes[0][0].set_ylabel(f"validation {spec.metric}")
    axes[0][0].legend(fontsize=7)
    return figure


def _answers(spec: StudySpec, report: dict[str, Any]) -> str:
    """Test score, baseline, warnings and the per-model table, as HTML."""
    from hpsearch.finish import findings

    parts = [f"<p id='{key}'>{html.escape(sentence[0].upper() + sentence[1:])}.</p>" for key, sentence in findings(spec, report)]
    for warning in report.get("warnings", []):
        parts.append(f"<p class='warning' style='color:#a00'>Warning: {html.escape(warning)}</p>")
    if report.get("stale_note"):
        parts.append(f"<p class='note'>{html.escape(report['stale_note'])}</p>")
    rows = report.get("per_model", [])
    if rows:
        scored = "validation score" if spec.one_split else "CV mean"
        head = "".join(f"<th>{h}</th>" for h in ("model", "best trial", scored, "interval", "verdict", "winner minus it", "p",
                                                  "trials", "training samples", "device-seconds", "FLOPs (est.)", "peak MiB", "trained / total params",
                                                  "ms / example"))
        body = ""
        for r in rows:
            c = r.get("comparison") or {}
            cells = [r["model"], r["best_trial"] if r["best_trial"] is not None else "—",
                     score_figure(r['mean_score']) if "mean_score" in r else "—",
                     interval_figure(r['low'], r['high']) if "low" in r else "—", r["verdict"],
                     difference_figure(c) if c else "—", f"{c['p_value']:.3f}" if c else "—",
                     counts_text(r["trials"], " / "), *_cost_cells(r),
                     f"{r.get('trainable_parameters') or 0:,} / {r.get('total_parameters') or 0:,}" if r["best_trial"] is not None else "—",
                     amount_figure(r['latency_ms']) if r.get("latency_ms") is not None else "—"]
            body += "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in cells) + "</tr>"
        parts.append(f"<h2>Which model? (best trial of each candidate)</h2>\n<table id='per-model'><tr>{head}</tr>{body}</table>")
    return "\n".join(parts)


def _cost_cells(row: dict[str, Any]) -> list[str]:
    """A trial's cost as the CV table records it ("—" where a trial from an older study has none)."""
    def shown(key: str, form: Callable[[Any], str]) -> str:
        return "—" if row.get(key) is None else form(row[key])

    return [shown("train_samples", "{:,}".format), shown("device_seconds", amount_figure), shown("flops", "{:.3g}".format),
            shown("peak_memory_mb", "{:,.0f}".format)]


def _page(spec: StudySpec, report: dict[str, Any], table: list[dict[str, Any]], sections: list[str], progress: str | None = None) -> str:
    chosen, ci = report["selected"], report["cv_interval"]
    splits = sorted({k for r in table for k in r if k.startswith("split")}, key=lambda k: int(k[5:-6]))
    latency = latency_measured(table)
    head = "".join(f"<th>{h}</th>" for h in ["rank", "trial", "model", "mean", "std", *splits, "best epoch", "training samples", "device-seconds",
                                              "FLOPs (est.)", "peak MiB", *(["ms / example"] if latency else []), "searched params"])
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in [
            r["rank"], r["trial"], r["model"], score_figure(r['mean_score']), score_figure(r['std_score']),
            *[score_figure(r[s]) for s in splits], r["best_epochs"], *_cost_cells(r),
            *([amount_figure(r['latency_ms']) if r.get("latency_ms") is not None else "—"] if latency else []),
            describe_params(shown_params(spec, r["model"], r["params"]))]) + "</tr>"
        for r in table)
    comparisons = "".join(
        f"<tr><td>{c['selected']} vs {c['other']} ({html.escape(c['other_model'])})</td><td>{score_figure(c['difference'], signed=True)}</td>"
        f"<td>{interval_figure(c['low'], c['high'], signed=True)}</td><td>{c['p_value']:.3f}</td></tr>" for c in report["paired_comparisons"])
    counts = report["trials"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hpsearch report: {html.escape(spec.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}} th{{background:#f3f3f3}} img{{max-width:100%}} .note{{color:#777}}</style></head>
<body>
<h1>Study {html.escape(spec.name)}</h1>
<p>{html.escape(spec.task)}; metric {html.escape(spec.metric)} ({spec.direction}); {html.escape(counts_text(counts))} trials.</p>
{f'<p id="progress"><strong>{html.escape(progress)}</strong></p>' if progress else ''}
<h2>Selection</h2>
<p id="winner">Winner{' so far' if progress else ''} ({html.escape(report['rule'])}): trial {chosen['trial']}, {html.escape(chosen['model'])}, {chosen['best_epochs']} epoch(s).
{html.escape(score_text(spec.metric, ci, chosen['std_score'], spec.one_split))}.</p>
{_answers(spec, report)}
<h2>All completed trials</h2>
<table id="selection-table"><tr>{head}</tr>{rows}</table>
<h2>Paired comparisons ({html.escape(compared_by(spec.one_split))})</h2>
{f'<table id="paired"><tr><th>trials</th><th>difference</th><th>interval</th><th>p</th></tr>{comparisons}</table>' if comparisons
   else '<p id="paired" class="note">none: no other completed trial to compare the winner with</p>'}
{chr(10).join(sections)}
</body></html>
"""
