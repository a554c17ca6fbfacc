"""What every source of brain signals looks like to the pipeline.

A source is an async context manager: connect in ``__aenter__`` (after which
``info`` is valid), release in ``__aexit__``, and deliver samples through the async
iterator ``chunks()``. Live sources deliver on the wall clock; offline readers as fast as the
consumer takes them (the pipeline chooses the clock: ``render`` or a live run).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, Self, runtime_checkable

from ..events import Chunk, SignalInfo

#: A marker in a recording: (seconds from the start of the source, description).
Marker = tuple[float, str]


@runtime_checkable
class Source(Protocol):
    """The contract between a source and the pipeline.

    ``chunks()`` yields :class:`~brainharmonic_rt.events.Chunk` records
    (data float64 of shape (n_channels, n_samples); timestamps float64 seconds:
    LSL clock for live streams, seconds from the start for offline sources).
    It ends at the end of the input and raises
    :class:`~brainharmonic_rt.errors.StreamLostError` when a live stream stops.
    """

    @property
    def info(self) -> SignalInfo: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def chunks(self) -> AsyncIterator[Chunk]: ...

    def stats(self) -> dict[str, Any]: ...
