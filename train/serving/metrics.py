"""Prometheus metrics and the JSON access log of the tagging service.

Each app has its own ``prometheus_client.CollectorRegistry`` (not the process-wide default, so that
several apps can live in one process, as in tests and benches): ``app.state.metrics`` is the
``ServiceMetrics`` and ``app.state.metrics.registry`` the registry. Another part of the service adds
its own metrics by registering a collector there (``registry.register(collector)``) or by creating
metrics with ``registry=app.state.metrics.registry``. ``GET /metrics`` serves the registry in the
Prometheus text format.

Metrics (all names start with ``tagger_``; the ``_total``/``_bucket``/``_sum``/``_count`` suffixes
are Prometheus's own):

- ``tagger_requests_total{endpoint, status}``: HTTP requests answered (endpoint: the route's path,
  ``other`` for unknown paths);
- ``tagger_request_duration_seconds{endpoint}``: time from the request's arrival to its answer;
- ``tagger_model_duration_seconds``: time of each model call (one micro-batch, topic and stance);
- ``tagger_request_sentences``: sentences per ``/v1/tag`` request that reached the models;
- ``tagger_batch_sentences``: sentences per micro-batch;
- ``tagger_queue_depth``: ``/v1/tag`` requests waiting for or being tagged;
- ``tagger_queue_sentences``: sentences of those requests not tagged yet;
- ``tagger_rejected_requests_total{status, reason}``: refused requests: 413 ``too_large``,
  408 ``body_timeout``, 422 ``invalid``, 503 ``busy`` (queue or deadline);
- ``tagger_reloads_total{outcome}``: ``/v1/admin/reload`` calls, ``success`` or ``failure``;
- ``tagger_model_info{task, version, backend, family}``: the models being served (value 1);
- ``tagger_predicted_labels_total{task, label}``: labels given (topic ``none``: a sentence with no topic).

The access log is one JSON object per request on the ``tagger.access`` logger (stderr): ``request_id``
(the client's ``X-Request-ID`` when it sent a usable one, else a new one; always sent back in the
``X-Request-ID`` response header), ``method``, ``path``, ``status``, ``total_ms``, ``model_ms``,
``sentences``, and the request's text only when the service runs with ``--log-text``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections import Counter as Tally
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

__all__ = ["CONTENT_TYPE", "AccessLog", "ServiceMetrics", "current_request"]

# what generate_latest writes, and what prometheus_client's own handlers answer without an Accept header
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SENTENCE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
REJECTED = {413: "too_large", 408: "body_timeout", 422: "invalid", 503: "busy"}
NO_TOPIC = "none"

# the per-request record that the endpoint and the batcher fill in (sentences, model time, text); a
# mutable dict in a context variable, so that tasks started for the request write into the same one
_REQUEST: ContextVar[dict[str, Any] | None] = ContextVar("tagger_request", default=None)


def current_request() -> dict[str, Any] | None:
    """The access record of the request being answered in this context (None outside a request)."""
    return _REQUEST.get()


class ServiceMetrics:
    """The service's metrics, on a registry of their own; children with fixed labels are made once."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("tagger_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.request_seconds = Histogram(
            "tagger_request_duration_seconds",
            "Seconds from a request's arrival to its answer",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "tagger_model_duration_seconds",
            "Seconds per model call (one micro-batch through topic and stance)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_sentences = Histogram(
            "tagger_request_sentences", "Sentences per tagging request", buckets=SENTENCE_BUCKETS, registry=r
        )
        self.batch_sentences = Histogram(
            "tagger_batch_sentences", "Sentences per micro-batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("tagger_queue_depth", "Tagging requests waiting or being tagged", registry=r)
        self.queue_sentences = Gauge("tagger_queue_sentences", "Sentences queued, not tagged yet", registry=r)
        rejected = Counter(
            "tagger_rejected_requests", "Requests refused, by status and reason", ["status", "reason"], registry=r
        )
        self.rejected = {status: rejected.labels(str(status), reason) for status, reason in REJECTED.items()}
        reloads = Counter("tagger_reloads", "Model reloads through /v1/admin/reload", ["outcome"], registry=r)
        self.reloads = {outcome: reloads.labels(outcome) for outcome in ("success", "failure")}
        self.model_info = Info("tagger_model", "The models being served", ["task"], registry=r)
        self.labels = Counter("tagger_predicted_labels", "Labels predicted, per task", ["task", "label"], registry=r)
        self._label_children: dict[tuple[str, str], Any] = {}
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        children = self._request_children.get((endpoint, status))
        if children is None:
            children = (self.requests.labels(endpoint, str(status)), self.request_seconds.labels(endpoint))
            self._request_children[(endpoint, status)] = children
        children[0].inc()
        children[1].observe(seconds)
        rejected = self.rejected.get(status)
        if rejected is not None:
            rejected.inc()

    def batch(self, sentences: int, seconds: float, results: list[dict]) -> None:
        """Count one micro-batch (called on the inference thread: prometheus_client's metrics are thread-safe)."""
        self.batch_sentences.observe(sentences)
        self.model_seconds.observe(seconds)
        topics = Tally(label for row in results for label in (row["topics"] or (NO_TOPIC,)))
        for label, count in topics.items():
            self._label("topic", label).inc(count)
        for label, count in Tally(row["stance"] for row in results).items():
            self._label("stance", label).inc(count)

    def _label(self, task: str, label: str):
        child = self._label_children.get((task, label))
        if child is None:
            child = self._label_children[(task, label)] = self.labels.labels(task, label)
        return child

    def models(self, tagger: Any) -> None:
        """Set the info metric to the models of ``tagger`` (after start and each reload)."""
        from train.registry import family_name

        for task in ("topic", "stance"):
            model = getattr(tagger, task)
            try:
                family = family_name(type(model))
            except ValueError:  # a class not registered (the label is informative only)
                family = type(model).__name__
            info = {"version": tagger.versions.get(task, ""), "backend": getattr(model, "backend", model.backends[0])}
            self.model_info.labels(task).info({**info, "family": family})

    def latest(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def access_logger() -> logging.Logger:
    """``tagger.access``: bare JSON lines on stderr (not the CLI's time-stamped format), not propagated."""
    logger = logging.getLogger("tagger.access")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not any(getattr(handler, "tagger_access", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.tagger_access = True
        logger.addHandler(handler)
    return logger


class AccessLog:
    """Pure ASGI middleware (outermost): request id, metrics of every answer (those of the body limits
    too) and one JSON access-log line per HTTP request.

    ``metrics`` None: no metrics; ``log`` False: no access log (the request id is still given).
    """

    def __init__(self, app, metrics: ServiceMetrics | None, log: bool = True, log_text: bool = False):
        self.app = app
        self.metrics = metrics
        self.logger = access_logger() if log else None
        self.log_text = log_text
        self._paths: frozenset[str] | None = None

    def endpoint(self, scope) -> str:
        """The path when it is a route of the app, else ``other`` (unknown paths must not grow the label set)."""
        if self._paths is None:
            app = scope.get("app")
            routes = getattr(getattr(app, "router", None), "routes", ())
            self._paths = frozenset(getattr(route, "path", "") for route in routes)
        path = scope["path"]
        return path if path in self._paths else "other"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began = time.perf_counter()
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value.decode("latin-1").strip()
                request_id = given if _ID.fullmatch(given) else None
                break
        request_id = request_id or uuid.uuid4().hex
        record: dict[str, Any] = {"status": 500}
        if self.log_text:
            record["text"] = None  # the batcher fills it in
        token = _REQUEST.set(record)
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _REQUEST.reset(token)
            seconds = time.perf_counter() - began
            if self.metrics is not None:
                self.metrics.request(self.endpoint(scope), record["status"], seconds)
            if self.logger is not None:
                line = {
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": record["status"],
                    "total_ms": round(seconds * 1000, 2),
                    "model_ms": round(record.get("model_seconds", 0.0) * 1000, 2),
                    "sentences": record.get("sentences", 0),
                }
                if self.log_text:
                    line["text"] = record["text"]
                self.logger.info(json.dumps(line, ensure_ascii=False))
