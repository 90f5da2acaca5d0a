"""Work queues of the HTTP service: micro-batched tagging and sentence splitting, off the event loop.

A TF-IDF or transformer ``predict_proba`` costs about the same for 1 sentence as for 20 (per-call
overhead dominates), so requests that arrive while a batch is running are coalesced into the next
one. Inference runs on one dedicated thread: the event loop stays free for health checks, and
threads do not fight over the GIL. A batch holds at most ``max_batch_sentences`` sentences and
``max_batch_chars`` characters, taken from the requests with the least work left first, so a
one-sentence request waits for at most one (bounded) batch however many big ones are queued.

Sentence splitting runs on two single-thread lanes of its own (short texts, long texts), never on
the thread pool that other endpoints use, so a flood of big texts only queues behind itself.

Both queues refuse early: a request whose estimated wait (from the measured speed of the work
ahead of it) would pass its deadline raises ``Busy`` before any work is done on it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from train.errors import TaggerError
from train.serving.metrics import ServiceMetrics, current_request
from train.serving.tagger import SPLIT_BLOCK_CHARS, Tagger, sentence_dicts

log = logging.getLogger("tagger")


class ModelCallError(RuntimeError):
    """A model call failed; the message is one line (the exception's type and first line)."""


class Busy(Exception):
    """The queue ahead is longer than the request's deadline allows; ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


def guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, with anything it raises turned into ``ModelCallError``.

    Model code is third-party: a ``SystemExit`` or ``KeyboardInterrupt`` raised in it would otherwise
    travel through the awaiting task and stop the event loop. Here it fails only the call.
    """
    try:
        return fn(*args)
    except TaggerError as exc:  # a clear reason already (e.g. a reload that finds no champion)
        raise ModelCallError(str(exc)) from None
    except BaseException as exc:  # noqa: BLE001 - model code may raise anything, SystemExit included
        log.error("model call failed", exc_info=exc)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ModelCallError(f"{type(exc).__name__}: {first}" if first else type(exc).__name__) from None


class Speed:
    """A running estimate of the cost of work (seconds per unit, per call): 0 until measured."""

    def __init__(self, small: int = 0) -> None:
        self.small = small  # calls of at most this many units measure the cost per call
        self.per_unit: float | None = None
        self.per_call: float | None = None

    def add(self, units: int, seconds: float) -> None:
        """Fold in one measured call."""
        if units <= self.small:
            self.per_call = seconds if self.per_call is None else 0.8 * self.per_call + 0.2 * seconds
        else:
            unit = max(seconds - (self.per_call or 0.0), 0.0) / units
            self.per_unit = unit if self.per_unit is None else 0.8 * self.per_unit + 0.2 * unit

    def seconds(self, units: float, calls: int = 1) -> float:
        return units * (self.per_unit or 0.0) + calls * (self.per_call or 0.0)


def refuse_if_late(wait: float, deadline: float, what: str) -> None:
    """``Busy`` when starting after ``wait`` seconds from now would pass ``deadline``."""
    if time.monotonic() + wait > deadline:
        raise Busy(f"server busy: {what} would take about {wait:.1f} s, past this request's deadline", wait)


class _Job:
    """One request's sentences, tagged in slices; ``ends[i]``: characters in its first ``i`` sentences."""

    def __init__(self, sentences: list[dict], target: str, future: asyncio.Future):
        self.sentences = sentences
        self.target = target
        self.future = future
        self.ends = list(itertools.accumulate((len(s["text"]) for s in sentences), initial=0))
        self.tagger: Tagger | None = None  # fixed at its first batch: a reload never mixes models in one answer
        self.done = 0  # sentences tagged so far
        self.results: list[dict] = []
        self.model_seconds = 0.0  # time of the model calls that tagged its sentences

    @property
    def chars_left(self) -> int:
        return self.ends[-1] - self.ends[self.done]


class MicroBatcher:
    """Tags ``(sentences, target)`` jobs in batches of up to ``max_batch_sentences`` sentences and
    ``max_batch_chars`` characters (the cost of a model call grows with both), least work left first."""

    def __init__(
        self,
        get_tagger: Callable[[], Tagger],
        max_batch_sentences: int = 256,
        max_batch_chars: int = 32_000,
        metrics: ServiceMetrics | None = None,
    ):
        self.get_tagger = get_tagger
        self.metrics = metrics
        self.max_batch_sentences = max_batch_sentences
        self.max_batch_chars = max_batch_chars
        self.speed = Speed(small=200)  # seconds per character; calls of a sentence or two give the fixed cost
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tagger-inference")
        self._pending: list[_Job] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        if metrics is not None:  # read when /metrics is scraped (on the event loop, as the queue changes)
            metrics.queue_depth.set_function(lambda: sum(not job.future.done() for job in self._pending))
            metrics.queue_sentences.set_function(
                lambda: sum(len(job.sentences) - job.done for job in self._pending if not job.future.done())
            )

    def calibrate(self, tagger: Tagger) -> None:
        """Measure the models on a few sentences, so that the first estimates mean something."""
        sample = [{"text": f"Talks on gas exports resumed in Ankara on day {i}.", "target": "t"} for i in range(64)]
        for batch in (sample[:1], sample[:1], sample):  # the first call may build lazy parts
            began = time.monotonic()
            guarded(tagger.tag_sentences, batch, None)
            self.speed.add(sum(len(s["text"]) for s in batch), time.monotonic() - began)

    def estimate(self, chars: int) -> float:
        """Seconds until a job of ``chars`` characters would be answered: jobs with less work go first."""
        ahead = chars + sum(min(job.chars_left, chars) for job in self._pending if not job.future.done())
        return self.speed.seconds(ahead, -(-ahead // self.max_batch_chars) + 1)

    async def tag(
        self, sentences: list[dict], target: str, deadline: float | None = None
    ) -> tuple[list[dict], dict[str, str]]:
        """Tag one request's sentences; returns the results and the model versions that made them.

        ``Busy`` when the estimated wait would pass ``deadline``; ``ModelCallError`` when the models fail.
        """
        job = _Job(sentences, target, asyncio.get_running_loop().create_future())
        if deadline is not None:
            refuse_if_late(self.estimate(job.chars_left), deadline, "tagging the queued sentences")
        if self._worker is None:
            self._wake = asyncio.Event()
            self._worker = asyncio.create_task(self._run())
        self._pending.append(job)
        self._wake.set()
        try:
            return await job.future
        finally:
            record = current_request()
            if record is not None:  # the access log's fields
                record["sentences"] = len(sentences)
                record["model_seconds"] = job.model_seconds
                if "text" in record:  # --log-text
                    record["text"] = [s["text"] for s in sentences]
            if self.metrics is not None:
                self.metrics.request_sentences.observe(len(sentences))

    def _take(self) -> tuple[Tagger, list[tuple[_Job, int, int]]]:
        """The next batch: slices ``(job, start, end)`` of the jobs with the least work left, all on the
        same models; at least one sentence, however long.

        Only the first job is cut into slices; later ones join only whole, so a small request is never
        tagged in the same (slower) call as a slice of a big one.
        """
        self._pending = [job for job in self._pending if not job.future.done()]  # gave up (deadline)
        self._pending.sort(key=lambda job: job.chars_left)  # stable: arrival order among equals
        current = self.get_tagger()  # a reload takes effect for jobs not started yet
        tagger = self._pending[0].tagger or current
        batch, sentences, chars = [], 0, 0
        for job in self._pending:
            if (job.tagger or current) is not tagger:
                continue
            end = job.done
            while (
                end < len(job.sentences)
                and sentences < self.max_batch_sentences
                and (chars + job.ends[end + 1] - job.ends[end] <= self.max_batch_chars or not sentences)
            ):
                chars += job.ends[end + 1] - job.ends[end]
                sentences += 1
                end += 1
            if end == job.done or (batch and end < len(job.sentences)):
                break
            job.tagger = tagger
            batch.append((job, job.done, end))
        return tagger, batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not any(not job.future.done() for job in self._pending):
                self._wake.clear()
                await self._wake.wait()
                continue
            tagger, batch = self._take()
            try:
                results = await loop.run_in_executor(self._executor, self._tag_batch, tagger, batch)
            except ModelCallError as exc:
                if len(batch) == 1:
                    self._fail(batch[0][0], exc)
                    continue
                # one bad request must not fail the others: retry each alone
                for part in batch:
                    try:
                        self._answer(part, await loop.run_in_executor(self._executor, self._tag_batch, tagger, [part]))
                    except ModelCallError as alone:
                        self._fail(part[0], alone)
                continue
            start = 0
            for part in batch:
                count = part[2] - part[1]
                self._answer(part, results[start : start + count])
                start += count

    def _tag_batch(self, tagger: Tagger, batch: list[tuple[_Job, int, int]]) -> list[dict]:
        flat = [{**s, "target": job.target} for job, start, end in batch for s in job.sentences[start:end]]
        began = time.monotonic()
        results = guarded(tagger.tag_sentences, flat, None)
        seconds = time.monotonic() - began
        self.speed.add(sum(len(s["text"]) for s in flat), seconds)
        for job, _, _ in batch:
            job.model_seconds += seconds
        if self.metrics is not None:
            self.metrics.batch(len(flat), seconds, results)
        return results

    def _answer(self, part: tuple[_Job, int, int], results: list[dict]) -> None:
        job, start, end = part
        for index, row in enumerate(results, start=start):
            row["index"] = index
        job.results.extend(results)
        job.done = end
        if job.done == len(job.sentences):
            self._pending.remove(job)
            if not job.future.done():
                job.future.set_result((job.results, job.tagger.versions))

    def _fail(self, job: _Job, exc: Exception) -> None:
        if job in self._pending:
            self._pending.remove(job)
        if not job.future.done():
            job.future.set_exception(exc)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the inference thread, between batches (e.g. explanations): the models are only
        ever called from that one thread. ``ModelCallError`` when it fails."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, guarded, fn, *args)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


class Splitter:
    """Sentence splitting on two single-thread lanes: texts up to ``small_chars``, and longer ones.

    A one-sentence text never waits behind a megabyte one, and the threads of the default pool (that
    FastAPI gives to other work) are never taken by splitting. ``max_sentences`` stops a split early.
    """

    def __init__(self, max_sentences: int, small_chars: int = 10_000):
        self.max_sentences = max_sentences
        self.small_chars = small_chars
        self._lanes = {
            lane: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tagger-split-{lane}")
            for lane in ("small", "large")
        }
        self._queued = {"small": 0.0, "large": 0.0}  # estimated characters of work accepted, not finished
        self.speed = Speed()
        self.chars_per_sentence = 150.0
        sample = "Talks on gas exports resumed in Ankara on Monday, after a pause of two years. " * 200
        sentence_dicts(sample[:100])  # builds the segmenter
        began = time.monotonic()  # calibrate, so that the first estimates mean something
        sentence_dicts(sample)
        self.speed.add(len(sample), time.monotonic() - began)

    def cost(self, text: str) -> int:
        """Characters that splitting ``text`` will likely go through: it stops after the line-aligned
        block in which ``max_sentences`` is passed."""
        cut = text.find("\n", int(self.chars_per_sentence * self.max_sentences) + SPLIT_BLOCK_CHARS)
        return len(text) if cut < 0 else cut + 1

    async def split(self, text: str, deadline: float) -> list[dict]:
        """The sentences of ``text`` (at most ``max_sentences`` + 1 of them, or a block more)."""
        lane = "small" if len(text) <= self.small_chars else "large"
        cost = self.cost(text)
        refuse_if_late(self.speed.seconds(self._queued[lane] + cost), deadline, "splitting the queued texts")
        self._queued[lane] += cost
        try:
            return await asyncio.get_running_loop().run_in_executor(self._lanes[lane], self._split, text, deadline)
        finally:
            self._queued[lane] -= cost

    def _split(self, text: str, deadline: float) -> list[dict]:
        began = time.monotonic()
        sentences = sentence_dicts(text, deadline, self.max_sentences)
        consumed = len(text) if len(sentences) <= self.max_sentences else sentences[-1]["end"]
        self.speed.add(consumed, time.monotonic() - began)
        if len(sentences) >= 20:
            self.chars_per_sentence = 0.8 * self.chars_per_sentence + 0.2 * consumed / len(sentences)
        return sentences

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.shutdown(wait=False, cancel_futures=True)
