"""Batch-tagging benchmark (``make bench``): ``tagger tag-batch`` on generated sentences, local and Spark, as JSON.

On a throw-away store it trains and promotes the topic and stance configs of ``--family`` (TF-IDF by
default; ``static_logreg`` for the static-embedding family built for bulk work), writes N generated
sentences (corpus sentences with numbered variants) to Parquet, then times
``tagger tag-batch INPUT OUT --engine local`` and ``--engine spark --master local[2]`` as separate
processes, recording throughput, Spark's start-up apart, and the peak RSS of each process.
Goals (issue 14): local >= 20,000 sentences/s with peak RSS < 2 GB; Spark within 2x of local.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tagger(args: list[str], env: dict) -> tuple[float, str, float]:
    """Run ``tagger ARGS`` in its own process: wall seconds, stderr, and its peak RSS in MB."""
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/env", sys.executable, "-m", "train.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"tagger {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    # children's peak RSS so far: runs go from small to large, so this is the latest big one's
    return seconds, done.stderr, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def generate(path: Path, n: int) -> None:
    import pandas as pd

    rows = [json.loads(line) for line in (ROOT / "data/train/news_sentences.jsonl").read_text("utf-8").splitlines()]
    texts = [r["text"] for r in rows]
    targets = [r["target"] for r in rows]
    frame = pd.DataFrame(
        {
            "id": range(n),
            "text": [f"{texts[i % len(texts)]} ({i // len(texts)})" for i in range(n)],
            "target": [targets[i % len(targets)] for i in range(n)],
        }
    )
    frame.to_parquet(path, index=False, row_group_size=100_000)


def rate(stderr: str) -> tuple[int, float]:
    found = re.search(r"tagged (\d+) sentences in ([0-9.]+) s", stderr)
    return int(found.group(1)), float(found.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench/batch.json")
    parser.add_argument("--sentences", type=int, default=1_000_000)
    parser.add_argument("--engines", default="local,spark")
    parser.add_argument(
        "--family", default="tfidf_logreg", help="Config of each task to train and promote (static_logreg: bulk)."
    )
    args = parser.parse_args()
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="tagger-batch-bench-") as home:
        env = {**os.environ, "TAGGER_HOME": home, "HF_HUB_OFFLINE": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        for task in ("topic", "stance"):
            config = f"configs/{task}/{args.family}.yaml"
            tagger(["train", config, "--set", "evaluation.bootstrap_samples=0"], env)
            tagger(["promote", "--task", task], env)
        source = Path(home) / "sentences.parquet"
        generate(source, args.sentences)
        results["input"] = {"sentences": args.sentences, "format": "parquet", "models": f"{args.family} champions"}
        for engine in args.engines.split(","):
            extra = ["--master", "local[2]"] if engine == "spark" else []
            out = Path(home) / f"out-{engine}"
            seconds, stderr, rss = tagger(["tag-batch", str(source), str(out), "--engine", engine, *extra], env)
            rows, tagging = rate(stderr)  # Spark's figure includes its start-up: reported apart below
            startup = re.search(r"Spark started in ([0-9.]+) s", stderr)
            if startup:
                tagging -= float(startup.group(1))
            results[engine] = {
                "command": f"tagger tag-batch INPUT OUT --engine {engine} {' '.join(extra)}".strip(),
                "rows": rows,
                "process_seconds": round(seconds, 1),
                "tagging_seconds": round(tagging, 1),
                "sentences_per_second": round(rows / tagging),
                "peak_rss_mb": round(rss),
                **({"spark_startup_seconds": float(startup.group(1))} if startup else {}),
            }
            print(engine, results[engine], flush=True)
    if "local" in results and "spark" in results:
        results["spark_over_local_time"] = round(
            results["spark"]["tagging_seconds"] / results["local"]["tagging_seconds"], 2
        )
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
