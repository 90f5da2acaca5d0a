"""The tagging HTTP service: FastAPI under uvicorn, loopback by default.

``POST /v1/tag`` tags ``{"text": ...}`` (split into sentences, with offsets) or ``{"sentences": [...]}``,
with an optional target; ``GET /healthz``, ``/readyz``, ``/v1/models``; ``POST /v1/admin/reload``
(bearer token, JSON, same origin) swaps in the current champions while in-flight requests finish on
the old ones; ``GET /`` is a small tagging page.

Limits keep one request from hurting others: oversize bodies and too many sentences answer 413,
malformed input 422, a body that is not sent in time 408, and a request that runs past its
deadline 503. A request that fails inside a micro-batch fails alone.
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
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, model_validator

from train.data.sentences import MAX_SENTENCE_CHARS, is_blank
from train.domain import DEFAULT_TARGET
from train.errors import DeadlineExceeded, TaggerError
from train.serving.batching import MicroBatcher
from train.serving.tagger import Tagger, sentence_dicts

log = logging.getLogger("tagger")

MAX_TARGET_CHARS = 200


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


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with pydantic's reasons, as FastAPI's own handler, but safe for any input it quotes."""
    return AsciiJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)


def check_admin(request: Request, token: str | None) -> None:
    """Admin calls need the bearer token, a JSON body and no foreign origin (no browser CSRF)."""
    if not token:
        raise HTTPException(403, "admin endpoints are disabled; start the server with TAGGER_ADMIN_TOKEN set")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "cross-origin admin requests are refused")
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
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
) -> FastAPI:
    """Build the app; ``load`` is called now (start-up errors surface before serving) and on reload.

    ``request_timeout`` bounds each request: reading its body, splitting its text and waiting for
    its tags. ``admin_token`` enables ``/v1/admin/reload`` (disabled without one).
    """

    def load_warm() -> Tagger:
        tagger = load()
        tagger.warm_up()  # the first request must not pay for lazily built parts
        return tagger

    state = {"tagger": load_warm()}
    batcher = MicroBatcher(lambda: state["tagger"])
    reload_lock = asyncio.Lock()  # an asyncio lock: a thread lock held across an await deadlocked the loop

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batcher.close()

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
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> dict:
        return {"status": "ready", "models": state["tagger"].versions}

    @app.get("/v1/models")
    def models() -> dict:
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

    @app.post("/v1/tag")
    async def tag(request: TagRequest) -> dict:
        deadline = time.monotonic() + request_timeout
        target = request.target.strip() if request.target else default_target
        try:
            if request.sentences is not None:
                sentences = [{"text": s} for s in request.sentences]
            else:
                sentences = await run_in_threadpool(sentence_dicts, request.text, deadline)
            if len(sentences) > max_sentences:
                raise HTTPException(413, f"{len(sentences)} sentences; at most {max_sentences} per request")
            remaining = max(deadline - time.monotonic(), 0.001)
            results, versions = await asyncio.wait_for(batcher.tag(sentences, target), timeout=remaining)
        except (DeadlineExceeded, TimeoutError):
            raise HTTPException(503, f"request ran past its {request_timeout:g} s deadline; send less text") from None
        return {"target": target, "models": versions, "sentences": results}

    @app.post("/v1/admin/reload")
    async def reload(request: Request) -> dict:
        check_admin(request, admin_token)
        async with reload_lock:
            try:
                state["tagger"] = await run_in_threadpool(load_warm)
            except TaggerError as exc:
                raise HTTPException(500, f"reload failed, still serving the previous models: {exc}") from None
        log.info("reloaded models: %s", state["tagger"].versions)
        return {"status": "reloaded", "models": state["tagger"].versions}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("train.serving").joinpath("static/index.html").read_text(encoding="utf-8")

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


def run_server(app: FastAPI, sock) -> None:
    """Run ``app`` under uvicorn on an already bound socket; SIGTERM stops it within a few seconds."""
    import sys

    import uvicorn

    # hand the GIL between the event loop and the inference thread quickly (default 5 ms adds latency)
    sys.setswitchinterval(0.0005)
    # keep idle connections longer than clients do (httpx: 5 s), so a client never reuses a
    # connection at the moment the server closes it (that race surfaced as rare read errors)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, timeout_keep_alive=75)
    uvicorn.Server(config).run(sockets=[sock])
