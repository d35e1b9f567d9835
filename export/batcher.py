"""Request coalescing: concurrent requests for one model become single onnxruntime calls.

A device module of the server: asyncio, numpy and `protocol` (for
`ServeError`). A `Batcher` needs of its model only a `name` and
`run(feeds) -> outputs` (`service.Model`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses

import numpy as np

if __package__:
    from .protocol import ServeError
else:  # run from an export folder: the server's modules sit beside this file
    from protocol import ServeError


@dataclasses.dataclass
class _Pending:
    feeds: dict
    size: int
    future: asyncio.Future


class Batcher:
    """Coalesces concurrent requests for one model into single onnxruntime calls.

    One worker per model takes the oldest waiting request, waits for a free
    run slot (requests keep arriving meanwhile), lets others join for up to
    `window_s` (those already queued join at once) until the call holds
    `max_batch` examples, starts the call in a thread (onnxruntime releases
    the GIL, so the event loop keeps reading and answering requests), and
    hands each request its rows. A request larger than `max_batch` runs alone.

    Args:
        model: What to run: a `name` and `run(feeds) -> list of outputs`.
        max_batch: Most examples per call (1: no coalescing).
        window_s: Longest wait for more requests after the first.
        max_queue: Requests admitted and not yet answered; more get 503.
        parallel: Calls of this model that may run at once, each on its own
            thread (onnxruntime sessions take concurrent calls).
    """

    def __init__(self, model, max_batch: int, window_s: float, max_queue: int,
                 parallel: int = 1):
        self.model = model
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_queue = max_queue
        self.parallel = parallel
        self._waiting: collections.deque[_Pending] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=parallel, thread_name_prefix=f"ort-{model.name}")
        self.admitted = 0  # requests admitted and not yet answered
        self.stats = {"requests": 0, "examples": 0, "runs": 0, "largest_run_requests": 0,
                      "largest_run_examples": 0, "refused_busy": 0}

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(self.parallel)
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Stops taking requests; calls already started finish first."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def run(self, feeds: dict) -> list:
        """Runs `feeds` (arrays sharing their first dimension) in the next call.

        Returns:
            The model's outputs for these rows, in manifest order.

        Raises:
            ServeError: 503 with `Retry-After` when `max_queue` requests wait.
        """
        if self.admitted >= self.max_queue:
            self.stats["refused_busy"] += 1
            raise ServeError(503, f"model {self.model.name!r} has {self.admitted} requests "
                                  f"queued (--max-queue {self.max_queue}); retry shortly",
                             {"Retry-After": "1"})
        size = len(next(iter(feeds.values())))
        future = asyncio.get_running_loop().create_future()
        self.admitted += 1
        try:
            self._waiting.append(_Pending(feeds, size, future))
            self._wakeup.set()
            return await future
        finally:
            self.admitted -= 1

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._slots.acquire()
            deadline = loop.time() + self.window_s
            while self._queued_examples() < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
            batch = [self._waiting.popleft()]
            total = batch[0].size
            while self._waiting and total + self._waiting[0].size <= self.max_batch:
                total += self._waiting[0].size
                batch.append(self._waiting.popleft())
            batch = [p for p in batch if not p.future.done()]  # handler cancelled meanwhile
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._run(loop, batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._slots.release()

    def _queued_examples(self) -> int:
        return sum(p.size for p in self._waiting)

    async def _run(self, loop, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            feeds = batch[0].feeds
        else:
            feeds = {name: np.concatenate([p.feeds[name] for p in batch])
                     for name in batch[0].feeds}
        try:
            outputs = await loop.run_in_executor(self._executor, self.model.run, feeds)
        except Exception as e:  # onnxruntime's own types; reported to every waiting request
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(ServeError(
                        500, f"onnxruntime failed on model {self.model.name!r}: {e}"))
            return
        sizes = [p.size for p in batch]
        stats = self.stats
        stats["requests"] += len(batch)
        stats["examples"] += sum(sizes)
        stats["runs"] += 1
        stats["largest_run_requests"] = max(stats["largest_run_requests"], len(batch))
        stats["largest_run_examples"] = max(stats["largest_run_examples"], sum(sizes))
        offsets = np.cumsum(sizes)[:-1]
        parts = [np.split(out, offsets) for out in outputs]
        for i, p in enumerate(batch):
            if not p.future.done():
                p.future.set_result([part[i] for part in parts])
