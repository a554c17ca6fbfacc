"""Replay a recording as a real LSL stream at real-time pace (``brainharmonic replay``).

:class:`RecordingPlayer` pushes ``chunk_size`` samples per tick against absolute target
times on LSL's ``local_clock()``. Sample ``k`` of the stream (counted across passes when
looping) is stamped ``t0 + k / sfreq``: timestamps rise at exactly the nominal rate through
any number of wraps. Annotations (e.g. the rest/task boundaries of a concatenated
recording) go out on a marker stream ``f"{name}-annotations"`` (type "annotations", one
string channel, irregular rate, same source_id) stamped with the time of their sample on
every pass; :class:`~brainharmonic_rt.sources.lsl.LSLSource` skips it when it resolves
the data stream.

Why not mne-lsl's ``PlayerLSL``: in mne-lsl 1.14 its loop pushes the whole recording
again in one chunk at every wrap when the recording's length is a multiple of
``chunk_size`` (as every eegmat file is at 10 ms chunks: a burst of one pass stamped a
pass in the past, 750 Hz for a 500 Hz stream), and stamps an annotation that falls in a
wrapping chunk one pass early. ``docs/upstream/mne-lsl-player-loop.md`` has the report.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self, TypeAlias

import mne
import numpy as np

from ..errors import DataError
from .channel_map import ChannelMap
from .files import BIDSSelector, open_recordings, pick_channels, read_raw
from .mne_lsl_private import destroy

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
    channels: ChannelMap | None = None,
    xdf_stream: str | None = None,
) -> mne.io.BaseRaw:
    """A preloaded Raw to replay: one file (XDF too), a Raw, or several files back to back.

    Several files are joined as by :func:`open_recordings` (EEG picked, channels
    matched by name) and each file's start becomes an annotation named after its
    stem (e.g. "Subject00_1", "Subject00_2"). ``start``/``seconds`` crop each file.
    """
    _refuse_fmri(source)
    if not isinstance(source, str | Path | mne.io.BaseRaw):
        src = open_recordings(
            list(source), bids=bids, seconds=seconds, start=start, channels=channels, xdf_stream=xdf_stream
        )
        info = mne.create_info(list(src.info.ch_names), src.info.sfreq, "eeg")
        raw: mne.io.BaseRaw = mne.io.RawArray(src.data, info, verbose="error")
        onsets = [m[0] for m in src.markers]
        raw.set_annotations(mne.Annotations(onsets, [0.0] * len(onsets), [m[1] for m in src.markers]))
        return raw
    raw = source.copy() if isinstance(source, mne.io.BaseRaw) else read_raw(source, bids=bids, xdf_stream=xdf_stream)
    if not raw.preload:
        raw.load_data(verbose="error")
    if pick:
        raw = pick_channels(raw, channels, Path(str(source)) if not isinstance(source, mne.io.BaseRaw) else Path("raw"))
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
    channels: ChannelMap | None = None,
    xdf_stream: str | None = None,
) -> RecordingPlayer:
    """Build (not start) a player for a file, a Raw, or several files (see :func:`load_recording`).

    ``pick`` keeps only the scalp EEG channels (see :func:`pick_signal`), as a
    headset would send. ``loop`` repeats forever; otherwise the stream ends (its
    outlet closes) after one pass. Annotations, if any, are streamed as strings on
    ``f"{name}-annotations"``.
    """
    raw = load_recording(
        source, bids=bids, pick=pick, seconds=seconds, start=start, channels=channels, xdf_stream=xdf_stream
    )
    if chunk_size is None:
        chunk_size = default_chunk_size(raw.info["sfreq"])
    origin = (raw.filenames or (None,))[0]
    sid = source_id if source_id is not None else f"{name}-{Path(str(origin or 'raw')).stem}"
    return RecordingPlayer(raw, name=name, source_id=sid, chunk_size=chunk_size, loop=loop)


class RecordingPlayer:
    """Streams a preloaded Raw on an LSL outlet in real time, once or looping forever.

    ``start()`` opens the outlets and starts a pushing thread; ``stop()`` ends it and closes them
    (the stream vanishes from the network). Without ``loop`` the outlets close by themselves after
    the last sample. Data go out as float64 in the Raw's units (volts), channel descriptions
    (names, types, units, locations) copied from the Raw's info.
    """

    def __init__(self, raw: mne.io.BaseRaw, *, name: str, source_id: str, chunk_size: int, loop: bool = False) -> None:
        if chunk_size < 1:
            raise DataError(f"chunk_size must be at least 1 sample, got {chunk_size}; pass a positive number.")
        self.name, self.source_id, self.chunk_size, self.loop = name, source_id, chunk_size, loop
        self.info = raw.info
        self._data = np.ascontiguousarray(raw.get_data().T, dtype=np.float64)  # (n_times, n_channels)
        # Sample index of each annotation in the data as it is sent (the Raw may be cropped: first_samp > 0).
        onsets = raw.time_as_index(raw.annotations.onset, use_rounding=True) - raw.first_samp
        self._markers: dict[int, list[str]] = {}
        for index, description in zip(onsets, raw.annotations.description, strict=True):
            if 0 <= index < self.n_times:
                self._markers.setdefault(int(index), []).append(str(description))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def sfreq(self) -> float:
        return float(self.info["sfreq"])

    @property
    def n_times(self) -> int:
        """Samples in one pass."""
        return int(self._data.shape[0])

    @property
    def duration(self) -> float:
        """Length of one pass in seconds."""
        return self.n_times / self.sfreq

    @property
    def markers_name(self) -> str | None:
        """Name of the annotation (marker) stream, or None if the recording has no annotations."""
        return f"{self.name}-annotations" if self._markers else None

    @property
    def running(self) -> bool:
        """True while samples are being pushed (False after the last one without ``loop``)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        """Open the outlets and start streaming (returns at once)."""
        from mne_lsl.lsl import StreamInfo, StreamOutlet

        if self._thread is not None:
            raise RuntimeError("This player is already started; create a new one to play again.")
        types = self.info.get_channel_types(unique=True)
        sinfo = StreamInfo(
            self.name, types[0].upper() if len(types) == 1 else "", len(self.info["ch_names"]), self.sfreq,
            np.float64, self.source_id,
        )  # fmt: skip
        sinfo.set_channel_info(self.info)
        outlet = StreamOutlet(sinfo, chunk_size=self.chunk_size)
        markers = None
        if self.markers_name is not None:
            minfo = StreamInfo(self.markers_name, "annotations", 1, 0.0, "string", self.source_id)
            minfo.set_channel_names(["description"])
            markers = StreamOutlet(minfo)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(outlet, markers), name=f"lsl-player-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop streaming and close the outlets (safe to call twice or after the end)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def _run(self, outlet: Any, markers: Any) -> None:
        """Push chunk after chunk, each once its last sample's time has come (absolute targets)."""
        from mne_lsl.lsl import local_clock

        n, size, sfreq = self.n_times, self.chunk_size, self.sfreq
        t0 = local_clock()
        pushed = 0  # samples pushed since the start, across passes
        try:
            while not self._stop.is_set() and (self.loop or pushed < n):
                count = size if self.loop else min(size, n - pushed)
                k = np.arange(pushed, pushed + count)
                stamps = t0 + k / sfreq
                if (delay := stamps[-1] - local_clock()) > 0 and self._stop.wait(delay):
                    break
                outlet.push_chunk(self._data[k % n], timestamp=stamps)
                if markers is not None:
                    for j in k.tolist():
                        for description in self._markers.get(j % n, ()):
                            markers.push_sample([description], timestamp=t0 + j / sfreq)
                pushed += count
        finally:
            for o in (outlet, markers):
                if o is not None:
                    destroy(o)


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
        channels: ChannelMap | None = None,
        xdf_stream: str | None = None,
    ) -> None:
        self._args: dict[str, Any] = {
            "channels": channels,
            "xdf_stream": xdf_stream,
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
        self._player: RecordingPlayer | None = None
        self._started_at: float | None = None

    # -- properties ------------------------------------------------------------------------
    @property
    def player(self) -> RecordingPlayer:
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
        return self.player.duration

    @property
    def markers_name(self) -> str | None:
        """Name of the annotation (marker) stream, or None if the recording has no annotations."""
        return self.player.markers_name

    @property
    def running(self) -> bool:
        """True while the stream is being served (False after the last pass ends)."""
        return self._player is not None and self._player.running

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
        if self._player is not None:
            self._player.stop()

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
