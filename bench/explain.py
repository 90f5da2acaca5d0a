"""Latency of explanations (issue 24): what ``"explain": true`` adds to a one-sentence request, as JSON.

Topic and stance models are fitted in-process with the shipped configs' params (no MLflow): TF-IDF
logistic regression and SVM on the corpus (``data/train``, less the sentences measured), and the
MiniLM fine-tune config cut to ``--max-steps`` steps on a few hundred sentences (latency does not
depend on what it learned). Each measured sentence is tagged alone (``Tagger.tag_sentences``), then
explained alone as the service does (``Tagger.explain_sentences``: every topic, the tagged stance
class, the service's budget); the explanation's time is the added latency. Goals: TF-IDF p99 < 5 ms,
transformer p99 < 500 ms. The machine's load is recorded before and after: it is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from train.config import load_config
from train.domain import DEFAULT_TARGET
from train.models.explain import Budget
from train.registry import build_model
from train.serving.app import EXPLAIN_SECONDS
from train.serving.tagger import Tagger

ROOT = Path(__file__).resolve().parent.parent

GOALS_MS = {"tfidf": 5.0, "transformer": 500.0}
EXAMPLE = "Militias fired rockets at a base near the border."


def corpus() -> pd.DataFrame:
    rows = [json.loads(line) for line in (ROOT / "data/train/news_sentences.jsonl").open(encoding="utf-8")]
    return pd.DataFrame(rows)


def fit(task: str, config: str, data: pd.DataFrame, **overrides):
    cfg = load_config(ROOT / f"configs/{task}/{config}.yaml")
    params = {**cfg.model.params, **overrides}
    model = build_model(cfg.model.family, cfg.task.type, list(cfg.task.labels), params, 13)
    y = data["topics"].tolist() if task == "topic" else data["stance"].tolist()
    began = time.perf_counter()
    model.fit(data[["text", "target"]], y)
    return model, time.perf_counter() - began


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def measure(tagger: Tagger, sentences: list[dict], warm: int = 5) -> dict:
    """Tag then explain each sentence alone, as a one-sentence ``/v1/tag`` with ``explain`` does."""
    budget = Budget(seconds=EXPLAIN_SECONDS)
    load = os.getloadavg()[0]
    tag_s, explain_s, explain_cpu, truncated = [], [], [], 0
    for i, sentence in enumerate(sentences[:warm] + sentences):
        began = time.perf_counter()
        results = tagger.tag_sentences([sentence], sentence["target"])
        tagged, cpu = time.perf_counter(), time.process_time()
        explained = tagger.explain_sentences(results, sentence["target"], 5, [[results[0]["stance"]]], budget)
        done, cpu_done = time.perf_counter(), time.process_time()
        if i >= warm:
            tag_s.append(tagged - began)
            explain_s.append(done - tagged)
            explain_cpu.append(cpu_done - cpu)
            truncated += any(explained[0][task]["truncated"] for task in ("topic", "stance"))
    return {
        "load_average_1m_before": round(load, 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "sentences": len(sentences),
        "tag": percentiles(tag_s),
        "explain_added": percentiles(explain_s),
        # CPU seconds of the process while explaining: the work itself, without the waits for a core that a
        # loaded machine adds to the wall time (torch's threads add theirs up: above wall time there)
        "explain_added_cpu": percentiles(explain_cpu),
        "explanations_truncated": truncated,
        "method": explained[0]["topic"]["method"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="bench/explain.json")
    parser.add_argument("--sentences", type=int, default=300, help="TF-IDF: sentences measured")
    parser.add_argument("--transformer-sentences", type=int, default=60)
    parser.add_argument("--max-steps", type=int, default=20, help="transformer fine-tuning steps (latency only)")
    parser.add_argument(
        "--skip-transformer", action="store_true", help="TF-IDF only; --output's transformer figures are kept"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = corpus()
    measured = data.sample(n=args.sentences, random_state=0)
    train = data.drop(measured.index)
    pairs = zip(measured["text"], measured["target"], strict=True)
    sentences = [{"text": text, "target": target or DEFAULT_TARGET} for text, target in pairs]
    previous = {}
    if args.skip_transformer and Path(args.output).exists():
        previous = json.loads(Path(args.output).read_text(encoding="utf-8"))
        if any(key.startswith("transformer_") for key in previous):
            previous.setdefault("transformer_run_machine", previous.get("machine"))
    results: dict = {
        **{key: value for key, value in previous.items() if key.startswith("transformer_")},  # and its machine
        "machine": {
            "platform": platform.platform(),
            "cpus": len(os.sched_getaffinity(0)),
            "load_average_before": [round(x, 2) for x in os.getloadavg()],
        },
        "explain_budget_seconds_per_model": EXPLAIN_SECONDS,
        "goals_p99_ms": GOALS_MS,
    }
    for family in ("tfidf_logreg", "tfidf_svm"):
        topic, topic_s = fit("topic", family, train)
        stance, stance_s = fit("stance", family, train)
        row = measure(Tagger(topic, stance), sentences)
        row["fit_seconds"] = round(topic_s + stance_s, 1)
        row["meets_goal"] = row["explain_added"]["p99_ms"] < GOALS_MS["tfidf"]
        results[family] = row
        if family == "tfidf_logreg":  # the example of docs/serving.md
            tagger = Tagger(topic, stance)
            tagged = tagger.tag_sentences([{"text": EXAMPLE}], DEFAULT_TARGET)
            tagged[0]["explanation"] = tagger.explain_sentences(tagged, DEFAULT_TARGET, 2, [[tagged[0]["stance"]]])[0]
            results["example"] = tagged[0]
        print(family, json.dumps(row), flush=True)
    if not args.skip_transformer:
        small = train.sample(n=min(320, len(train)), random_state=0)
        quick = {"max_steps": args.max_steps, "early_stopping_patience": None}
        topic, topic_s = fit("topic", "minilm_finetune", small, **quick)
        stance, stance_s = fit("stance", "minilm_finetune", small, **quick)
        tagger = Tagger(topic, stance)
        for backend in ("torch", "onnx"):
            for model in (topic, stance):
                model.set_backend(backend, force=True)
            row = measure(tagger, sentences[: args.transformer_sentences], warm=3)
            row["fit_seconds"] = round(topic_s + stance_s, 1)
            row["max_steps"] = args.max_steps
            row["meets_goal"] = row["explain_added"]["p99_ms"] < GOALS_MS["transformer"]
            results[f"transformer_{backend}"] = row
            print(backend, json.dumps(row), flush=True)
    results["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
