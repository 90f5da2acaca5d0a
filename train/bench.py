"""Benchmarks (``make bench``): training time, tagging throughput and peak memory, as JSON.

Numbers are measured, never asserted: tests check behaviour, this file records speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np

from train.config import PROJECT_ROOT, load_config
from train.data import load_for
from train.registry import build_model

CONFIGS = [
    "configs/topic/tfidf_logreg.yaml",
    "configs/topic/tfidf_svm.yaml",
    "configs/stance/tfidf_logreg.yaml",
    "configs/stance/tfidf_svm.yaml",
]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_config(path: str, repeats: int = 3) -> dict:
    config = load_config(PROJECT_ROOT / path)
    data = load_for(config)
    model = build_model(config.model.family, config.task.type, config.task.labels, config.model.params, config.seed)
    start = time.perf_counter()
    model.fit(data.inputs, data.labels)
    train_seconds = time.perf_counter() - start
    inputs = data.inputs
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(inputs)
        timings.append(time.perf_counter() - start)
    batch = np.median(timings)
    single = inputs.head(200)
    start = time.perf_counter()
    for i in range(len(single)):
        model.predict(single.iloc[[i]])
    one_at_a_time = (time.perf_counter() - start) / len(single)
    return {
        "config": path,
        "train_sentences": len(data),
        "train_seconds": round(train_seconds, 3),
        "batch_sentences_per_second": round(len(inputs) / batch, 1),
        "single_sentence_latency_ms": round(one_at_a_time * 1000, 2),
        "peak_rss_mb_so_far": round(peak_rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="bench/results.json")
    parser.add_argument("--configs", nargs="*", default=CONFIGS)
    args = parser.parse_args()
    results = {
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "cpus": __import__("os").cpu_count(),
        },
        "tfidf": [bench_config(c) for c in args.configs],
    }
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
