"""``/metrics`` (Prometheus text format) and the JSON access log, in-process and scraped by a real Prometheus."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from collections import Counter
from contextlib import contextmanager

import httpx
import pytest
from conftest import ROOT, free_port
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from train.serving.app import create_app
from train.serving.tagger import Tagger


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of a scrape, read by prometheus_client's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Lines(logging.Handler):
    """The access log's lines, as parsed JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.rows.append(json.loads(record.getMessage()))


@contextmanager
def access_lines():
    logger, handler = logging.getLogger("tagger.access"), Lines()
    logger.addHandler(handler)
    try:
        yield handler.rows
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def champions(registry) -> Tagger:
    return Tagger.load()


def test_metrics_count_known_traffic_and_the_access_log_has_no_text(champions):
    app = create_app(lambda: champions, max_body_bytes=2_000, max_sentences=5)
    bodies = [{"sentences": ["Gas exports resumed.", "Troops crossed the border."]}, {"sentences": ["Talks ended."]}]
    bodies.append({"sentences": ["Iran and Iraq signed a trade deal.", "Militias attacked a base.", "Oil rose."]})
    with access_lines() as rows, TestClient(app) as client:
        good = [client.post("/v1/tag", json=b, headers={"X-Request-ID": f"req-{i}"}) for i, b in enumerate(bodies)]
        too_big = client.post("/v1/tag", json={"text": "Gas. " * 1_000})
        too_many = client.post("/v1/tag", json={"sentences": ["Gas."] * 6})
        invalid = client.post("/v1/tag", json={"text": ""})
        missing = client.get("/nowhere")
        scrape = client.get("/metrics")
    assert [r.status_code for r in good] == [200, 200, 200]
    assert (too_big.status_code, too_many.status_code, invalid.status_code, missing.status_code) == (413, 413, 422, 404)
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    values = samples(scrape.text)

    def value(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted(labels.items())))]

    assert value("tagger_requests_total", endpoint="/v1/tag", status="200") == 3
    assert value("tagger_requests_total", endpoint="/v1/tag", status="413") == 2
    assert value("tagger_requests_total", endpoint="/v1/tag", status="422") == 1
    assert value("tagger_requests_total", endpoint="other", status="404") == 1  # unknown paths share one label
    assert value("tagger_rejected_requests_total", status="413", reason="too_large") == 2
    assert value("tagger_rejected_requests_total", status="422", reason="invalid") == 1
    assert value("tagger_rejected_requests_total", status="503", reason="busy") == 0
    assert value("tagger_request_duration_seconds_count", endpoint="/v1/tag") == 6
    assert value("tagger_request_sentences_count") == 3 and value("tagger_request_sentences_sum") == 6
    assert value("tagger_batch_sentences_sum") == 6
    assert value("tagger_model_duration_seconds_count") == value("tagger_batch_sentences_count") >= 1
    assert value("tagger_queue_depth") == 0 and value("tagger_queue_sentences") == 0
    assert value("tagger_reloads_total", outcome="success") == 0
    # the labels counted are exactly those answered
    answered = [row for r in good for row in r.json()["sentences"]]
    topics = Counter(label for row in answered for label in row["topics"] or ["none"])
    stances = Counter(row["stance"] for row in answered)
    labels = {k: v for (n, k), v in values.items() if n == "tagger_predicted_labels_total"}
    counted = {(dict(k)["task"], dict(k)["label"]): v for k, v in labels.items()}
    assert counted == {**{("topic", t): c for t, c in topics.items()}, **{("stance", s): c for s, c in stances.items()}}
    info = {dict(k)["task"]: dict(k) for (n, k), v in values.items() if n == "tagger_model_info" and v == 1}
    assert "tagger-topic v" in info["topic"]["version"] and info["stance"]["backend"] == "sklearn"
    assert info["topic"]["family"] in ("tfidf_logreg", "tfidf_svm")
    # one JSON line per request: the client's id echoed (header and log), else a new one; never the text
    assert [r.headers["x-request-id"] for r in good] == ["req-0", "req-1", "req-2"]
    assert len(too_big.headers["x-request-id"]) == 32
    assert len(rows) == 8 and [row["request_id"] for row in rows[:3]] == ["req-0", "req-1", "req-2"]
    assert rows[3]["request_id"] == too_big.headers["x-request-id"]
    assert [row["status"] for row in rows] == [200, 200, 200, 413, 413, 422, 404, 200]
    assert [row["sentences"] for row in rows[:3]] == [2, 1, 3]
    assert all(row["model_ms"] > 0 and row["total_ms"] >= row["model_ms"] for row in rows[:3])
    assert rows[6]["path"] == "/nowhere" and rows[0]["method"] == "POST"
    assert not any("text" in row for row in rows) and "Gas exports" not in json.dumps(rows)


def test_log_text_puts_the_sentences_in_the_access_log_and_apps_have_registries_of_their_own(champions):
    app = create_app(lambda: champions, log_text=True)
    other = create_app(lambda: champions)  # a second app in the process: its own registry, its own counts
    with access_lines() as rows, TestClient(app) as client, TestClient(other) as client_other:
        r = client.post("/v1/tag", json={"sentences": ["Gas exports resumed."]}, headers={"X-Request-ID": "bad id!"})
        client_other.post("/v1/tag", json={"sentences": ["Talks ended."]})
        client_other.post("/v1/tag", json={"sentences": ["Talks ended."]})
        scrape = samples(client.get("/metrics").text)
    assert r.status_code == 200 and len(r.headers["x-request-id"]) == 32  # an unusable id is replaced
    assert rows[0]["text"] == ["Gas exports resumed."] and rows[0]["request_id"] == r.headers["x-request-id"]
    assert scrape[("tagger_requests_total", (("endpoint", "/v1/tag"), ("status", "200")))] == 1
    bare = create_app(lambda: champions, metrics=False, access_log=False)
    with access_lines() as rows, TestClient(bare) as client:
        assert client.post("/v1/tag", json={"sentences": ["Talks ended."]}).status_code == 200
        assert client.get("/metrics").status_code == 404
    assert rows == []


# --- a real Prometheus server scraping a real tagger serve -----------------------------------------------------

PROMETHEUS = shutil.which("prometheus")


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus binary (make services installs Debian's package)")
def test_prometheus_scrapes_the_request_counter(server, tmp_path):
    """Prometheus scrapes ``/metrics`` each second; its query API returns the requests counted."""
    target = server.removeprefix("http://")
    before = httpx.get(f"{server}/metrics").text
    start = sum(
        s.value
        for f in text_string_to_metric_families(before)
        for s in f.samples
        if s.name == "tagger_requests_total" and s.labels == {"endpoint": "/v1/tag", "status": "200"}
    )
    for i in range(7):
        assert httpx.post(f"{server}/v1/tag", json={"sentences": [f"Gas deal {i} was signed."]}).status_code == 200
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: tagger\n    static_configs:\n      - targets: ['{target}']\n",
        encoding="utf-8",
    )
    port = free_port()
    log = open(tmp_path / "prometheus.log", "w+b")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    query = 'tagger_requests_total{job="tagger",endpoint="/v1/tag",status="200"}'
    found = None
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and found is None:
            time.sleep(0.5)
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=2)
            except httpx.HTTPError:
                continue
            result = r.json()["data"]["result"] if r.status_code == 200 else []
            if result:
                found = float(result[0]["value"][1])
        # every query of the shipped Grafana dashboard is PromQL that this Prometheus accepts
        dashboard = json.loads((ROOT / "docs/grafana/tagger-dashboard.json").read_text(encoding="utf-8"))
        queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
        answers = [
            httpx.get(
                f"http://127.0.0.1:{port}/api/v1/query",
                params={"query": q.replace("$__rate_interval", "1m").replace("$job", ".*")},
                timeout=5,
            ).json()
            for q in queries
        ]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.seek(0)
        output = log.read().decode(errors="replace")
        log.close()
    assert found == start + 7, output[-2000:]
    assert len(queries) >= 10 and [a["status"] for a in answers] == ["success"] * len(queries), answers
