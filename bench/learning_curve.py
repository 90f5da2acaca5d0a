"""Learning curves of simulated active learning (``make bench``): grouped CV macro-F1 against labelled sentences.

For each outer fold k of 5-fold grouped CV on the real sentences (the folds of ``tagger cv``: articles,
``doc_id``, never split), the pool is the other folds' sentences with their labels hidden. A seeded random
start of ``--start`` sentences is labelled; then, round by round, the shipped ``tfidf_logreg`` config
(``configs/<task>/tfidf_logreg.yaml``, params validated by ``train.config``) is fitted on what is labelled
and the next batch is chosen from the rest of the pool by the strategy code of ``tagger select``
(``train.selection.strategies.choose`` on ``classifier_uncertainty``, at most ``--per-article`` sentences
of one article per batch, sentences already labelled excluded by text as ``--exclude`` does). At each
checkpoint size the model is scored on fold k. Decisions are plain (thresholds 0.5, arg-max): the
project's decision tuning needs held-out scores, a second fit per round that the bench cannot afford.

The JSON keeps every point (task, strategy, seed, size, the fold scores and their mean), the mean and
std over seeds, and the issue's goal: the fewest labels at which uncertainty's CV reaches random's at
1,600 (log-linear interpolation between checkpoints). ``--plot`` draws the curves; ``--quick`` is a
smoke run on a few hundred sentences.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import cache
from pathlib import Path

# one BLAS thread per process: L-BFGS's vector operations on a busy 2-core machine were 10-30x slower with two
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STRATEGIES = ("uncertainty", "mixed", "random")
GOAL_REFERENCE = 1600  # random's CV at this many labels ...
GOAL_LABELS = 1000  # ... reached by uncertainty with at most this many (issue 21)


@cache
def task_data(task: str, data_path: str, limit_rows: int | None, folds: int):
    """The validated config, the labelled sentences (optionally the first articles up to ``limit_rows``),
    their encoded labels and the folds of ``tagger cv``."""
    from train.config import load_config
    from train.data.folds import grouped_stratified_folds
    from train.data.loading import load_for
    from train.registry import build_model

    config = load_config(ROOT / f"configs/{task}/tfidf_logreg.yaml", [f"data.train={data_path}"])
    data = load_for(config)
    if limit_rows:
        groups = data.frame["group"].to_numpy()
        keep = [g for g in dict.fromkeys(groups)]
        sizes = data.frame.groupby("group", sort=False).size()
        kept = set(keep[: int(np.searchsorted(np.cumsum(sizes[keep].to_numpy()), limit_rows)) + 1])
        data = data.subset(np.flatnonzero([g in kept for g in groups]))
    model = build_model(config.model.family, config.task.type, config.task.labels, config.model.params, config.seed)
    Y = model.encode(data.labels)
    onehot = Y if model.multilabel else np.eye(len(config.task.labels), dtype=int)[Y]
    # the folds of tagger cv (train.training.cv.fold_assignments, first repeat), without importing MLflow
    fold_ids = grouped_stratified_folds(onehot, data.frame["group"].to_numpy(), folds, config.split.seed)
    return config, data, Y, fold_ids


def checkpoint_scores(config, model, data, Y, rows) -> dict[str, float]:
    """Macro-F1 (and F_avg for stance) of ``model`` on ``rows`` with its plain decision."""
    from train.evaluation.metrics import multiclass_metrics, multilabel_metrics

    proba = model.predict_proba(data.inputs.iloc[rows])
    labels = config.task.labels
    if model.multilabel:
        metrics = multilabel_metrics(Y[rows], (proba >= model.thresholds_).astype(int), labels)
    else:
        metrics = multiclass_metrics(Y[rows], proba.argmax(axis=1), labels)
    return {k: round(metrics[k], 4) for k in ("f1_macro", "f_avg") if k in metrics}


def batch_size(labelled: int, args) -> int:
    return args.large_batch if labelled >= args.large_from else args.batch


def start_set(Y, pool, texts, groups, args, seed: int, multilabel: bool) -> list[int]:
    """A seeded random start (``tagger select --strategy random``); a stance start missing a class is
    drawn again with the next seed, as ``tagger train`` refuses such training data."""
    from train.selection.strategies import choose

    zeros = np.zeros(len(pool))
    for attempt in range(100):
        picks = [i for i, _ in choose("random", args.start, zeros, texts, groups, args.per_article, seed + attempt)]
        if multilabel or len(set(Y[pool[picks]].tolist())) == Y.max() + 1:
            return picks
    raise SystemExit(f"no start set of {args.start} holds every class")


def run_unit(task: str, fold: int, seed: int, strategy: str, args) -> dict:
    """One simulated active-learning run: the scores of fold ``fold`` at each checkpoint size."""
    import warnings

    from train.registry import build_model
    from train.selection.select import classifier_uncertainty, text_key
    from train.selection.strategies import choose

    warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
    config, data, Y, fold_ids = task_data(task, args.data, args.limit_rows, args.folds)
    held = np.flatnonzero(fold_ids == fold)
    pool = np.flatnonzero(fold_ids != fold)
    all_texts, all_labels = data.texts, data.labels
    texts = [all_texts[i] for i in pool]
    keys = [text_key(t) for t in texts]
    groups = data.frame["group"].to_numpy()[pool].tolist()
    X = data.inputs
    sizes = [s for s in args.sizes if s <= len(pool)]
    labelled = start_set(Y, pool, texts, groups, args, seed, config.task.type == "multilabel")
    scores, fits, start, rounds = [], 0, time.perf_counter(), 0
    model = None
    while True:
        size = len(labelled)
        at_checkpoint = size in sizes
        if at_checkpoint or strategy != "random":
            model = build_model(
                config.model.family, config.task.type, config.task.labels, config.model.params, config.seed
            )
            rows = pool[labelled]
            model.fit(X.iloc[rows], [all_labels[i] for i in rows])
            fits += 1
        if at_checkpoint:
            scores.append({"size": size, **checkpoint_scores(config, model, data, Y, held)})
        if size >= sizes[-1]:
            break
        following = min(s for s in sizes if s > size)
        n = min(batch_size(size, args), following - size)
        taken = {keys[i] for i in labelled}
        rest = np.array([i for i in range(len(pool)) if keys[i] not in taken])
        if strategy == "random":
            uncertainty = np.zeros(len(rest))
        else:
            uncertainty = classifier_uncertainty(model, model.predict_proba(X.iloc[pool[rest]]))
        rounds += 1
        picks = choose(
            strategy,
            n,
            uncertainty,
            [texts[i] for i in rest],
            [groups[i] for i in rest],
            args.per_article,
            seed * 1000 + rounds,
        )
        if not picks:
            break
        labelled += [int(rest[i]) for i, _ in picks]
    seconds = time.perf_counter() - start
    return {"task": task, "fold": fold, "seed": seed, "strategy": strategy, "scores": scores, "fits": fits,
            "seconds": round(seconds, 1)}


def log_interpolate(sizes: list[int], values: list[float], reference: float) -> float | None:
    """The smallest size (log-linear between checkpoints) at which ``values`` first reach ``reference``."""
    for i, (size, value) in enumerate(zip(sizes, values, strict=True)):
        if value >= reference:
            if i == 0:
                return float(size)
            low, high = values[i - 1], value
            fraction = (reference - low) / (high - low)
            return round(math.exp(math.log(sizes[i - 1]) + fraction * (math.log(size) - math.log(sizes[i - 1]))), 0)
    return None


def summarize(units: list[dict], sizes: list[int], folds: int) -> tuple[list[dict], dict]:
    """Per (task, strategy, seed, size): the fold scores and their mean; per (task, strategy, size): mean and
    std over seeds; and the goal check per task."""
    points, curves = [], {}
    keys = sorted({(u["task"], u["strategy"], u["seed"]) for u in units})
    for task, strategy, seed in keys:
        runs = sorted((u for u in units if (u["task"], u["strategy"], u["seed"]) == (task, strategy, seed)),
                      key=lambda u: u["fold"])
        if len(runs) < folds:
            continue
        for size in sizes:
            at = [next((s for s in r["scores"] if s["size"] == size), None) for r in runs]
            if any(a is None for a in at):
                continue
            point = {"task": task, "strategy": strategy, "seed": seed, "size": size}
            for metric in [m for m in ("f1_macro", "f_avg") if m in at[0]]:
                values = [a[metric] for a in at]
                point[f"{metric}_folds"] = values
                point[f"{metric}_mean"] = round(float(np.mean(values)), 4)
            points.append(point)
    for task in sorted({p["task"] for p in points}):
        curves[task] = {}
        for strategy in STRATEGIES:
            rows = [p for p in points if p["task"] == task and p["strategy"] == strategy]
            curve = []
            for size in sizes:
                at = [p for p in rows if p["size"] == size]
                if not at:
                    continue
                entry = {"size": size, "seeds": len(at)}
                for metric in ("f1_macro", "f_avg"):
                    if f"{metric}_mean" in at[0]:
                        values = [p[f"{metric}_mean"] for p in at]
                        entry[metric] = round(float(np.mean(values)), 4)
                        entry[f"{metric}_std"] = round(float(np.std(values)), 4)
                curve.append(entry)
            if curve:
                curves[task][strategy] = curve
    return points, curves


def goal_check(curves: dict, points: list[dict] | None = None) -> dict:
    """Per task: random's macro-F1 at 1,600 labels (mean over seeds) and the labels each other strategy's
    mean curve needs to reach it; with ``points``, also each seed's curve against the same reference."""
    goals = {}
    for task, by_strategy in curves.items():
        random_curve = {c["size"]: c["f1_macro"] for c in by_strategy.get("random", [])}
        if GOAL_REFERENCE not in random_curve:
            continue
        reference = random_curve[GOAL_REFERENCE]
        entry = {
            "goal": "uncertainty reaches random's CV macro-F1 at 1,600 labels with at most 1,000 (issue 21); "
            "labels_to_reach: first crossing of the mean curve, interpolated on log size",
            "random_f1_macro_at_1600": reference,
            "goal_labels": GOAL_LABELS,
        }
        for strategy in ("uncertainty", "mixed"):
            curve = by_strategy.get(strategy, [])
            needed = log_interpolate([c["size"] for c in curve], [c["f1_macro"] for c in curve], reference)
            entry[f"{strategy}_labels_to_reach"] = needed
            entry[f"{strategy}_met"] = needed is not None and needed <= GOAL_LABELS
            per_seed = {}
            for seed in sorted({p["seed"] for p in points or [] if (p["task"], p["strategy"]) == (task, strategy)}):
                mine = sorted((p for p in points if (p["task"], p["strategy"], p["seed"]) == (task, strategy, seed)),
                              key=lambda p: p["size"])
                per_seed[str(seed)] = log_interpolate([p["size"] for p in mine], [p["f1_macro_mean"] for p in mine],
                                                      reference)
            if per_seed:
                entry[f"{strategy}_labels_to_reach_per_seed"] = per_seed
        goals[task] = entry
    return goals


def plot(results: dict, path: Path) -> None:
    """Macro-F1 against labelled sentences (log x), one line per strategy with a +-std band, a panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["curves"])
    figure, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4), squeeze=False)
    colours = {"uncertainty": "tab:red", "mixed": "tab:purple", "random": "tab:gray"}
    for ax, task in zip(axes[0], tasks, strict=True):
        for strategy, curve in results["curves"][task].items():
            sizes = np.array([c["size"] for c in curve])
            mean = np.array([c["f1_macro"] for c in curve])
            std = np.array([c["f1_macro_std"] for c in curve])
            ax.plot(sizes, mean, marker="o", color=colours.get(strategy), label=strategy)
            ax.fill_between(sizes, mean - std, mean + std, color=colours.get(strategy), alpha=0.2)
        goal = results["goals"].get(task)
        if goal:
            ax.axhline(goal["random_f1_macro_at_1600"], color="tab:gray", linestyle=":", linewidth=1,
                       label="random at 1,600")
            ax.axvline(GOAL_LABELS, color="black", linestyle=":", linewidth=1, label="goal: 1,000 labels")
        ax.set_xscale("log")
        sizes = [c["size"] for c in next(iter(results["curves"][task].values()))]
        ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("labelled real sentences")
        ax.set_ylabel(f"{results['protocol']['folds']}-fold grouped CV macro-F1")
        ax.set_title(f"{task} (tfidf_logreg)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    figure.suptitle("Simulated active learning on the real sentences (mean ± std over seeds)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench/learning_curve.json")
    parser.add_argument("--plot", default=None, help="also draw the curves into this PNG")
    parser.add_argument(
        "--plot-only", action="store_true", help="recompute the summary from the units in --output; draw --plot"
    )
    parser.add_argument("--data", default="data/train/real_news.jsonl")
    parser.add_argument("--tasks", default="stance,topic")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--sizes", default="200,400,800,1600")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--large-batch", type=int, default=200)
    parser.add_argument("--large-from", type=int, default=400, help="batches of --large-batch from this size on")
    parser.add_argument("--per-article", type=int, default=3)
    parser.add_argument("--limit-rows", type=int, default=None, help="only the first articles, up to this many rows")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run: ~300 sentences, 2 folds, one seed")
    args = parser.parse_args()
    if args.plot_only:
        results = json.loads(Path(args.output).read_text(encoding="utf-8"))
        sizes, folds = results["protocol"]["sizes"], results["protocol"]["folds"]
        results["points"], results["curves"] = summarize(results["units"], sizes, folds)
        results["goals"] = goal_check(results["curves"], results["points"])
        Path(args.output).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        if args.plot:
            plot(results, Path(args.plot))
        print(json.dumps(results["goals"], indent=1))
        return
    if args.quick:
        args.limit_rows, args.folds, args.seeds = 300, 2, "0"
        args.sizes, args.start, args.batch, args.large_batch, args.large_from = "30,60", 20, 10, 15, 30
    args.data = str(Path(args.data).resolve())
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    tasks, strategies = args.tasks.split(","), args.strategies.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    units = [(t, k, s, st) for t in tasks for s in seeds for k in range(args.folds) for st in strategies]
    import hashlib

    raw = Path(args.data).read_bytes()
    protocol = {
        "data": os.path.relpath(args.data, ROOT),
        "data_rows": raw.count(b"\n"),
        "data_sha256": hashlib.sha256(raw).hexdigest(),
        "configs": [f"configs/{t}/tfidf_logreg.yaml" for t in tasks],
        "folds": args.folds,
        "fold_seed": "split.seed of the config (the folds of tagger cv)",
        "seeds": seeds,
        "sizes": args.sizes,
        "start": f"{args.start} random sentences (seeded)",
        "batches": f"{args.batch} per round below {args.large_from} labels, {args.large_batch} from there",
        "per_article": args.per_article,
        "strategies": strategies,
        "decision": "plain (thresholds 0.5, arg-max); no tuning",
        "limit_rows": args.limit_rows,
        "quick": args.quick,
    }
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "jobs": args.jobs,
                    "blas_threads": os.environ["OPENBLAS_NUM_THREADS"],
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "protocol": protocol,
    }
    done: list[dict] = []
    start = time.perf_counter()

    def record() -> None:
        results["units_done"] = f"{len(done)}/{len(units)}"
        results["seconds"] = round(time.perf_counter() - start, 1)
        results["points"], results["curves"] = summarize(done, args.sizes, args.folds)
        results["goals"] = goal_check(results["curves"], results["points"])
        results["units"] = sorted(done, key=lambda u: (u["task"], u["strategy"], u["seed"], u["fold"]))
        Path(args.output).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")

    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as executor:
            futures = [executor.submit(run_unit, *unit, args) for unit in units]
            for future in as_completed(futures):
                done.append(future.result())
                print(f"{len(done)}/{len(units)}", {k: done[-1][k] for k in ("task", "strategy", "seed", "fold",
                      "seconds")}, flush=True)
                record()
    else:
        for unit in units:
            done.append(run_unit(*unit, args))
            print(f"{len(done)}/{len(units)}", {k: done[-1][k] for k in ("task", "strategy", "seed", "fold",
                  "seconds")}, flush=True)
            record()
    record()
    print(json.dumps({"curves": results["curves"], "goals": results["goals"]}, indent=1))
    if args.plot:
        plot(results, Path(args.plot))
        print(f"wrote {args.plot}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
