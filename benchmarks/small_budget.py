"""Success at a small budget: the same wall-clock budget for hpsearch and the anchor, several sampler seeds.

The search (from issue reports): 600 Rotten Tomatoes rows, packaged all-MiniLM-L6-v2, full fine-tuning,
learning rate 1e-5 to 1e-4 (log), AdamW epsilon 1e-8 or 1e-6, batch 16 or 32, epochs 1 to 3, 3 folds,
macro-F1. With 6 trials, a low learning rate for few epochs leaves the model at the majority-class
plateau, so the draws decide whether a study finds anything.

For each seed: the anchor (`Trainer.hyperparameter_search` with the manual k-fold loop of
time_to_quality.py, TPE with that seed, 6 trials, final fit, test score) runs first; its wall time is
the budget. Then `hpsearch run` with the same seed, no trial count and `search.timeout` set so that its
whole run (start, search, selection, final fit, test) takes about the anchor's wall time, under the
successive-halving pruner (rungs: epoch 1 of fold 1, then each fold's end).

A study succeeds when its winner clearly beats the majority-class baseline on the same folds (the
paired interval of the difference above 0, as hpsearch reports it) and its CV score is within 0.02 of
the best CV score known on the same folds: the best of any trial of either side for that seed, or the
value given with `--best-known` (from earlier runs) when higher. Each seed cuts its own folds (the
study's `seed` seeds the folds too), and the same configuration scores a few hundredths apart on
different folds, so a bar taken over all seeds would compare partitions, not configurations.

With `--vary sampler`, only the samplers' seeds change from seed to seed: the study seed (folds,
training) stays 0 on both sides, so every seed shares the folds and one bar (the best of every trial of
the run, or `--best-known` when higher).

Run: `.venv/bin/python benchmarks/small_budget.py` (about 45 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import machine, quiet, run_study, save, study_text
from time_to_quality import STARTUP_S, anchor, space_text

MARGIN = 0.02
"""How close to the best known CV score a winner must be to count."""


def baseline_folds(spec) -> list[float]:  # noqa: ANN001
    from hpsearch.data import prepare_data
    from hpsearch.finetune.baseline import baseline_scores
    from hpsearch.session import make_folds

    data = prepare_data(spec)
    folds, split = make_folds(spec, data)
    return baseline_scores(data, folds, split, spec.metric)["fold_scores"]


def hpsearch_side(study: Path, timeout: float) -> dict:
    import optuna

    from hpsearch.storage import make_storage
    from hpsearch.spec import load_spec

    result = run_study(study)
    spec = load_spec(study)
    selection = json.loads((spec.out_dir / "selection.json").read_text())
    trials = optuna.load_study(study_name=spec.name, storage=make_storage(spec)).get_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    winner = next(t for t in done if t.number == selection["selected"]["trial"])
    return {**result, "timeout_s": timeout, "winner_folds": winner.user_attrs["fold_scores"],
            "clearly_beats_baseline": selection["baseline"]["clearly_beaten"], "baseline_cv": selection["baseline"]["cv_mean"],
            "configurations": len(trials), "complete": len(done), "all_cv": [t.user_attrs["cv_mean"] for t in done],
            "test_score": result["test_scores"][spec.metric]}


def anchor_side(folder: Path, seed: int, args: argparse.Namespace, space: str, clearly_beats, load_spec) -> dict:  # noqa: ANN001
    """`Trainer.hyperparameter_search` with the manual k-fold loop: its trials, wall and search time, winner, test score."""
    study = folder / f"anchor-{seed}" / "study.yaml"
    study.parent.mkdir()
    study.write_text(study_text("small-budget", args.rows, args.test_rows, space, 3, f"  n_trials: {args.trials}", metric="macro_f1",
                                **seeds(seed, args.vary, None)))
    spec = load_spec(study)
    print(f"seed {seed}: anchor, {args.trials} trials ...", flush=True)
    theirs = anchor(spec, args.trials, ["full"], [("minilm-l6", None)], [1e-8, 1e-6], lr=(1e-5, 1e-4))
    baseline = baseline_folds(spec)
    winner_folds = max(theirs["trials"], key=lambda t: t["cv"])["fold_scores"]
    theirs["clearly_beats_baseline"] = clearly_beats(winner_folds, baseline, 0.95, "maximize")[0]
    theirs["baseline_cv"] = sum(baseline) / len(baseline)
    print(f"  {theirs['wall_s']:.0f} s (search {theirs['search_s']:.0f} s), best CV {theirs['best_cv']:.4f}, test {theirs['test_score']:.4f}", flush=True)
    return theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--test-rows", type=int, default=400)
    parser.add_argument("--trials", type=int, default=6, help="the anchor's trial count")
    parser.add_argument("--pruner", default="successive-halving", help="hpsearch's pruner")
    parser.add_argument("--startup", type=int, help="hpsearch's TPE random start-up trials (default: Optuna's, 10)")
    parser.add_argument("--vary", choices=["all", "sampler"], default="all",
                        help="what each seed seeds: everything (folds, sampler, training), or only the samplers, the study seed "
                             "staying 0")
    parser.add_argument("--best-known", type=float, nargs="+",
                        help="per seed: the best CV macro-F1 known on that seed's folds from earlier runs (the bar is the higher "
                             "of it and this run's best); with --vary sampler, one value for the shared folds")
    parser.add_argument("--anchor-search-s", type=float, nargs="+",
                        help="hpsearch side only: the anchor's search seconds per seed, from an earlier run of this script on "
                             "the same machine (it prints them); the timeouts are derived as in a full run")
    args = parser.parse_args()
    if args.anchor_search_s and len(args.anchor_search_s) != len(args.seeds):
        parser.error(f"--anchor-search-s needs one value per seed: {len(args.seeds)} seed(s), {len(args.anchor_search_s)} value(s)")
    wanted = 1 if args.vary == "sampler" else len(args.seeds)
    if args.best_known and len(args.best_known) != wanted:
        parser.error(f"--best-known needs {wanted} value(s) ({'one for the shared folds' if wanted == 1 else 'one per seed'}), "
                     f"got {len(args.best_known)}")
    quiet()
    from hpsearch.selection import clearly_beats
    from hpsearch.spec import load_spec

    space = space_text(["full"], [1e-8, 1e-6], lr=(1e-5, 1e-4))
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            if args.anchor_search_s:
                theirs, search_s = None, args.anchor_search_s[args.seeds.index(seed)]
            else:
                theirs = anchor_side(Path(folder), seed, args, space, clearly_beats, load_spec)
                search_s = theirs["search_s"]
            print(f"seed {seed}: anchor search {search_s:.0f} s", flush=True)
            timeout = max(search_s - STARTUP_S, 30.0)
            mine_study = Path(folder) / f"hpsearch-{seed}" / "study.yaml"
            mine_study.parent.mkdir()
            search = f"  n_trials: null\n  timeout: {timeout:.0f}\n  pruner: {{name: {args.pruner}}}"
            mine_study.write_text(study_text("small-budget", args.rows, args.test_rows, space, 3, search, metric="macro_f1",
                                             **seeds(seed, args.vary, args.startup)))
            print(f"seed {seed}: hpsearch, timeout {timeout:.0f} s ...", flush=True)
            mine = hpsearch_side(mine_study, timeout)
            print(f"  {mine['wall_s']:.0f} s, {mine['configurations']} configurations ({mine['complete']} complete), best CV "
                  f"{mine['best_cv']:.4f}, test {mine['test_score']:.4f}", flush=True)
            runs.append({"seed": seed, "anchor": theirs, "hpsearch": mine})
    tally = score_runs(runs, args.best_known, shared_folds=args.vary == "sampler")
    path = save("small_budget", {"machine": machine(), "settings": vars(args), "runs": runs, "successes": tally})
    print(f"\nsuccess: clearly above the baseline and within {MARGIN} of the best CV macro-F1 known on the seed's folds\n")
    print("| seed | side | wall time | configurations (complete) | winner CV | best known on these folds | test macro-F1 | beats baseline | success |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        for side, result in (("anchor", r["anchor"]), ("hpsearch", r["hpsearch"])):
            if result is None:
                continue
            count = f"{args.trials} ({args.trials})" if side == "anchor" else f"{result['configurations']} ({result['complete']})"
            print(f"| {r['seed']} | {side} | {result['wall_s']:.0f} s | {count} | {result['best_cv']:.4f} | {r['best_known_cv']:.4f} | "
                  f"{result['test_score']:.4f} | {'yes' if result['clearly_beats_baseline'] else 'no'} | {'yes' if result['success'] else 'no'} |")
    print(f"\nsuccesses: hpsearch {tally['hpsearch']} of {len(runs)}, anchor {tally['anchor']} of {len(runs)}")
    print(f"written to {path}")


def seeds(seed: int, vary: str, startup: int | None) -> dict[str, object]:
    """study_text's seed and sampler for one seed of the run: ``vary`` 'all' seeds the whole study with it, 'sampler'
    only the sampler (the study seed, hence folds and training, stays 0)."""
    options = f", options: {{n_startup_trials: {startup}}}" if startup else ""
    if vary == "sampler":
        return {"seed": 0, "sampler": f"{{name: tpe, seed: {seed}{options}}}"}
    return {"seed": seed, "sampler": f"{{name: tpe{options}}}"}


def score_runs(runs: list[dict], best_known: list[float] | None, shared_folds: bool = False) -> dict[str, int]:
    """Mark each side's success against the best CV known on its seed's folds (this run's trials of both sides, or
    ``best_known`` of that seed when higher); with ``shared_folds`` every seed has the same folds, so one bar: the best
    of every run's trials, or ``best_known[0]``. Returns the successes per side."""
    def seen(r: dict) -> list[float]:
        return list(r["hpsearch"]["all_cv"]) + ([t["cv"] for t in r["anchor"]["trials"]] if r["anchor"] else [])

    pooled = [cv for r in runs for cv in seen(r)]
    for i, r in enumerate(runs):
        if shared_folds:
            r["best_known_cv"] = max(pooled + (best_known[:1] if best_known else []))
        else:
            r["best_known_cv"] = max(seen(r) + ([best_known[i]] if best_known else []))
        for side in ("anchor", "hpsearch"):
            if r[side] is not None:
                r[side]["success"] = bool(r[side]["clearly_beats_baseline"] and r[side]["best_cv"] >= r["best_known_cv"] - MARGIN)
    return {side: sum(bool(r[side] and r[side]["success"]) for r in runs) for side in ("anchor", "hpsearch")}


if __name__ == "__main__":
    main()
