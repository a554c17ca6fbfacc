"""``--channels "1=Fz,2=C3,3=Cz"``: name and pick the channels of any input.

Real streams often carry generic labels (a g.tec Unicorn through LabRecorder: ``Unknown1`` …
``Unknown17``, 8 EEG channels then accelerometer, gyroscope, battery and counter). A channel map gives
the EEG channels their 10-20 names, so they join scalp-region groups and instruments, and drops every
channel it does not name. Indices are 1-based and count the input's channels as it delivers them: a
file's channels (before any EEG picking), an LSL stream's channels, a BrainFlow board's EEG rows, an XDF
stream's channels.

Applied where each input enters: :func:`~.files.open_recordings` and the replay loader take a map for
files, and :class:`MappedSource` wraps a live source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, Self

import numpy as np

from ..config import parse_channels
from ..errors import ConfigError
from ..events import Chunk, SignalInfo
from .base import Source


@dataclass(frozen=True, slots=True)
class ChannelMap:
    """Input channel index (0-based) → name, in the order the channels are kept (ascending index)."""

    names: dict[int, str]
    text: str

    @classmethod
    def parse(cls, text: str) -> ChannelMap:
        """From ``"1=Fz,2=C3"``; raises ConfigError naming the bad entry and the expected form."""
        try:
            names = parse_channels(text)
        except ValueError as exc:
            raise ConfigError(f"--channels / [signal] channels {text!r}: {exc}.") from None
        return cls(dict(sorted(names.items())), text)

    @property
    def indices(self) -> list[int]:
        return list(self.names)

    def check(self, n_channels: int, what: str) -> None:
        """ConfigError when an index points past the input's last channel."""
        beyond = [i + 1 for i in self.names if i >= n_channels]
        if beyond:
            raise ConfigError(
                f"--channels {self.text!r} names channel {beyond[0]}, but {what} has only {n_channels} channels; "
                f"use indices 1..{n_channels}."
            )

    def apply_info(self, info: SignalInfo) -> SignalInfo:
        """The input's description with only the named channels, under their new names."""
        self.check(info.n_channels, f"stream '{info.name}'")
        return replace(info, ch_names=tuple(self.names.values()))


def maybe_map(text: str | None) -> ChannelMap | None:
    """A ChannelMap from a setting or flag, or None when it is not given."""
    return None if text is None else ChannelMap.parse(text)


class MappedSource:
    """A live (or any) source seen through a :class:`ChannelMap`: named channels only, renamed.

    Forwards ``reconnect`` and ``stats``; the map is checked against the source when it is entered.
    """

    def __init__(self, source: Source, channel_map: ChannelMap) -> None:
        self.source = source
        self.map = channel_map
        self._idx = np.asarray(channel_map.indices, dtype=np.intp)
        self._info: SignalInfo | None = None

    @property
    def info(self) -> SignalInfo:
        if self._info is None:
            self._info = self.map.apply_info(self.source.info)
        return self._info

    async def __aenter__(self) -> Self:
        await self.source.__aenter__()
        try:
            _ = self.info
        except BaseException:
            await self.source.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.source.__aexit__(*exc)

    async def chunks(self) -> AsyncIterator[Chunk]:
        async for chunk in self.source.chunks():
            yield Chunk(chunk.data[self._idx], chunk.timestamps, chunk.received)

    async def reconnect(self) -> None:
        reconnect = getattr(self.source, "reconnect", None)
        if reconnect is None:
            raise RuntimeError(f"{type(self.source).__name__} cannot reconnect")
        await reconnect()

    def stats(self) -> dict[str, Any]:
        out = self.source.stats()
        if "impedance" in out:  # per channel of the source: under the new names, named channels only
            old = self.source.info.ch_names
            out["impedance"] = {
                new: out["impedance"][old[i]] for i, new in self.map.names.items() if old[i] in out["impedance"]
            }
        return out
