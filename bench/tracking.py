"""Tracking-store benchmark (``make bench``): one ``tagger train`` logged to SQLite vs to PostgreSQL + mlflow server.

Starts the tracking stack (``scripts/tracking_server.sh``) in a throw-away folder on free ports, then
times the same training (``configs/topic/tfidf_logreg.yaml``) ``--repeats`` times against each store,
one after the other, and records each run's wall time and MLflow's own ``train_seconds`` so the
logging overhead shows. Skipped (noted in the JSON) where PostgreSQL is not installed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["train", "configs/topic/tfidf_logreg.yaml", "--set", "evaluation.bootstrap_samples=0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_runs(env: dict, repeats: int) -> dict:
    import mlflow

    walls, fits = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "train.cli", *TRAIN], env=env, cwd=ROOT, capture_output=True, text=True
        )
        walls.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        fits.append(mlflow.get_run(done.stdout.strip()).data.metrics["train_seconds"])
    return {
        "runs": repeats,
        "wall_seconds_median": round(statistics.median(walls), 2),
        "wall_seconds": [round(w, 2) for w in walls],
        "train_seconds_median": round(statistics.median(fits), 2),
        "rest_of_the_run_seconds_median": round(statistics.median(w - f for w, f in zip(walls, fits, strict=True)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench/tracking.json")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict = {"command": "tagger " + " ".join(TRAIN)}
    with tempfile.TemporaryDirectory(prefix="tagger-tracking-bench-") as home:
        base = {**os.environ, "TAGGER_HOME": home, "HF_HUB_OFFLINE": "1"}
        results["sqlite"] = timed_runs({**base, "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db"}, args.repeats)
        print("sqlite", results["sqlite"], flush=True)
        if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
            results["server"] = "skipped: PostgreSQL is not installed"
        else:
            state = tempfile.mkdtemp(prefix="tagger-tracking-server-")
            stack = {**base, "TAGGER_SERVER_DIR": state, "TAGGER_PG_PORT": str(free_port())}
            stack["TAGGER_MLFLOW_PORT"] = str(free_port())
            script = [str(ROOT / "scripts" / "tracking_server.sh")]
            subprocess.run([*script, "start"], env=stack, check=True, capture_output=True)
            try:
                uri = f"http://127.0.0.1:{stack['TAGGER_MLFLOW_PORT']}"
                results["server"] = timed_runs({**base, "MLFLOW_TRACKING_URI": uri}, args.repeats)
                results["server"]["store"] = "mlflow server (proxied artifacts) on PostgreSQL, loopback"
                print("server", results["server"], flush=True)
            finally:
                subprocess.run([*script, "clean"], env=stack, check=False, capture_output=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
