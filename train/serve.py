"""The tagging HTTP service: FastAPI under uvicorn, loopback by default.

``POST /v1/tag`` tags ``{"text": ...}`` (split into sentences, with offsets) or ``{"sentences": [...]}``,
with an optional target; ``GET /healthz``, ``/readyz``, ``/v1/models``; ``POST /v1/admin/reload``
(loopback only) swaps in the current champions while in-flight requests finish on the old ones;
``GET /`` is a small tagging page. Oversize bodies and too many sentences answer 413; malformed
input answers 422 with the reason.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from importlib import resources

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from train.batching import MicroBatcher
from train.errors import TaggerError
from train.tagging import DEFAULT_TARGET, Tagger, sentence_dicts

log = logging.getLogger("tagger")


class TagRequest(BaseModel):
    """Either ``text`` (an article, split into sentences) or ``sentences``, plus an optional target."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="Text to split into sentences and tag.")
    sentences: list[str] | None = Field(None, description="Sentences to tag as given.")
    target: str | None = Field(None, description='Stance target, e.g. "closer Iran–Iraq ties".')

    @model_validator(mode="after")
    def _one_input(self) -> TagRequest:
        if (self.text is None) == (self.sentences is None):
            raise ValueError("give exactly one of 'text' or 'sentences'")
        if self.text is not None and not self.text.strip():
            raise ValueError("'text' is empty")
        if self.sentences is not None:
            if not self.sentences:
                raise ValueError("'sentences' is empty")
            for i, sentence in enumerate(self.sentences):
                if not sentence.strip():
                    raise ValueError(f"'sentences[{i}]' is empty")
        if self.target is not None and not self.target.strip():
            raise ValueError("'target' is an empty string; leave it out to use the default target")
        return self


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class BodyLimit:
    """Pure ASGI middleware: 413 for bodies over the limit, 422 for bodies that are not UTF-8.

    It buffers the (bounded) body once and replays it, without the overhead of ``BaseHTTPMiddleware``.
    """

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._reply(send, 413, f"request body over {self.max_body_bytes} bytes")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await self._reply(send, 413, f"request body over {self.max_body_bytes} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
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
        await JSONResponse({"detail": detail}, status_code=status)({"type": "http"}, None, send)


def create_app(
    load: Callable[[], Tagger],
    *,
    max_body_bytes: int = 1_000_000,
    max_sentences: int = 1_000,
    default_target: str = DEFAULT_TARGET,
) -> FastAPI:
    """Build the app; ``load`` is called now (start-up errors surface before serving) and on reload."""
    state = {"tagger": load()}
    batcher = MicroBatcher(lambda: state["tagger"])
    reload_lock = threading.Lock()
    app = FastAPI(
        title="tagger",
        version="1",
        description="Topic and stance tagging of news sentences.",
        on_shutdown=[batcher.close],
    )

    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes)

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
            "limits": {"max_body_bytes": max_body_bytes, "max_sentences": max_sentences},
        }

    @app.post("/v1/tag")
    async def tag(request: TagRequest) -> dict:
        target = request.target.strip() if request.target else default_target
        if request.sentences is not None:
            sentences = [{"text": s} for s in request.sentences]
        else:
            sentences = await run_in_threadpool(sentence_dicts, request.text)
        if len(sentences) > max_sentences:
            raise HTTPException(413, f"{len(sentences)} sentences; at most {max_sentences} per request")
        results, versions = await batcher.tag(sentences, target)
        return {"target": target, "models": versions, "sentences": results}

    @app.post("/v1/admin/reload")
    async def reload(request: Request) -> dict:
        if not _is_loopback(request.client.host if request.client else None):
            raise HTTPException(403, "reload is allowed from loopback only")
        with reload_lock:
            try:
                state["tagger"] = await run_in_threadpool(load)
            except TaggerError as exc:
                raise HTTPException(500, f"reload failed, still serving the previous models: {exc}") from None
        log.info("reloaded models: %s", state["tagger"].versions)
        return {"status": "reloaded", "models": state["tagger"].versions}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("train").joinpath("static/index.html").read_text(encoding="utf-8")

    return app
