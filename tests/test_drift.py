"""Drift of the live label mix: the monitor's window, its EM estimate, and GET /v1/drift on a real server."""

import json
import os
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from conftest import ROOT, free_port, read_jsonl, wait_ready

from train.models import prior_shift
from train.serving.drift import DriftCollector, DriftSettings, TaskDrift, divergence

TRAINED = np.array([0.3, 0.2, 0.5])


def scores(priors, n: int, seed: int) -> np.ndarray:
    """Exact posteriors (under ``TRAINED`` priors) of ``n`` sentences whose classes are drawn with ``priors``:
    a point ``x ~ N(2·e_y, I)`` has ``p(y|x) ∝ π(y)·exp(2·x_y)``."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=priors)
    x = rng.normal(size=(n, 3)) + 2.0 * np.eye(3)[y]
    proba = np.exp(2.0 * x) * TRAINED
    return proba / proba.sum(axis=1, keepdims=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def monitor(window: int = 200, max_age: float = 60.0, **kwargs) -> TaskDrift:
    settings = DriftSettings(window=window, max_age=max_age, min_sentences=10, **kwargs)
    return TaskDrift(["favor", "against", "neutral"], False, TRAINED, settings, clock=Clock())


def test_window_keeps_the_last_sentences_by_count():
    drift = monitor(window=100)
    first, second = np.full((80, 3), 1 / 3), scores(TRAINED, 50, seed=1)
    drift.append(first)
    drift.append(second)
    window = drift.window()
    assert len(window) == 100 and drift.seen == 130
    assert sorted(map(tuple, window)) == sorted(map(tuple, np.vstack([first[-50:], second])))
    drift.append(scores(TRAINED, 250, seed=2))  # a batch larger than the window keeps its last rows
    assert len(drift.window()) == 100 and drift.seen == 380


def test_window_drops_sentences_older_than_max_age():
    drift = monitor(max_age=60.0)
    drift.append(scores(TRAINED, 40, seed=1))
    drift.clock.now += 45
    drift.append(scores(TRAINED, 30, seed=2))
    assert len(drift.window()) == 70
    drift.clock.now += 20  # the first 40 are 65 s old
    assert len(drift.window()) == 30 and drift.refresh().sentences == 30
    drift.clock.now += 60
    estimate = drift.refresh()
    assert estimate.sentences == 0 and estimate.priors is None and not estimate.alarm


def test_estimate_is_the_em_of_prior_shift_and_the_alarm_follows_the_threshold():
    drift = monitor(window=2000, threshold=0.1)
    same = scores(TRAINED, 2000, seed=3)
    drift.append(same)
    quiet = drift.refresh()
    expected, _ = prior_shift.adjust_priors(same, TRAINED, multilabel=False)
    assert np.allclose(quiet.priors, expected)
    assert quiet.divergence == pytest.approx(divergence(expected, TRAINED, False)) and quiet.divergence < 0.05
    assert not quiet.alarm
    shifted = np.array([0.05, 0.05, 0.9])  # mostly neutral
    drift.append(scores(shifted, 2000, seed=4))
    loud = drift.refresh()
    assert loud.alarm and loud.divergence > 0.25
    assert np.allclose(loud.priors, shifted, atol=0.06), loud.priors  # EM recovers the shifted mix
    # live adjustment moves scores towards the window's priors
    adjusted = drift.adjust(same)
    assert adjusted[:, 2].mean() > same[:, 2].mean() + 0.1 and np.allclose(adjusted.sum(axis=1), 1)


def test_multilabel_divergence_is_the_largest_label_shift():
    assert divergence(np.array([0.1, 0.5]), np.array([0.3, 0.45]), multilabel=True) == pytest.approx(0.2)
    assert divergence(np.array([0.2, 0.2, 0.6]), np.array([0.3, 0.3, 0.4]), multilabel=False) == pytest.approx(0.2)
    adjusted = prior_shift.apply_priors(np.array([[0.5, 0.5]]), np.array([0.5, 0.5]), np.array([0.1, 0.9]), True)
    assert adjusted[0, 0] == pytest.approx(0.1) and adjusted[0, 1] == pytest.approx(0.9)


def test_concurrent_appends_lose_nothing_while_estimates_run():
    drift = monitor(window=10_000)
    rows = scores(TRAINED, 400, seed=5)
    errors: list[BaseException] = []

    def append() -> None:
        try:
            for i in range(0, 400, 7):
                drift.append(rows[i : i + 7])  # batches of 7 rows
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def estimate() -> None:
        for _ in range(20):
            drift.refresh()

    threads = [threading.Thread(target=append) for _ in range(8)] + [threading.Thread(target=estimate)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    window = drift.window()
    assert drift.seen == 8 * 400 and len(window) == 8 * 400
    # every slot holds a whole row of the input (no torn writes), each row eight times
    counts = {}
    for row in map(tuple, window):
        counts[row] = counts.get(row, 0) + 1
    assert set(counts.values()) == {8} and set(counts) == set(map(tuple, rows))


def test_collector_exposes_the_gauges():
    from prometheus_client import CollectorRegistry, generate_latest

    from train.serving.drift import Drift

    class Model:
        labels, multilabel, priors_ = ["favor", "against", "neutral"], False, TRAINED

    drift = Drift({"stance": Model()}, DriftSettings(min_sentences=10, every_sentences=50), background=False)
    registry = CollectorRegistry()
    registry.register(DriftCollector(lambda: drift))
    before = generate_latest(registry).decode()
    assert 'tagger_drift_alarm{task="stance"} 0.0' in before and "tagger_drift_divergence{" not in before
    drift.observe({"stance": scores([0.02, 0.02, 0.96], 60, seed=6)})  # 60 >= every_sentences: estimated inline
    text = generate_latest(registry).decode()
    assert 'tagger_drift_alarm{task="stance"} 1.0' in text
    assert 'tagger_drift_prior{kind="training",label="neutral",task="stance"} 0.5' in text
    assert 'tagger_drift_prior{kind="estimated",label="neutral",task="stance"}' in text
    assert drift.report()["tasks"]["stance"]["alarm"] is True


@pytest.fixture(scope="module")
def drift_server(registry, tmp_path_factory):
    """``tagger serve`` with a 300-sentence drift window."""
    port = free_port()
    log_file = open(tmp_path_factory.mktemp("drift-server") / "server.log", "w+b")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "train.cli", "serve", "--port", str(port), "--drift-window", "300"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    base = f"http://127.0.0.1:{port}"
    if not wait_ready(base):
        proc.kill()
        log_file.seek(0)
        pytest.fail(f"server did not start: {log_file.read().decode(errors='replace')[-2000:]}")
    yield base
    proc.terminate()
    proc.wait(timeout=20)
    log_file.close()


def wait_for(base: str, done, seconds: float = 20.0) -> dict:
    deadline = time.time() + seconds
    while True:
        report = httpx.get(f"{base}/v1/drift").json()
        if done(report) or time.time() > deadline:
            return report
        time.sleep(0.2)


@pytest.mark.slow
def test_drift_endpoint_moves_when_the_stream_shifts(drift_server):
    base = drift_server
    start = httpx.get(f"{base}/v1/drift").json()
    assert set(start["tasks"]) == {"topic", "stance"} and start["adjust_priors"] == "off"
    assert start["tasks"]["stance"]["estimated_priors"] is None and start["tasks"]["topic"]["alarm"] is False
    # sentences of the corpus the registry's models were fitted on (its every third row), but not those:
    # 300 in the corpus mix, then 300 neutral ones with no topic, so that the window holds only those
    corpus = read_jsonl(ROOT / "data/train/news_sentences.jsonl")
    mix = corpus[1::3][:300]
    unseen = [r for i, r in enumerate(corpus) if i % 3]
    shifted = [r for r in unseen if r["stance"] == "neutral" and not r["topics"]][:300]
    assert len(shifted) == 300

    def post(rows) -> None:
        for i in range(0, len(rows), 50):
            batch = rows[i : i + 50]
            r = httpx.post(f"{base}/v1/tag", json={"sentences": [row["text"] for row in batch]}, timeout=30)
            assert r.status_code == 200, r.text

    post(mix)
    calm = wait_for(base, lambda r: r["tasks"]["topic"]["window"]["sentences"] == 300)
    assert calm["tasks"]["topic"]["window"]["sentences"] == 300, calm
    post(shifted)

    def shifted_estimate(report: dict) -> bool:
        tasks = report["tasks"]
        return tasks["topic"]["alarm"] and all(
            tasks[t]["divergence"] > calm["tasks"][t]["divergence"] + 0.05 for t in ("topic", "stance")
        )

    moved = wait_for(base, shifted_estimate)
    assert moved["tasks"]["topic"]["sentences_seen"] == 600
    for task in ("topic", "stance"):
        before, after = calm["tasks"][task], moved["tasks"][task]
        assert after["divergence"] > before["divergence"] + 0.05, (before, after)
    topic = moved["tasks"]["topic"]
    assert topic["alarm"] is True and topic["divergence"] > topic["threshold"]
    topics = [sum(report["tasks"]["topic"]["estimated_priors"].values()) for report in (calm, moved)]
    assert topics[1] < topics[0] - 0.2, topics  # fewer topics
    neutral = [report["tasks"]["stance"]["estimated_priors"]["neutral"] for report in (calm, moved)]
    assert neutral[1] > neutral[0], neutral
    metrics = httpx.get(f"{base}/metrics")
    if metrics.status_code == 200:  # the gauges, on the service's registry
        assert 'tagger_drift_alarm{task="topic"} 1.0' in metrics.text
    print(json.dumps({t: moved["tasks"][t]["divergence"] for t in moved["tasks"]}))


def test_serve_options_default_to_the_monitors_settings():
    from train.cli import serve
    from train.serving.drift import DEFAULT_MAX_AGE, DEFAULT_THRESHOLD, DEFAULT_WINDOW

    defaults = {param.name: param.default for param in serve.params}
    assert (defaults["drift_window"], defaults["drift_max_age"]) == (DEFAULT_WINDOW, DEFAULT_MAX_AGE)
    assert defaults["drift_threshold"] == DEFAULT_THRESHOLD and defaults["adjust_priors"] == "off"
