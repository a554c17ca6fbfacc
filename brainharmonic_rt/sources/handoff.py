"""The one way a live source's reader thread hands samples to the event loop.

The thread calls :meth:`Handoff.put` with (data, timestamps, arrival) blocks or an exception; the loop
is woken with ``call_soon_threadsafe`` only when no wake-up is pending, merges what arrived into one
:class:`~brainharmonic_rt.events.Chunk`, and keeps a queue bounded in samples: when the consumer falls
behind, the oldest chunk is dropped (and counted), the reader never blocks. An exception travels through
the same queue, after the samples that came before it, and is raised by :meth:`Handoff.chunks` (again
on every call, until :meth:`Handoff.reset`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

import numpy as np

from ..events import Chunk

Block = tuple[np.ndarray, np.ndarray, float]  # data (n_channels, n), timestamps (n,), arrival (time.monotonic)


class Handoff:
    """Bounded reader-thread → event-loop queue of chunks (see the module notes); counters are cumulative."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Chunk | BaseException] | None = None
        self._pending: collections.deque[Block | BaseException] = collections.deque()
        self._scheduled = False
        self._max_samples = 1
        self.queued_samples = 0
        self.n_chunks = 0
        self.n_dropped = 0
        self.n_dropped_samples = 0
        self._head: Chunk | BaseException | None = None

    @property
    def open(self) -> bool:
        return self._queue is not None

    def reset(self, loop: asyncio.AbstractEventLoop, max_samples: int) -> None:
        """Start afresh (a new connection): empty queue, nothing pending; counters kept."""
        self._loop = loop
        self._queue = asyncio.Queue()
        self._pending.clear()
        self._scheduled = False
        self._head = None
        self.queued_samples = 0
        self._max_samples = max(1, max_samples)

    def put(self, item: Block | BaseException) -> None:
        """Reader thread: queue ``item``; wake the loop only if no wake-up is pending."""
        self._pending.append(item)
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                    loop.call_soon_threadsafe(self._drain)

    async def peek(self) -> Chunk | BaseException:
        """Wait for the next item and leave it first in line for :meth:`chunks` (a source that must
        know samples arrive again before it says it is back)."""
        if self._head is None:
            if self._queue is None:
                raise RuntimeError("Handoff.peek() before reset(): open the source first.")
            self._head = await self._queue.get()
        return self._head

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Yield chunks as they arrive; raise the reader's exception when it comes."""
        queue = self._queue
        if queue is None:
            raise RuntimeError("Handoff.chunks() before reset(): open the source first.")
        while True:
            if self._head is not None:
                item, self._head = self._head, None
            else:
                item = await queue.get()
            if isinstance(item, BaseException):
                queue.put_nowait(item)  # raised again by a second chunks() until reset()
                raise item
            self.queued_samples -= item.n_samples
            yield item

    def _drain(self) -> None:
        """Loop: move pending blocks into the queue as one chunk; drop the oldest beyond the bound."""
        self._scheduled = False
        queue = self._queue
        if queue is None:
            return
        blocks: list[Block] = []
        error: BaseException | None = None
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, BaseException):
                error = item
                break
            blocks.append(item)
        if blocks:
            if len(blocks) == 1:
                data, ts, _ = blocks[0]
            else:
                data = np.concatenate([b[0] for b in blocks], axis=1)
                ts = np.concatenate([b[1] for b in blocks])
            chunk = Chunk(data, ts, received=blocks[-1][2])
            queue.put_nowait(chunk)
            self.n_chunks += 1
            self.queued_samples += chunk.n_samples
            while self.queued_samples > self._max_samples and queue.qsize() > 1:
                old = queue.get_nowait()
                if isinstance(old, BaseException):  # pragma: no cover - errors are always last
                    queue.put_nowait(old)
                    break
                self.queued_samples -= old.n_samples
                self.n_dropped += 1
                self.n_dropped_samples += old.n_samples
        if error is not None:
            queue.put_nowait(error)
