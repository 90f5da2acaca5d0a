"""Bounded load test of the tagging service on loopback, beside ``mlflow models serve`` on the same model.

The models are the best TF-IDF topic and stance runs in the store (as ``tagger promote`` ranks them),
then the best fine-tuned transformer topic run with the same stance run. ``tagger serve`` is given
both runs; ``mlflow models serve`` gets the same two models as one topic + stance pyfunc (the
``tagger`` bundle), so both servers do the same work per request. Measured: throughput and
p50/p95/p99 latency for one-sentence and 20-sentence requests at fixed concurrency, an open-loop
run at 50 requests/s, and the server's memory after 1,000 and after 10,000 requests. Every loop is bounded in count and
time and only talks to 127.0.0.1. Run through ``make bench`` (writes ``bench/serving.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from throughput import best_run, write_results

from train.cli import quiet_libraries
from train.config import PROJECT_ROOT
from train.domain import DEFAULT_TARGET

SENTENCES = [json.loads(line)["text"] for line in (PROJECT_ROOT / "data/train/news_sentences.jsonl").open()][:400]


TFIDF = ("tfidf_logreg", "tfidf_svm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# With 2+ cores the server gets the first core and the load generator the rest, so the client's own
# work does not show up as server latency.
CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPUS = {CPUS[0]}
CLIENT_CPUS = set(CPUS[1:]) or {CPUS[0]}


def _pin(cpus: set[int]):
    return lambda: os.sched_setaffinity(0, cpus)


class Server:
    """A server subprocess on a free loopback port, waited for until it answers; its output goes to a log file."""

    def __init__(self, command: list[str], ready_path: str, env: dict):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="tagger-bench-server-", suffix=".log")[1])
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [*command, "--port", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_pin(SERVER_CPUS),
            )
        deadline = time.time() + 180
        while time.time() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.base + ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server {command[:4]} did not start: {self.log.read_text()[-800:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def summarise(tally: Tally, seconds: float) -> dict:
    ms = np.array(tally.latencies) * 1000
    summary = {
        "requests": len(ms) + tally.errors,
        "errors": tally.errors,
        "throughput_rps": round(len(ms) / seconds, 1),
    }
    for q in (50, 95, 99):
        summary[f"p{q}_ms"] = round(float(np.percentile(ms, q)), 2) if len(ms) else None
    if tally.first_error:
        summary["first_error"] = tally.first_error
    return summary


class Tally:
    """Latencies of successful requests and a count of failed ones."""

    def __init__(self):
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error: str | None = None

    async def post(self, client: httpx.AsyncClient, url: str, body: dict) -> None:
        start = time.perf_counter()
        response = await client.post(url, json=body)
        if response.status_code == 200:
            self.latencies.append(time.perf_counter() - start)
        else:
            self.errors += 1
            self.first_error = self.first_error or f"{response.status_code}: {response.text[:300]}"


async def closed_loop(url: str, bodies: list[dict], concurrency: int) -> dict:
    """``concurrency`` clients send the bodies back to back; bounded by len(bodies)."""
    tally, queue = Tally(), list(bodies)
    async with httpx.AsyncClient(timeout=60) as client:

        async def worker():
            while queue:
                await tally.post(client, url, queue.pop())

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarise(tally, time.perf_counter() - start)


async def open_loop(url: str, bodies: list[dict], rate: float) -> dict:
    """Requests sent at a fixed rate whatever the answers (latency as a caller sees it)."""
    tally = Tally()
    async with httpx.AsyncClient(timeout=60) as client:
        start = time.perf_counter()
        tasks = []
        for i, body in enumerate(bodies):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(tally.post(client, url, body)))
        await asyncio.gather(*tasks)
    return summarise(tally, time.perf_counter() - start)


def tagger_bodies(n: int, size: int) -> list[dict]:
    return [{"sentences": [SENTENCES[(i * size + j) % len(SENTENCES)] for j in range(size)]} for i in range(n)]


def mlflow_bodies(n: int, size: int) -> list[dict]:
    """The same sentences for ``/invocations``, with the default target that ``tagger serve`` fills in."""
    return [
        {"dataframe_records": [{"text": s, "target": DEFAULT_TARGET} for s in b["sentences"]]}
        for b in tagger_bodies(n, size)
    ]


def start_tagger(topic_run: str, stance_run: str, env: dict, backend: str | None = None) -> Server:
    """``tagger serve`` on the given runs' models (optionally with another transformer backend)."""
    command = [
        sys.executable,
        "-m",
        "train.cli",
        "serve",
        "--topic-model",
        f"runs:/{topic_run}/model",
        "--stance-model",
        f"runs:/{stance_run}/model",
        *(["--backend", backend, "--force-backend"] if backend else []),
    ]
    return Server(command, "/readyz", env)


def save_bundle(topic_run: str, stance_run: str, folder: Path) -> Path:
    """The two runs' models as one topic + stance pyfunc (what ``tagger`` registers), for ``mlflow models serve``."""
    import mlflow

    from train.tracking.packaging import bundle_model_arguments
    from train.tracking.promote import classifier_folder

    folders = {
        task: classifier_folder(f"runs:/{run}/model", str(folder / task))
        for task, run in (("topic", topic_run), ("stance", stance_run))
    }
    path = folder / "bundle"
    mlflow.pyfunc.save_model(str(path), **bundle_model_arguments(folders))
    return path


def load_shapes(
    server: Server, path: str, bodies, requests: int, concurrency: int, open_loop_rate: float | None = 50.0
) -> dict:
    """Open loop at ``open_loop_rate`` requests/s (none: skipped), then one- and 20-sentence requests at
    fixed concurrency; stops ``server`` afterwards."""
    url = server.base + path
    try:
        asyncio.run(closed_loop(url, bodies(50, 1), 2))  # warm-up
        shapes = {}
        if open_loop_rate:
            shapes[f"one_sentence_at_{open_loop_rate:g}_rps"] = asyncio.run(
                open_loop(url, bodies(max(500, requests // 2), 1), open_loop_rate)
            )
        shapes["one_sentence"] = asyncio.run(closed_loop(url, bodies(requests, 1), concurrency))
        shapes["twenty_sentences"] = asyncio.run(closed_loop(url, bodies(max(20, requests // 4), 20), concurrency))
        return shapes
    finally:
        server.stop()


def bench_model(
    topic_run: str,
    stance_run: str,
    requests: int,
    concurrency: int,
    quantised: bool = False,
    open_loop_rate: float = 50.0,
) -> dict:
    """``tagger serve`` (its default ``--backend auto``) and ``mlflow models serve`` on the same topic +
    stance models, one after the other."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    results: dict = {"topic_run": topic_run, "stance_run": stance_run}
    tagger = start_tagger(topic_run, stance_run, env)
    results["tagger_serve"] = load_shapes(tagger, "/v1/tag", tagger_bodies, requests, concurrency, open_loop_rate)
    with tempfile.TemporaryDirectory(prefix="tagger-bench-bundle-") as tmp:
        bundle = save_bundle(topic_run, stance_run, Path(tmp))
        command = ["mlflow", "models", "serve", "-m", str(bundle), "--env-manager", "local", "--host", "127.0.0.1"]
        mlflow_server = Server(command, "/ping", env)
        results["mlflow_models_serve"] = load_shapes(
            mlflow_server, "/invocations", mlflow_bodies, requests, concurrency, open_loop_rate
        )
    if quantised:
        # int8 weights, forced whatever its parity: reported beside the comparison, not in it
        int8 = start_tagger(topic_run, stance_run, env, backend="onnx-int8")
        results["tagger_serve_onnx_int8"] = load_shapes(int8, "/v1/tag", tagger_bodies, requests, concurrency, None)
    results["throughput_vs_mlflow_serve"] = {
        shape: round(
            results["tagger_serve"][shape]["throughput_rps"] / results["mlflow_models_serve"][shape]["throughput_rps"],
            2,
        )
        for shape in ("one_sentence", "twenty_sentences")
    }
    return results


def memory_growth(topic_run: str, stance_run: str) -> dict:
    """Server RSS after 1,000 and after 10,000 one-sentence requests."""
    tagger = start_tagger(topic_run, stance_run, dict(os.environ))
    try:
        url = tagger.base + "/v1/tag"
        asyncio.run(closed_loop(url, tagger_bodies(1000, 1), 8))
        after_1k = rss_mb(tagger.proc.pid)
        asyncio.run(closed_loop(url, tagger_bodies(9000, 1), 8))
        after_10k = rss_mb(tagger.proc.pid)
    finally:
        tagger.stop()
    return {
        "rss_mb_after_1000": round(after_1k, 1),
        "rss_mb_after_10000": round(after_10k, 1),
        "growth_percent": round(100 * (after_10k - after_1k) / after_1k, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="bench/serving.json")
    parser.add_argument(
        "--requests",
        type=int,
        default=2000,
        help="One-sentence requests per server (a quarter as many 20-sentence ones).",
    )
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    quiet_libraries()
    os.sched_setaffinity(0, CLIENT_CPUS)
    # the runs 'tagger promote' would choose among each kind of model
    tfidf_topic = best_run("topic", TFIDF)
    tfidf_stance = best_run("stance", TFIDF)
    if not (tfidf_topic and tfidf_stance):
        raise SystemExit("no TF-IDF runs in the store: run make demo first")
    results = {
        "concurrency": args.concurrency,
        "server_cpus": sorted(SERVER_CPUS),
        "client_cpus": sorted(CLIENT_CPUS),
        "tfidf": bench_model(tfidf_topic, tfidf_stance, args.requests, args.concurrency),
    }
    transformer_topic = best_run("topic", ("transformer",))
    transformer_stance = best_run("stance", ("transformer",)) or tfidf_stance
    if transformer_topic:
        results["transformer"] = bench_model(
            transformer_topic, transformer_stance, args.requests // 4, args.concurrency, True, open_loop_rate=20.0
        )
    else:
        results["transformer"] = {"skipped": "no full transformer topic run: run make demo-full first"}
    try:
        results["memory_tfidf"] = memory_growth(tfidf_topic, tfidf_stance)
    except (httpx.HTTPError, RuntimeError) as exc:
        results["memory_tfidf"] = {"error": str(exc)[-800:]}
    write_results(results, Path(args.output))


if __name__ == "__main__":
    main()
