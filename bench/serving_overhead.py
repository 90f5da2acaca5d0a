"""Throughput cost of the service's observability: drift, ``/metrics`` and the JSON access log, side by side.

Four ``tagger serve`` apps on the same TF-IDF topic and stance models, each in a process of its own
on the same CPU (the first one; the load generator gets the others): ``bare`` (no drift window, no
metrics, no access log), ``drift`` (the drift window only: ``create_app(metrics=False,
access_log=False)``), ``metrics`` (drift and ``/metrics``) and ``on`` (drift, metrics and the access
log, to a file: what ``tagger serve`` does). They run at the same time and are driven in turn, in
short rounds whose order rotates, so that the load of a shared machine falls on all alike.
One-sentence ``/v1/tag`` requests at fixed concurrency; the overhead is ``1 - throughput(variant) /
throughput(bare)`` from the median of the per-round ratios. Goal: < 5 %.

    python bench/serving_overhead.py [--topic-model URI --stance-model URI] --output bench/serving_overhead.json

Without model URIs it takes the best TF-IDF runs in the store (as ``tagger promote`` ranks them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
from serving import CLIENT_CPUS, SERVER_CPUS, TFIDF, Server, closed_loop, tagger_bodies
from throughput import best_run, write_results

from train.cli import quiet_libraries

VARIANTS = {
    "bare": {"metrics": False, "access_log": False},  # and no drift window (see serve)
    "drift": {"metrics": False, "access_log": False},
    "metrics": {"metrics": True, "access_log": False},
    "on": {"metrics": True, "access_log": True},
}
GOAL = 0.05


def serve(variant: str, port: int, topic: str, stance: str) -> None:
    """Internal (``--serve``): one app of ``variant`` on ``port``, as ``tagger serve`` runs it."""
    import logging

    import train.serving.app
    from train.serving.app import create_app, listen, run_server
    from train.serving.tagger import Tagger

    logging.basicConfig(level=logging.WARNING)
    if variant == "bare":  # the baseline only: the service always watches its label mix
        train.serving.app.attach_drift = lambda tagger, settings: tagger
    sock = listen("127.0.0.1", port)
    app = create_app(lambda: Tagger.load(topic, stance), **VARIANTS[variant])
    run_server(app, sock)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="bench/serving_overhead.json")
    parser.add_argument("--topic-model", help="Topic model URI (default: the best TF-IDF topic run).")
    parser.add_argument("--stance-model", help="Stance model URI (default: the best TF-IDF stance run).")
    parser.add_argument("--rounds", type=int, default=9, help="Rounds; each drives every variant once.")
    parser.add_argument("--requests", type=int, default=600, help="One-sentence requests per variant and round.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--serve", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_libraries()
    if args.serve:
        return serve(args.serve, args.port, args.topic_model, args.stance_model)
    topic = args.topic_model or (f"runs:/{run}/model" if (run := best_run("topic", TFIDF)) else None)
    stance = args.stance_model or (f"runs:/{run}/model" if (run := best_run("stance", TFIDF)) else None)
    if not (topic and stance):
        raise SystemExit("no TF-IDF runs in the store: run make demo first, or give --topic-model/--stance-model")
    os.sched_setaffinity(0, CLIENT_CPUS)
    me = [sys.executable, str(Path(__file__).resolve()), "--topic-model", topic, "--stance-model", stance]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    load_before = load_average()
    servers = {}
    try:
        for variant in VARIANTS:
            servers[variant] = Server([*me, "--serve", variant], "/readyz", env)
        names = list(VARIANTS)
        bodies = tagger_bodies(args.requests, 1)
        for name in names:  # warm-up: connections, first requests
            asyncio.run(closed_loop(f"{servers[name].base}/v1/tag", bodies[:100], args.concurrency))
        rounds: list[dict[str, dict]] = []
        began = time.monotonic()
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            rounds.append(
                {
                    name: asyncio.run(closed_loop(f"{servers[name].base}/v1/tag", bodies, args.concurrency))
                    for name in order
                }
            )
        seconds = time.monotonic() - began
        scrape = httpx.get(f"{servers['on'].base}/metrics").text
    finally:
        for server in servers.values():
            server.stop()
    results = {
        "what": "one-sentence /v1/tag requests, TF-IDF topic + stance; throughput of each variant, side by side",
        "models": {"topic": topic, "stance": stance},
        "rounds": args.rounds,
        "requests_per_round": args.requests,
        "concurrency": args.concurrency,
        "server_cpus": sorted(SERVER_CPUS),
        "client_cpus": sorted(CLIENT_CPUS),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "seconds": round(seconds, 1),
        "errors": sum(row[name]["errors"] for row in rounds for name in row),
        "requests_counted_by_metrics": sum(
            float(line.split()[-1]) for line in scrape.splitlines() if line.startswith("tagger_requests_total{")
        ),
        "variants": {},
    }
    for name in VARIANTS:
        rps = [row[name]["throughput_rps"] for row in rounds]
        results["variants"][name] = {
            "throughput_rps_median": round(statistics.median(rps), 1),
            "throughput_rps_rounds": rps,
            "p50_ms_median": round(statistics.median(row[name]["p50_ms"] for row in rounds), 2),
            "p99_ms_median": round(statistics.median(row[name]["p99_ms"] for row in rounds), 2),
        }
        if name != "bare":
            ratios = [row[name]["throughput_rps"] / row["bare"]["throughput_rps"] for row in rounds]
            results["variants"][name]["overhead"] = round(1 - statistics.median(ratios), 4)
    overhead = {name: results["variants"][name]["overhead"] for name in ("drift", "metrics", "on")}
    results["goals"] = {
        "observability_overhead": {
            "goal": f"< {GOAL:.0%} of the throughput of TF-IDF one-sentence requests (drift, metrics, access log)",
            "measured": f"{overhead['on']:.1%} (drift alone: {overhead['drift']:.1%}, drift and metrics: "
            f"{overhead['metrics']:.1%}; load average {results['load_average_before'][0]} on {os.cpu_count()} CPUs)",
            "met": overhead["on"] < GOAL,
        }
    }
    write_results(results, Path(args.output))


if __name__ == "__main__":
    main()
