"""Micro-batching: concurrent tagging requests share one model call.

A TF-IDF or transformer ``predict_proba`` costs about the same for 1 sentence as for 20 (per-call
overhead dominates), so requests that arrive while a batch is running are coalesced into the next
one. Inference runs on one dedicated thread: the event loop stays free for health checks, and
threads do not fight over the GIL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from train.serving.tagger import Tagger


class MicroBatcher:
    """Queue of ``(sentences, target)`` jobs, answered in batches of up to ``max_batch_sentences``."""

    def __init__(self, get_tagger: Callable[[], Tagger], max_batch_sentences: int = 256):
        self.get_tagger = get_tagger
        self.max_batch_sentences = max_batch_sentences
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tagger-inference")
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def tag(self, sentences: list[dict], target: str) -> tuple[list[dict], dict[str, str]]:
        """Tag one request's sentences; returns the results and the model versions that made them."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((sentences, target, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0][0])
            while not self._queue.empty() and size < self.max_batch_sentences:
                batch.append(self._queue.get_nowait())
                size += len(batch[-1][0])
            batch = [job for job in batch if not job[2].done()]  # requests that gave up (deadline) are skipped
            if not batch:
                continue
            tagger = self.get_tagger()  # a reload takes effect from the next batch; this one finishes as is
            try:
                results = await loop.run_in_executor(self._executor, self._tag_batch, tagger, batch)
            except Exception:  # noqa: BLE001 - one bad request must not fail the others: retry each alone
                for job in batch:
                    await self._run_alone(loop, tagger, job)
                continue
            start = 0
            for sentences, _, future in batch:
                part = results[start : start + len(sentences)]
                start += len(sentences)
                self._answer(future, part, tagger)

    @staticmethod
    def _tag_batch(tagger: Tagger, batch: list) -> list[dict]:
        flat = [{**sentence, "target": target} for sentences, target, _ in batch for sentence in sentences]
        return tagger.tag_sentences(flat, None)

    async def _run_alone(self, loop: asyncio.AbstractEventLoop, tagger: Tagger, job: tuple) -> None:
        """Tag one request on its own; its failure goes to it alone."""
        future = job[2]
        try:
            results = await loop.run_in_executor(self._executor, self._tag_batch, tagger, [job])
        except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
            if not future.done():
                future.set_exception(exc)
            return
        self._answer(future, results, tagger)

    @staticmethod
    def _answer(future: asyncio.Future, part: list[dict], tagger: Tagger) -> None:
        for index, row in enumerate(part):
            row["index"] = index
        if not future.done():
            future.set_result((part, tagger.versions))

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
