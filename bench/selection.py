"""Model-selection benchmarks (``make bench``): CV, a sweep and a paired comparison, timed, as JSON.

Each measure runs the real command on a throw-away store (``TAGGER_HOME`` in a temporary folder):
- ``tagger cv configs/topic/tfidf_logreg.yaml`` (5 folds; goal < 30 s on 2 cores),
- ``tagger sweep configs/stance/tfidf_logreg.yaml --space configs/spaces/tfidf.yaml --trials 20 --jobs 2``
  (goal < 5 min),
- the paired bootstrap of ``tagger compare`` on 1,000 sentences with 10,000 resamples (goal < 2 s).
Numbers are recorded, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def timed_command(args: list[str], env: dict) -> tuple[float, str]:
    """Run ``tagger ARGS``; its wall time and its stdout (the command's result; progress is on stderr)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "train.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"tagger {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def bench_cv(env: dict) -> dict:
    seconds, run_id = timed_command(["cv", "configs/topic/tfidf_logreg.yaml", "--set", "tracking.log_model=false"], env)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{env['TAGGER_HOME']}/mlflow.db")
    metrics = mlflow.get_run(run_id.strip()).data.metrics
    return {
        "command": "tagger cv configs/topic/tfidf_logreg.yaml --set tracking.log_model=false",
        "seconds": round(seconds, 1),
        "goal_seconds": 30,
        "cv_f1_macro_mean": round(metrics["cv/f1_macro_mean"], 4),
        "cv_f1_macro_std": round(metrics["cv/f1_macro_std"], 4),
    }


def bench_sweep(env: dict, trials: int, jobs: int) -> dict:
    args = ["sweep", "configs/stance/tfidf_logreg.yaml", "--space", "configs/spaces/tfidf.yaml"]
    args += ["--trials", str(trials), "--jobs", str(jobs), "--study", "bench"]
    seconds, output = timed_command(args, env)
    best = re.search(r"best: trial (\d+), ([0-9.]+)", output)
    return {
        "command": "tagger " + " ".join(args),
        "seconds": round(seconds, 1),
        "goal_seconds": 300,
        "trials": {state: int(n) for n, state in re.findall(r"(\d+) (complete|pruned|fail)", output.splitlines()[0])},
        "best_trial": int(best.group(1)) if best else None,
        "best_value": float(best.group(2)) if best else None,
    }


def bench_compare() -> dict:
    """The paired bootstrap behind ``tagger compare``, on 1,000 synthetic sentences (4 labels)."""
    from train.evaluation.compare import compare_predictions

    rng = np.random.default_rng(0)
    gold = (rng.random((1000, 4)) < 0.3).astype(int)
    a = np.where(rng.random(gold.shape) < 0.85, gold, 1 - gold)
    b = np.where(rng.random(gold.shape) < 0.88, gold, 1 - gold)
    labels = ["security", "energy", "trade", "diplomacy"]
    start = time.perf_counter()
    compare_predictions(gold, a, b, labels, True, "f1_macro", samples=10_000)
    return {"sentences": 1000, "resamples": 10_000, "seconds": round(time.perf_counter() - start, 3), "goal_seconds": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench/selection.json")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sections", default="compare,cv,sweep")
    args = parser.parse_args()
    sections = args.sections.split(",")
    with tempfile.TemporaryDirectory(prefix="tagger-bench-") as home:
        env = {**os.environ, "TAGGER_HOME": home, "HF_HUB_OFFLINE": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
        if "compare" in sections:
            results["compare"] = bench_compare()
            print("compare:", results["compare"], flush=True)
        if "cv" in sections:
            results["cv"] = bench_cv(env)
            print("cv:", results["cv"], flush=True)
        if "sweep" in sections:
            results["sweep"] = bench_sweep(env, args.trials, args.jobs)
            print("sweep:", results["sweep"], flush=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
