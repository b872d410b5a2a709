"""Dynamic batching: requests that arrive together are classified in one model call.

What TensorFlow Serving's batching does (`max_batch_size`, `batch_timeout_micros`): the first
request of a batch waits at most `max_wait` seconds for others, up to `max_batch` images in
all; the batch then runs in a worker thread, off the event loop, so the server keeps taking
requests while the model works. One model call at a time: TensorFlow gains nothing from two
calls racing on the same cores, and a batch of 16 costs about what 3 single images do on a CPU.
With `max_batch=1` every request is its own model call (the baseline bench/serve.py measures).

The queue needs no bound of its own: requests are admitted at the door (admission.py), at most
`--max-queue` at once, so it never holds more. A request that would push a batch past
`max_batch` waits for the next one, so no model call is larger than max(max_batch, one
request): the size the server warms up with and counts in its memory bound.
"""

import asyncio
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """How requests are gathered into model calls."""

    max_batch: int = 32  # (images) at most this many per model call; 1: no batching
    max_wait: float = 0.005  # (seconds) the first image waits at most this long for company


class DynamicBatcher:
    """Gathers `submit`ted image batches into model calls of `predict(pixels) -> rows`."""

    def __init__(self, predict, config=BatchingConfig(), on_batch=None):
        self.predict, self.config, self.on_batch = predict, config, on_batch
        self._queue = None
        self._worker = None
        self._held = None  # a request that did not fit the last batch: first of the next

    async def submit(self, pixels):
        """Rows of `predict` for these images (n, h, w, 3), once their batch has run."""
        if self._worker is None or self._worker.done():  # started on first use, in this loop
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((pixels, future))
        return await future

    async def _run(self):
        while True:
            waiting = [self._held or await self._queue.get()]
            self._held = None
            count = len(waiting[0][0])
            deadline = asyncio.get_running_loop().time() + self.config.max_wait
            while count < self.config.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                if count + len(item[0]) > self.config.max_batch:
                    self._held = item
                    break
                waiting.append(item)
                count += len(item[0])
            await self._call(waiting)

    async def _call(self, waiting):
        pixels = np.concatenate([p for p, _ in waiting])
        if self.on_batch is not None:
            self.on_batch(len(pixels))
        try:
            rows = await asyncio.to_thread(self.predict, pixels)
        except Exception as error:  # the callers answer with it; the worker keeps serving
            for _, future in waiting:
                if not future.done():
                    future.set_exception(error)
            return
        start = 0
        for batch, future in waiting:
            if not future.done():
                future.set_result(rows[start:start + len(batch)])
            start += len(batch)

    async def close(self):
        if self._worker is not None:
            self._worker.cancel()
