"""The tagging HTTP service: FastAPI under uvicorn, loopback by default.

``POST /v1/tag`` tags ``{"text": ...}`` (split into sentences, with offsets) or ``{"sentences": [...]}``,
with an optional target; ``GET /healthz``, ``/readyz``, ``/v1/models``; ``POST /v1/admin/reload``
(bearer token, JSON, no origin or an allowed one) swaps in the current champions while in-flight
requests finish on the old ones; ``GET /`` is a small tagging page; ``GET /metrics`` the Prometheus
metrics, and each request is logged as one JSON line on ``tagger.access`` (``train.serving.metrics``).

Limits keep one request from hurting others: oversize bodies and too many sentences answer 413,
malformed input 422, a body that is not sent in time 408, and a request that runs, or would wait,
past its deadline 503. A request that fails inside a micro-batch fails alone (500). Health checks
run on the event loop, and splitting and tagging on threads of their own, so a flood of big texts
never delays them. Connections are limited in number, in the time to send request headers and in
idle keep-alive time (``GuardedHttpToolsProtocol``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, model_validator

from train.data.sentences import MAX_SENTENCE_CHARS, is_blank
from train.domain import DEFAULT_TARGET
from train.errors import DeadlineExceeded, TaggerError
from train.models.explain import Budget
from train.serving.batching import Busy, MicroBatcher, ModelCallError, Splitter, guarded
from train.serving.drift import DriftCollector, DriftSettings
from train.serving.drift import attach as attach_drift
from train.serving.metrics import CONTENT_TYPE, AccessLog, ServiceMetrics
from train.serving.tagger import Tagger

log = logging.getLogger("tagger")

MAX_TARGET_CHARS = 200
EXPLAIN_SECONDS = 0.2  # occlusion (non-linear families): estimated model seconds per model and request, at most


def _check_unicode(name: str, value: str) -> None:
    """Refuse text that cannot be encoded (a lone surrogate such as ``"\\ud800"`` in the JSON)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"'{name}' has an unpaired surrogate at character {exc.start}; send valid Unicode") from None


class TagRequest(BaseModel):
    """Either ``text`` (an article, split into sentences) or ``sentences``, plus an optional target."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="Text to split into sentences and tag.")
    sentences: list[str] | None = Field(
        None, description=f"Sentences to tag as given (at most {MAX_SENTENCE_CHARS} characters each)."
    )
    target: str | None = Field(
        None, description=f'Stance target, e.g. "closer Iran–Iraq ties" (at most {MAX_TARGET_CHARS} characters).'
    )
    explain: bool = Field(False, description="Add each sentence's explanation: the words behind each label's score.")
    top_k: int = Field(5, ge=1, le=50, description="With explain: words listed per label and direction.")
    explain_all_classes: bool = Field(False, description="With explain: every stance class, not only the tagged one.")

    @model_validator(mode="after")
    def _one_input(self) -> TagRequest:
        if (self.text is None) == (self.sentences is None):
            raise ValueError("give exactly one of 'text' or 'sentences'")
        if self.text is not None:
            _check_unicode("text", self.text)
            if is_blank(self.text):
                raise ValueError("'text' is empty")
        if self.sentences is not None:
            if not self.sentences:
                raise ValueError("'sentences' is empty")
            for i, sentence in enumerate(self.sentences):
                _check_unicode(f"sentences[{i}]", sentence)
                if is_blank(sentence):
                    raise ValueError(f"'sentences[{i}]' is empty")
                if len(sentence) > MAX_SENTENCE_CHARS:
                    raise ValueError(
                        f"'sentences[{i}]' has {len(sentence)} characters; at most {MAX_SENTENCE_CHARS} "
                        "(send long text as 'text' to have it split)"
                    )
        if self.target is not None:
            _check_unicode("target", self.target)
            if is_blank(self.target):
                raise ValueError("'target' is an empty string; leave it out to use the default target")
            if len(self.target) > MAX_TARGET_CHARS:
                raise ValueError(f"'target' has {len(self.target)} characters; at most {MAX_TARGET_CHARS}")
        return self


class BodyLimit:
    """Pure ASGI middleware: 413 for bodies over the limit, 408 for bodies not sent within
    ``read_timeout`` seconds, 422 for bodies that are not UTF-8. An oversize body is read to its end
    (up to ``drain_bytes``) before the 413, so every client reads the answer.

    It buffers the (bounded) body once and replays it, without the overhead of ``BaseHTTPMiddleware``.
    """

    def __init__(self, app, max_body_bytes: int, read_timeout: float = 10.0, drain_bytes: int = 64_000_000):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout
        self.drain_bytes = drain_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        deadline = time.monotonic() + self.read_timeout
        too_large = f"request body over {self.max_body_bytes} bytes"
        while more:
            try:
                message = await asyncio.wait_for(receive(), timeout=max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                if size > self.max_body_bytes:
                    break  # draining an oversize body: answer 413 with what arrived
                return await self._reply(send, 408, f"request body not received within {self.read_timeout:g} s")
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                # keep reading, keeping nothing (as nginx lingers), so that a client still sending sees
                # the 413 instead of a broken pipe; bounded in bytes and time
                if size > self.drain_bytes:
                    break
                continue
            chunks.append(chunk)
        if size > self.max_body_bytes:
            return await self._reply(send, 413, too_large)
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return await self._reply(send, 422, f"request body is not valid UTF-8 (byte {exc.start})")
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    @staticmethod
    async def _reply(send, status: int, detail: str) -> None:
        response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})
        await response({"type": "http"}, None, send)


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error that echoes a lone surrogate back still encodes."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


class FastJSONResponse(JSONResponse):
    """JSON serialised by orjson in one pass (UTF-8, compact), without FastAPI's ``jsonable_encoder`` walk over
    every value: the answers of ``/v1/tag`` hold a dict of scores per sentence."""

    def render(self, content) -> bytes:
        import orjson

        return orjson.dumps(content, default=jsonable_encoder, option=orjson.OPT_SERIALIZE_NUMPY)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with pydantic's reasons, as FastAPI's own handler, but safe for any input it quotes."""
    return AsciiJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)


def normalize_origin(origin: str) -> str | None:
    """``scheme://host:port`` of a web origin (lower-case, default port written out); None when
    ``origin`` is not one (``null``, another scheme, a path, user info or a bad port)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None:
        return None
    if parts.path or parts.query or parts.fragment:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port or (443 if parts.scheme == 'https' else 80)}"


def admin_origins(origins: list[str] | tuple[str, ...]) -> frozenset[str]:
    """The normalized allow-list of ``--admin-origin`` values; a value that is not an origin is an error."""
    allowed = set()
    for origin in origins:
        normalized = normalize_origin(origin.removesuffix("/"))
        if normalized is None:
            raise TaggerError(f"--admin-origin {origin!r}: not a web origin; give scheme://host[:port]")
        allowed.add(normalized)
    return frozenset(allowed)


def check_admin(request: Request, token: str | None, origins: frozenset[str] = frozenset()) -> None:
    """Admin calls need the bearer token, JSON, and either no ``Origin`` (curl, scripts) or one in the
    allow-list ``origins``, compared by scheme, host and port (no browser CSRF).

    An ``Origin`` equal to the ``Host`` header is not trusted for that: under DNS rebinding a foreign
    page reaches the server under its own host name.
    """
    if not token:
        raise HTTPException(403, "admin endpoints are disabled; start the server with TAGGER_ADMIN_TOKEN set")
    origin = request.headers.get("origin")
    if origin is not None and normalize_origin(origin) not in origins:
        raise HTTPException(403, "admin requests from this origin are refused (allow it with --admin-origin)")
    if origin is None and request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise HTTPException(403, "cross-origin admin requests are refused")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise HTTPException(415, "admin requests must be sent as application/json")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(401, "missing or wrong admin token", headers={"WWW-Authenticate": "Bearer"})


def create_app(
    load: Callable[[], Tagger],
    *,
    max_body_bytes: int = 1_000_000,
    max_sentences: int = 1_000,
    default_target: str = DEFAULT_TARGET,
    request_timeout: float = 30.0,
    admin_token: str | None = None,
    admin_origin: list[str] | tuple[str, ...] = (),
    log_text: bool = False,
    metrics: bool = True,
    access_log: bool = True,
    drift: DriftSettings | None = None,
) -> FastAPI:
    """Build the app; ``load`` is called now (start-up errors surface before serving) and on reload.

    ``log_text`` puts the tagged sentences in the access log. ``metrics`` and ``access_log`` False
    (internal: the overhead bench) leave out ``/metrics`` and the access log.

    ``request_timeout`` bounds each request: reading its body, splitting its text and waiting for
    its tags. ``admin_token`` enables ``/v1/admin/reload`` (disabled without one); ``admin_origin``
    lists the web origins allowed to call it from a browser (none by default). ``drift``: how the label
    mix of served sentences is watched (``train.serving.drift``; default settings when None).
    """
    origins = admin_origins(admin_origin)
    drift_settings = drift or DriftSettings()

    def load_warm() -> Tagger:
        tagger = load()
        tagger.warm_up()  # the first request must not pay for lazily built parts
        return tagger

    state = {"tagger": load_warm()}
    service_metrics = ServiceMetrics() if metrics else None
    if service_metrics is not None:
        service_metrics.models(state["tagger"])
    batcher = MicroBatcher(lambda: state["tagger"], metrics=service_metrics)
    batcher.calibrate(state["tagger"])
    attach_drift(state["tagger"], drift_settings)  # after warm-up and calibration: it sees served sentences only
    splitter = Splitter(max_sentences)
    reload_lock = asyncio.Lock()  # an asyncio lock: a thread lock held across an await deadlocked the loop
    page_html = resources.files("train.serving").joinpath("static/index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batcher.close()
        splitter.close()
        if state["tagger"].drift is not None:
            state["tagger"].drift.close()

    # FastAPI's /docs loads Swagger UI from a CDN and is blank offline; fastapi-offline serves the
    # same assets from the installed package
    app = FastAPIOffline(
        title="tagger",
        version="1",
        description="Topic and stance tagging of news sentences.",
        lifespan=lifespan,
        redoc_url=None,
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes, read_timeout=min(request_timeout, 10.0))
    # outermost (added last): it sees every answer, the body limits' included
    app.add_middleware(AccessLog, metrics=service_metrics, log=access_log, log_text=log_text)
    app.state.metrics = service_metrics  # its .registry takes other parts' collectors
    app.add_exception_handler(RequestValidationError, validation_error)

    # the endpoints that do no work are `async def`: answered on the event loop, they never wait for a
    # thread of the pool that other work may have taken
    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"status": "ready", "models": state["tagger"].versions}

    @app.get("/v1/models")
    async def models() -> dict:
        tagger = state["tagger"]
        return {
            "versions": tagger.versions,
            "topic_labels": tagger.topic.labels,
            "stance_labels": tagger.stance.labels,
            "default_target": default_target,
            "limits": {
                "max_body_bytes": max_body_bytes,
                "max_sentences": max_sentences,
                "max_sentence_chars": MAX_SENTENCE_CHARS,
                "request_timeout_s": request_timeout,
            },
        }

    async def explain_into(results: list[dict], target: str, request: TagRequest, deadline: float) -> None:
        """Add each sentence's ``explanation`` (``train.models.explain``), computed on the inference thread
        within the deadline: every topic, and the tagged stance class (or all of them)."""
        remaining = max(deadline - time.monotonic(), 0.001)
        stance = "all" if request.explain_all_classes else [[row["stance"]] for row in results]
        budget = Budget(seconds=min(EXPLAIN_SECONDS, remaining / 4))
        explain = state["tagger"].explain_sentences
        explained = await asyncio.wait_for(
            batcher.run(explain, results, target, request.top_k, stance, budget), timeout=remaining
        )
        for row, explanation in zip(results, explained, strict=True):
            row["explanation"] = explanation

    @app.post("/v1/tag", response_class=FastJSONResponse)
    async def tag(request: TagRequest) -> FastJSONResponse:
        deadline = time.monotonic() + request_timeout
        target = request.target.strip() if request.target else default_target
        try:
            if request.sentences is not None:
                sentences = [{"text": s} for s in request.sentences]
                if len(sentences) > max_sentences:
                    raise HTTPException(413, f"{len(sentences)} sentences; at most {max_sentences} per request")
            else:
                sentences = await splitter.split(request.text, deadline)
                if len(sentences) > max_sentences:  # splitting stopped there
                    raise HTTPException(413, f"over {max_sentences} sentences; at most {max_sentences} per request")
            remaining = max(deadline - time.monotonic(), 0.001)
            results, versions = await asyncio.wait_for(batcher.tag(sentences, target, deadline), timeout=remaining)
            if request.explain:
                await explain_into(results, target, request, deadline)
        except Busy as exc:
            retry = {"Retry-After": str(max(1, round(exc.retry_after)))}
            raise HTTPException(503, f"{exc}; retry later or send less text", headers=retry) from None
        except (DeadlineExceeded, TimeoutError):
            raise HTTPException(503, f"request ran past its {request_timeout:g} s deadline; send less text") from None
        except ModelCallError as exc:
            raise HTTPException(500, f"tagging failed: {exc}") from None
        return FastJSONResponse({"target": target, "models": versions, "sentences": results})

    @app.post("/v1/admin/reload")
    async def reload(request: Request) -> dict:
        check_admin(request, admin_token, origins)
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            body = None
        if not isinstance(body, dict):
            raise HTTPException(422, "the admin request body must be a JSON object, e.g. {}")
        async with reload_lock:
            try:
                previous = state["tagger"]
                state["tagger"] = await run_in_threadpool(guarded, lambda: attach_drift(load_warm(), drift_settings))
                if previous.drift is not None:  # new models, new window
                    previous.drift.close()
            except ModelCallError as exc:
                if service_metrics is not None:
                    service_metrics.reloads["failure"].inc()
                raise HTTPException(500, f"reload failed, still serving the previous models: {exc}") from None
        if service_metrics is not None:
            service_metrics.reloads["success"].inc()
            service_metrics.models(state["tagger"])
        log.info("reloaded models: %s", state["tagger"].versions)
        return {"status": "reloaded", "models": state["tagger"].versions}

    if service_metrics is not None:

        @app.get("/metrics", include_in_schema=False)
        async def prometheus_metrics() -> Response:
            """The Prometheus text format (on the event loop: the queue gauges read the batcher's state)."""
            return Response(service_metrics.latest(), media_type=CONTENT_TYPE)

    @app.get("/v1/drift")
    async def drift_report() -> dict:
        """Per task: the window, its estimated label priors, the training priors, divergence and alarm."""
        tagger = state["tagger"]
        return {"models": tagger.versions, **(tagger.drift.report() if tagger.drift is not None else {})}

    if service_metrics is not None:
        service_metrics.registry.register(DriftCollector(lambda: state["tagger"].drift))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return page_html

    return app


def listen(host: str, port: int):
    """A listening socket on ``host:port``; a port in use (or a bad address) is a clear error now."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TaggerError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise TaggerError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def guarded_protocol(header_timeout: float, max_connections: int, max_header_bytes: int = 65_536) -> type:
    """uvicorn's httptools protocol with the connection limits uvicorn lacks.

    uvicorn arms its keep-alive timer only after a response, so a client that connects and sends
    nothing, or trickles its headers a byte at a time, holds a connection for ever. Here request
    headers must be complete within ``header_timeout`` seconds of the connection opening or of the
    request's first byte (408, or a plain close when nothing came), and within ``max_header_bytes``
    (431); a connection beyond ``max_connections`` open ones is answered 503 and closed at once.
    """
    from http import HTTPStatus

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _header_bytes = 0

        def connection_made(self, transport) -> None:  # noqa: ANN001 - uvicorn's signature
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self._refuse(503, f"over {max_connections} open connections; retry later")
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._header_timer is not None and not self.transport.is_closing():
                # counted before parsing: headers that arrive whole in one read are parsed (and the
                # request dispatched) within super().data_received
                end = data.find(b"\r\n\r\n")
                self._header_bytes += len(data) if end < 0 else end + 4
                if self._header_bytes > max_header_bytes:
                    self._refuse(431, f"request headers over {max_header_bytes} bytes")
                    return
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:  # the next request on a kept-alive connection
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def _arm(self) -> None:
            self._header_bytes = 0
            self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self._header_bytes:
                self._refuse(408, f"request headers not received within {header_timeout:g} s")
            elif not self.transport.is_closing():
                self.transport.close()  # nothing was sent: close, as an idle keep-alive connection is

        def _refuse(self, status: int, message: str) -> None:
            self._disarm()
            if self.transport.is_closing():
                return
            body = json.dumps({"detail": message}).encode()
            head = (
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            self.transport.write(head.encode() + body)
            self.transport.close()

    return GuardedHttpToolsProtocol


def run_server(
    app: FastAPI,
    sock,
    *,
    header_timeout: float = 10.0,
    keep_alive_timeout: float = 15.0,
    max_connections: int = 1000,
) -> None:
    """Run ``app`` under uvicorn on an already bound socket; SIGTERM stops it within a few seconds.

    Connections: request headers within ``header_timeout`` s, idle keep-alive for ``keep_alive_timeout``
    s, at most ``max_connections`` open (and as many requests in flight), beyond that 503.
    """
    import resource
    import sys

    import uvicorn

    # hand the GIL between the event loop and the inference thread quickly (default 5 ms adds latency)
    sys.setswitchinterval(0.0005)
    # a file descriptor per connection, plus the models' files and threads
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        if limit < wanted:
            log.warning("open-file limit %d is below --max-connections %d + 256", limit, max_connections)
    # keep idle connections longer than clients do (httpx: 5 s), so a client never reuses a
    # connection at the moment the server closes it (that race surfaced as rare read errors)
    config = uvicorn.Config(
        app,
        http=guarded_protocol(header_timeout, max_connections),
        log_level="warning",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=keep_alive_timeout,
        limit_concurrency=max_connections + 1,  # the protocol refuses connections; this bounds requests in flight
    )
    uvicorn.Server(config).run(sockets=[sock])
