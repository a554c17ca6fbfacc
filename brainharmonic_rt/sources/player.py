"""Replay a recording as a real LSL stream at real-time pace (``brainharmonic replay``).

Built on :class:`mne_lsl.player.PlayerLSL`, which pushes ``chunk_size`` samples per
tick against absolute target times. Annotations (e.g. the rest/task boundaries of
a concatenated recording) go out on PlayerLSL's own marker stream
``f"{name}-annotations"`` (type "annotations", one string channel, irregular rate,
same source_id), which :class:`~brainharmonic_rt.sources.lsl.LSLSource` skips
when it resolves the data stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self, TypeAlias

import mne
import numpy as np
from mne_lsl.player import PlayerLSL

from ..errors import DataError
from .files import BIDSSelector, open_recordings, pick_signal, read_raw

DEFAULT_NAME = "brainharmonic-replay"
_TICK = 0.01  # s of signal per push: small enough to look smooth, large enough to be cheap


def default_chunk_size(sfreq: float) -> int:
    """Samples per push for about 10 ms of signal (at least 1)."""
    return max(1, round(sfreq * _TICK))


Recording: TypeAlias = str | Path | mne.io.BaseRaw | Sequence[str | Path]


def load_recording(
    source: Recording,
    *,
    bids: BIDSSelector | None = None,
    pick: bool = True,
    seconds: float | None = None,
    start: float = 0.0,
) -> mne.io.BaseRaw:
    """A preloaded Raw to replay: one file, a Raw, or several files back to back.

    Several files are joined as by :func:`open_recordings` (EEG picked, channels
    matched by name) and each file's start becomes an annotation named after its
    stem (e.g. "Subject00_1", "Subject00_2"). ``start``/``seconds`` crop each file.
    """
    _refuse_fmri(source)
    if not isinstance(source, str | Path | mne.io.BaseRaw):
        src = open_recordings(list(source), bids=bids, seconds=seconds, start=start)
        info = mne.create_info(list(src.info.ch_names), src.info.sfreq, "eeg")
        raw: mne.io.BaseRaw = mne.io.RawArray(src.data, info, verbose="error")
        onsets = [m[0] for m in src.markers]
        raw.set_annotations(mne.Annotations(onsets, [0.0] * len(onsets), [m[1] for m in src.markers]))
        return raw
    raw = source.copy() if isinstance(source, mne.io.BaseRaw) else read_raw(source, bids=bids)
    if not raw.preload:
        raw.load_data(verbose="error")
    if pick:
        raw = pick_signal(raw)
    if start > 0 or seconds is not None:
        if start < 0 or start >= raw.times[-1] or (seconds is not None and not seconds > 0):
            raise DataError(
                f"Cannot crop the recording to start {start:g} s, {seconds} s long (it lasts "
                f"{raw.times[-1]:.1f} s); choose a start inside it and a positive length."
            )
        stop = raw.times[-1] if seconds is None else min(start + seconds, raw.times[-1])
        raw.crop(start, stop, include_tmax=seconds is None)
    return raw


def _refuse_fmri(source: Recording) -> None:
    """DataError for fMRI inputs: one volume per TR is far below the rate a live LSL source accepts."""
    from .fmri import HCP_TR, fmri_kind
    from .lsl import MIN_RATE

    paths = [source] if isinstance(source, str | Path) else [] if isinstance(source, mne.io.BaseRaw) else source
    for path in paths:
        if isinstance(path, str | Path) and fmri_kind(path) is not None:
            raise DataError(
                f"{Path(path).name} is fMRI (one volume per TR, about {1 / HCP_TR:.2g} Hz at TR {HCP_TR:g} s); "
                f"a live LSL stream must be sampled at {MIN_RATE:g} Hz or more, so it cannot be replayed live: "
                f"render it offline instead (brainharmonic render {path} --out out.mid [--mode learned])."
            )


def make_player(
    source: Recording,
    *,
    name: str = DEFAULT_NAME,
    source_id: str | None = None,
    loop: bool = False,
    chunk_size: int | None = None,
    bids: BIDSSelector | None = None,
    pick: bool = True,
    seconds: float | None = None,
    start: float = 0.0,
) -> PlayerLSL:
    """Build (not start) a PlayerLSL for a file, a Raw, or several files (see :func:`load_recording`).

    ``pick`` keeps only the scalp EEG channels (see :func:`pick_signal`), as a
    headset would send. ``loop`` repeats forever; otherwise the stream ends (its
    outlet closes) after one pass (minus the last sample when the length is a
    multiple of ``chunk_size``). Annotations, if any, are streamed as strings on
    ``f"{name}-annotations"``.
    """
    raw = load_recording(source, bids=bids, pick=pick, seconds=seconds, start=start)
    if chunk_size is None:
        chunk_size = default_chunk_size(raw.info["sfreq"])
    if chunk_size < 1:
        raise DataError(f"chunk_size must be at least 1 sample, got {chunk_size}; pass a positive number.")
    if not loop and chunk_size > 1 and raw.n_times % chunk_size == 0:
        # PlayerLSL would end on an empty chunk and warn; one sample less avoids that.
        raw.crop(tmax=raw.times[-2], include_tmax=True)
    origin = (raw.filenames or (None,))[0]
    sid = source_id if source_id is not None else f"{name}-{Path(str(origin or 'raw')).stem}"
    with warnings.catch_warnings(), mne.utils.use_log_level("ERROR"):
        warnings.simplefilter("ignore")
        return PlayerLSL(
            raw,
            chunk_size=chunk_size,
            n_repeat=np.inf if loop else 1,
            name=name,
            source_id=sid,
            annotations=len(raw.annotations) > 0,
            annotations_encoding="string",
        )


class Replay:
    """Serve a recording (file, Raw, or several files) as a live LSL stream while open.

    ``async with Replay(path, name=..., source_id=...) as r:`` starts streaming at
    real-time pace; leaving the block stops it. ``serve_forever()`` is the blocking
    form for the CLI. ``markers_name`` is the annotation stream's name (or None).
    """

    def __init__(
        self,
        source: Recording,
        *,
        name: str = DEFAULT_NAME,
        source_id: str | None = None,
        loop: bool = False,
        chunk_size: int | None = None,
        bids: BIDSSelector | None = None,
        pick: bool = True,
        seconds: float | None = None,
        start: float = 0.0,
    ) -> None:
        self._args: dict[str, Any] = {
            "name": name,
            "source_id": source_id,
            "loop": loop,
            "chunk_size": chunk_size,
            "bids": bids,
            "pick": pick,
            "seconds": seconds,
            "start": start,
        }
        self._source = source
        self.name = name
        self.loop = loop
        self._player: PlayerLSL | None = None
        self._started_at: float | None = None

    # -- properties ------------------------------------------------------------------------
    @property
    def player(self) -> PlayerLSL:
        if self._player is None:
            raise RuntimeError("Replay.player exists only once the replay is started.")
        return self._player

    @property
    def source_id(self) -> str:
        return str(self.player.source_id)

    @property
    def sfreq(self) -> float:
        return float(self.player.info["sfreq"])

    @property
    def ch_names(self) -> list[str]:
        return list(self.player.info["ch_names"])

    @property
    def duration(self) -> float:
        """Length of one pass in seconds."""
        return float(self.player._raw.n_times / self.sfreq)

    @property
    def markers_name(self) -> str | None:
        """Name of the annotation (marker) stream, or None if the recording has no annotations."""
        return f"{self.name}-annotations" if len(self.player.annotations) else None

    @property
    def running(self) -> bool:
        """True while the stream is being served (False after the last pass ends)."""
        return self._player is not None and self._player._executor is not None

    # -- control ---------------------------------------------------------------------------
    def start(self) -> Self:
        """Build the player and start streaming (returns at once)."""
        if self._player is not None:
            raise RuntimeError("This Replay is already started; create a new one to replay again.")
        self._player = make_player(self._source, **self._args)
        self._player.start()
        self._started_at = time.monotonic()
        return self

    def stop(self) -> None:
        """Stop streaming and close the outlets (safe to call twice or after the end)."""
        player = self._player
        if player is not None and player._executor is not None:
            with contextlib.suppress(RuntimeError):  # ended on its own in the meantime
                player.stop()

    def wait(self, stop: threading.Event | None = None, timeout: float | None = None) -> bool:
        """Block until the replay ends, ``stop`` is set or ``timeout`` s pass; True if it ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            if stop is not None and stop.is_set():
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def serve_forever(self, stop: threading.Event | None = None) -> None:
        """Start, block until the end (never with ``loop``), ``stop`` or Ctrl-C, then stop."""
        if self._player is None:
            self.start()
        try:
            self.wait(stop)
        finally:
            self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
