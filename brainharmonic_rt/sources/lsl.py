"""Live EEG from a Lab Streaming Layer stream, with millisecond hand-off latency.

A reader thread blocks in ``pull_sample`` (which returns as soon as one sample
arrives; ``pull_chunk`` with a timeout would wait for a full buffer), drains what
else is waiting with a non-blocking ``pull_chunk``, and hands the block to the
event loop through a :class:`~.handoff.Handoff`: a queue bounded in seconds of
signal (the oldest chunk is dropped when the consumer falls behind; the reader
never blocks). Errors in the thread (stream lost, wrong shape) travel through the
same queue and are raised from ``chunks()``.

We use the low-level ``mne_lsl.lsl`` API rather than ``StreamLSL``: the latter
polls its inlet on a timer, which adds milliseconds of latency.

Timestamps are never taken blindly: every block passes a
:class:`~brainharmonic_rt.sources.timeline.Timeline`, which drops resent samples and
re-anchors a clock that jumps, so windows keep their real rate and notes their time.
The inlet asks liblsl for clock synchronisation only, not for its ``dejitter``
smoothing: measured here, dejitter turns a 30 s step back into 40 s of wrong,
oscillating timestamps (736 backward steps in 6 s) that no later check can repair.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Self

import numpy as np
from mne_lsl.lsl import StreamInlet, resolve_streams

from ..config import StreamSettings
from ..errors import StreamError, StreamLostError, StreamNotFoundError
from ..events import Chunk, SignalInfo
from .handoff import Handoff
from .mne_lsl_private import LostError, destroy
from .timeline import Timeline

log = logging.getLogger(__name__)

MAX_CHANNELS = 512
MIN_RATE = 125.0
MAX_RATE = 16_000.0
_POLL = 0.05  # s: how long the reader blocks per pull (bounds stop latency)
_OPEN_TIMEOUT = 5.0  # s: to subscribe to a resolved stream and fetch its full description


def _describe(sinfo: Any) -> dict[str, Any]:
    fmt = sinfo.dtype
    return {
        "name": sinfo.name,
        "type": sinfo.stype,
        "source_id": sinfo.source_id,
        "n_channels": int(sinfo.n_channels),
        "sfreq": float(sinfo.sfreq),
        "format": fmt if isinstance(fmt, str) else np.dtype(fmt).name,
        "hostname": sinfo.hostname,
    }


def _one_line(d: dict[str, Any]) -> str:
    rate = "irregular rate" if d["sfreq"] == 0 else f"{d['sfreq']:g} Hz"
    return (
        f"'{d['name']}' (type {d['type'] or '-'}, source_id {d['source_id'] or '-'}, "
        f"{d['n_channels']} ch @ {rate}, {d['format']})"
    )


def list_streams(timeout: float = 1.0) -> list[dict[str, Any]]:
    """Every LSL stream visible within ``timeout`` seconds, sorted by name.

    Each entry has name, type, source_id, n_channels, sfreq (0 = irregular),
    format and hostname.
    """
    found = [_describe(s) for s in resolve_streams(timeout=timeout)]
    return sorted(found, key=lambda d: (d["name"], d["source_id"]))


def format_streams(streams: list[dict[str, Any]]) -> str:
    """A plain text table of :func:`list_streams` output (for ``brainharmonic streams``)."""
    if not streams:
        return "No LSL streams visible."
    cols = ("name", "type", "source_id", "n_channels", "sfreq", "format", "hostname")
    heads = ("NAME", "TYPE", "SOURCE_ID", "CHANNELS", "RATE (Hz)", "FORMAT", "HOST")
    rows = [[str(s[c]) if c != "sfreq" else ("irregular" if s[c] == 0 else f"{s[c]:g}") for c in cols] for s in streams]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _selector_text(settings: StreamSettings) -> str:
    parts = [
        f"{label} '{value}'"
        for label, value in (
            ("name", settings.name),
            ("type", settings.type),
            ("source_id", settings.source_id),
        )
        if value is not None
    ]
    return " and ".join(parts) if parts else "any selector"


def _matches(d: dict[str, Any], settings: StreamSettings) -> bool:
    return (
        (settings.name is None or d["name"] == settings.name)
        and (settings.type is None or d["type"] == settings.type)
        and (settings.source_id is None or d["source_id"] == settings.source_id)
    )


def _refusal(d: dict[str, Any]) -> str | None:
    """Why this stream cannot feed the pipeline, as one sentence (None if it can)."""
    what = f"LSL stream {_one_line(d)}"
    if d["format"] == "string":
        return (
            f"{what} carries text (string format), not signal samples; select a numeric EEG stream with --stream NAME."
        )
    if d["sfreq"] == 0:
        return (
            f"{what} has an irregular sampling rate (nominal rate 0, e.g. a marker stream); "
            "select a regularly sampled EEG stream with --stream NAME."
        )
    if not 1 <= d["n_channels"] <= MAX_CHANNELS:
        return (
            f"{what} has {d['n_channels']} channels but at most {MAX_CHANNELS} are supported; "
            "send a subset of channels from the amplifier software."
        )
    if not MIN_RATE <= d["sfreq"] <= MAX_RATE:
        return (
            f"{what} is sampled at {d['sfreq']:g} Hz but {MIN_RATE:g} to {MAX_RATE:g} Hz is supported; "
            "change the amplifier's sampling rate."
        )
    return None


_UNIT_POWERS = {"0": "V", "-3": "mV", "-6": "uV", "-9": "nV"}
_UNIT_WORDS = {"volts": "V", "millivolts": "mV", "microvolts": "uV", "nanovolts": "nV"}


def _unit_text(unit: str) -> str:
    """LSL channel unit as short text (mne-lsl writes the power of ten, others a word)."""
    return _UNIT_POWERS.get(unit.strip(), _UNIT_WORDS.get(unit.strip().lower(), unit.strip()))


def _check_shape(name: str, data: np.ndarray, n_channels: int) -> None:
    """Refuse a block whose channel count differs from the connection's (one sentence)."""
    if data.ndim != 2 or data.shape[0] != n_channels:
        raise StreamError(
            f"LSL stream '{name}' delivered {data.shape[0] if data.ndim == 2 else data.shape} "
            f"channels instead of {n_channels}; restart the stream or brainharmonic so both agree."
        )


class LSLSource:
    """A live LSL stream as a :class:`~brainharmonic_rt.sources.base.Source`.

    Parameters
    ----------
    settings : StreamSettings
        Selector (name, type, source_id: every given field must match), ``timeout``
        to find the stream, ``lost_after`` seconds of silence that count as a loss.
    max_queue_seconds : float
        Most signal (in seconds) held for a slow consumer; older chunks are dropped.

    Chunks carry data of shape (n_channels, n_samples) float64 in the stream's
    units and timestamps in seconds on the local LSL clock (``local_clock()``,
    i.e. CLOCK_MONOTONIC): clock-synchronised by liblsl, then checked against their
    arrival (:mod:`~brainharmonic_rt.sources.timeline`): strictly increasing, never
    ahead of arrival, continuous across clock jumps, resent samples dropped.
    """

    def __init__(self, settings: StreamSettings, *, max_queue_seconds: float = 5.0) -> None:
        if not max_queue_seconds > 0:
            raise ValueError(f"max_queue_seconds must be > 0 s, got {max_queue_seconds}")
        self.settings = settings
        self.max_queue_seconds = max_queue_seconds
        self._info: SignalInfo | None = None
        self._entered = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handoff = Handoff()
        self._inlet: StreamInlet | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._rate_marks: collections.deque[tuple[float, int]] = collections.deque(maxlen=12)
        self._n_samples = 0
        self._n_reconnects = 0
        self._timeline: Timeline | None = None

    # -- public -----------------------------------------------------------------------
    @property
    def info(self) -> SignalInfo:
        """The connected stream (valid after ``__aenter__``)."""
        if self._info is None:
            raise RuntimeError("LSLSource.info is only known after `async with LSLSource(...)`.")
        return self._info

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("An LSLSource can be entered only once; create a new one.")
        self._entered = True
        self._loop = asyncio.get_running_loop()
        sinfo = await asyncio.to_thread(self._resolve, self.settings.timeout)
        await self._open(sinfo, expect=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True
        await self._close()

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Yield chunks as they arrive; raise StreamLostError when the stream stops.

        After :meth:`reconnect`, call ``chunks()`` again to go on reading.
        """
        if not self._handoff.open or self._closed:
            raise RuntimeError("LSLSource.chunks() needs an open source: use `async with LSLSource(...)`.")
        async for chunk in self._handoff.chunks():  # an error stays in place until reconnect()
            yield chunk

    async def reconnect(self) -> None:
        """Wait (cancellable, forever) until the stream sends samples again; then ``chunks()`` goes on.

        Returns only once a sample has arrived: a stream that is visible but silent (a stalled
        amplifier whose outlet stays open) is not back, so one outage is one loss and one return.
        Prefers a stream with the same source_id as before. Raises StreamError if it
        came back with another channel count, rate or channel names.
        """
        if not self._entered or self._closed:
            raise RuntimeError("LSLSource.reconnect() needs an open source: use `async with LSLSource(...)`.")
        await self._close()
        previous = self.info
        while True:
            sinfo = await asyncio.to_thread(self._find_again, previous.source_id)
            if sinfo is None:
                await asyncio.sleep(0.1)
                continue
            await self._open(sinfo, expect=previous, patient=True)
            if await self._first_chunk(sinfo, previous.source_id):
                break
            await self._close()  # gone again, or another outlet took its place: look again, quietly
        self._n_reconnects += 1

    async def _first_chunk(self, sinfo: Any, source_id: str) -> bool:
        """Wait for the reopened stream's first chunk (kept for ``chunks()``).

        The inlet stays open while the stream is silent (so no sample sent at its return is missed);
        every ``lost_after`` s we look whether another outlet has replaced it. False: look again.
        """
        getter = asyncio.ensure_future(self._handoff.peek())
        try:
            while True:
                done, _ = await asyncio.wait({getter}, timeout=self.settings.lost_after)
                if done:
                    break
                other = await asyncio.to_thread(self._find_again, source_id)
                if other is not None and other.uid != sinfo.uid:
                    return False
        finally:
            getter.cancel()  # no-op once done
        # A chunk stays first in line for chunks(), as does any other error (e.g. a wrong block shape).
        return not isinstance(getter.result(), StreamLostError)

    def stats(self) -> dict[str, Any]:
        """Counters for telemetry.

        samples (delivered), chunks, dropped_chunks (a slow consumer), dropped_samples (those chunks'
        samples plus overlap_samples), reconnects, rate (Hz, measured), queued_samples; from the
        timestamp checks: overlap_samples (resent or beyond real time, dropped), jumps_back and
        jumps_forward (clock jumps re-anchored), lag_reanchors, clock_offset_s (seconds added to the
        stream's timestamps now).
        """
        rate = 0.0
        marks = list(self._rate_marks)
        if len(marks) >= 2 and marks[-1][0] > marks[0][0]:
            rate = (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])
        timeline = self._timeline
        counts = timeline.counts if timeline is not None else None
        overlap = counts.overlap_samples if counts is not None else 0
        return {
            "samples": self._n_samples,
            "chunks": self._handoff.n_chunks,
            "dropped_chunks": self._handoff.n_dropped,
            "dropped_samples": self._handoff.n_dropped_samples + overlap,
            "reconnects": self._n_reconnects,
            "rate": rate,
            "queued_samples": self._handoff.queued_samples,
            "overlap_samples": overlap,
            "squeezed_samples": counts.squeezed_samples if counts is not None else 0,
            "jumps_back": counts.jumps_back if counts is not None else 0,
            "jumps_forward": counts.jumps_forward if counts is not None else 0,
            "lag_reanchors": counts.lag_reanchors if counts is not None else 0,
            "clock_offset_s": timeline.offset if timeline is not None else 0.0,
        }

    # -- resolving ------------------------------------------------------------------------
    def _resolve(self, timeout: float) -> Any:
        """Find the one usable stream matching the selector within ``timeout`` s (worker thread)."""
        s = self.settings
        selective = not (s.name is None and s.type is None and s.source_id is None)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            candidates = self._candidates(min(max(remaining, 0.05), 1.0))
            usable = [(info, d) for info, d in candidates if _refusal(d) is None]
            if usable:
                return self._pick(usable)
            if candidates and selective:  # the user asked for exactly this stream: say why not
                raise StreamError(next(r for _, d in candidates if (r := _refusal(d)) is not None))
            if time.monotonic() >= deadline:
                break
        visible = list_streams(timeout=1.0)
        if visible:
            listing = ", ".join(_one_line(d) for d in visible)
            raise StreamNotFoundError(
                f"No LSL stream with {_selector_text(s)} appeared within {s.timeout:g} s; the visible "
                f"streams are {listing}: select one with --stream NAME (or by type / source_id)."
            )
        raise StreamNotFoundError(
            f"No LSL stream with {_selector_text(s)} appeared within {s.timeout:g} s and no LSL streams "
            "are visible at all; start the amplifier's LSL app (or `brainharmonic replay FILE`) "
            "on this network, then select it with --stream NAME."
        )

    def _candidates(self, timeout: float) -> list[tuple[Any, dict[str, Any]]]:
        s = self.settings
        if s.name is None and s.type is None and s.source_id is None:
            infos = resolve_streams(timeout=timeout)
        else:
            # Returns as soon as one match is seen; a second short pass collects its siblings
            # (a player's annotation stream shares the data stream's source_id).
            infos = resolve_streams(timeout=timeout, name=s.name, stype=s.type, source_id=s.source_id)
            if infos and all(_refusal(_describe(i)) is not None for i in infos):
                more = resolve_streams(
                    timeout=0.3, name=s.name, stype=s.type, source_id=s.source_id, minimum=len(infos) + 1
                )
                infos = list({*infos, *more})
        return [(i, d) for i in infos if _matches(d := _describe(i), s)]

    def _pick(self, usable: list[tuple[Any, dict[str, Any]]]) -> Any:
        s = self.settings
        if len(usable) > 1 and s.name is None and s.type is None and s.source_id is None:
            eeg = [u for u in usable if u[1]["type"].upper() == "EEG"]
            if len(eeg) == 1:
                return eeg[0][0]
            listing = "; ".join(_one_line(d) for _, d in usable)
            raise StreamNotFoundError(
                f"Several LSL streams are visible ({listing}); select one with --stream NAME (or by type / source_id)."
            )
        # Several matches with a selector: the newest outlet is the live one.
        return max(usable, key=lambda u: u[0].created_at)[0]

    def _find_again(self, source_id: str) -> Any | None:
        """One short resolve pass for :meth:`reconnect` (worker thread); None if not visible yet."""
        try:
            candidates = self._candidates(0.5)
        except Exception:  # liblsl hiccups while a network changes: try again on the next poll
            return None
        usable = [(info, d) for info, d in candidates if _refusal(d) is None]
        same = [u for u in usable if source_id and u[1]["source_id"] == source_id]
        if same or usable:
            return self._pick(same or usable)
        return None

    # -- connection -------------------------------------------------------------------------
    async def _open(self, sinfo: Any, expect: SignalInfo | None, *, patient: bool = False) -> None:
        """Subscribe and start the reader; ``patient``: silence is no loss until the first sample."""
        inlet, info = await asyncio.to_thread(self._subscribe, sinfo)
        if expect is not None:
            problem = _difference(expect, info)
            if problem is not None:
                await asyncio.to_thread(destroy, inlet)
                raise StreamError(
                    f"LSL stream '{info.name}' came back with {problem}; "
                    "restart brainharmonic to use the new layout (the pipeline was built for the old one)."
                )
        self._inlet, self._info = inlet, info
        assert self._loop is not None
        if self._timeline is None:  # one timeline per session: it goes on across reconnects
            self._timeline = Timeline(info.sfreq, info.name)
        self._handoff.reset(self._loop, round(self.max_queue_seconds * info.sfreq))
        self._rate_marks.clear()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._read,
            args=(inlet, info, self._timeline, self._stop, patient),
            name=f"lsl-reader-{info.name}",
            daemon=True,
        )
        self._thread.start()

    @staticmethod
    def _subscribe(sinfo: Any) -> tuple[StreamInlet, SignalInfo]:
        """Open an inlet on the local clock and read the full description (worker thread)."""
        d = _describe(sinfo)
        inlet = StreamInlet(sinfo, max_buffered=30, recover=False, processing_flags=["clocksync"])
        # The first clock-offset estimate takes ~0.6 s of probes: take it now, while open_stream
        # waits out its own 0.5 s, rather than stalling the first pulled samples behind it.
        # open_stream goes first (in the helper thread) so that it takes the inlet lock first.
        open_error: list[BaseException] = []

        def subscribe() -> None:
            try:
                inlet.open_stream(timeout=_OPEN_TIMEOUT)
            except BaseException as exc:
                open_error.append(exc)

        opener = threading.Thread(target=subscribe, name="lsl-open", daemon=True)
        try:
            opener.start()
            inlet.time_correction(timeout=_OPEN_TIMEOUT)
            opener.join(_OPEN_TIMEOUT + 1)
            if open_error:
                raise open_error[0]
            full = inlet.get_sinfo(timeout=_OPEN_TIMEOUT)
            names = full.get_channel_names() or []
            units = full.get_channel_units() or []
        except (TimeoutError, LostError) as exc:
            destroy(inlet)
            raise StreamError(
                f"LSL stream {_one_line(d)} was found but could not be opened ({exc}); "
                "check that its host is reachable and try again."
            ) from None
        n = d["n_channels"]
        ch_names = tuple(names[i] if i < len(names) and names[i] else f"ch{i + 1}" for i in range(n))
        if len(set(ch_names)) != n:  # duplicate labels: keep them apart
            ch_names = tuple(f"{c}-{i + 1}" for i, c in enumerate(ch_names))
        unit_set = {u for u in units if u}
        info = SignalInfo(
            name=d["name"],
            sfreq=d["sfreq"],
            ch_names=ch_names,
            stype=d["type"] or "EEG",
            source_id=d["source_id"],
            units=_unit_text(unit_set.pop()) if len(unit_set) == 1 else "V",
        )
        return inlet, info

    async def _close(self) -> None:
        self._stop.set()
        thread, inlet = self._thread, self._inlet
        self._thread = self._inlet = None
        if thread is not None:
            await asyncio.to_thread(thread.join, 2.0)
        if inlet is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(destroy, inlet)

    # -- reader thread -------------------------------------------------------------------
    def _read(
        self, inlet: StreamInlet, info: SignalInfo, timeline: Timeline, stop: threading.Event, patient: bool
    ) -> None:
        n_ch = info.n_channels
        lost_after = self.settings.lost_after
        max_pull = max(1, int(info.sfreq * 0.1))
        last = time.monotonic()
        try:
            while not stop.is_set():
                sample, stamp = inlet.pull_sample(timeout=min(_POLL, lost_after))
                now = time.monotonic()
                if stamp is None:
                    if now - last > lost_after and not patient:
                        raise StreamLostError(
                            f"LSL stream '{info.name}' (source_id {info.source_id or '-'}) sent no samples "
                            f"for {lost_after:g} s; check the amplifier and its LSL app "
                            "(brainharmonic reconnects when it returns)."
                        )
                    continue
                rest, stamps = inlet.pull_chunk(timeout=0.0, max_samples=max_pull)
                k = len(stamps)
                data = np.empty((n_ch, 1 + k), dtype=np.float64)
                data[:, 0] = sample
                ts = np.empty(1 + k, dtype=np.float64)
                ts[0] = stamp
                if k:
                    _check_shape(info.name, rest.T, n_ch)
                    data[:, 1:] = rest.T
                    ts[1:] = stamps
                keep, ts, said = timeline.admit(ts, now)
                for sentence in said:
                    log.warning("%s", sentence)
                if not ts.size:
                    continue
                if ts.size < keep.size:
                    data = data[:, keep]
                last, patient = now, False
                self._n_samples += ts.size
                if not self._rate_marks or now - self._rate_marks[-1][0] >= 0.5:
                    self._rate_marks.append((now, self._n_samples))
                self._handoff.put((data, ts, now))
        except LostError:
            self._handoff.put(
                StreamLostError(
                    f"LSL stream '{info.name}' (source_id {info.source_id or '-'}) was lost "
                    "(its outlet closed); "
                    "check the amplifier and its LSL app (brainharmonic reconnects when it returns)."
                )
            )
        except BaseException as exc:  # forwarded to the loop, never swallowed
            self._handoff.put(exc)


def _difference(old: SignalInfo, new: SignalInfo) -> str | None:
    """How a returning stream differs from the one the pipeline was built for (None if alike)."""
    if new.n_channels != old.n_channels:
        return f"{new.n_channels} channels instead of {old.n_channels}"
    if new.sfreq != old.sfreq:
        return f"a rate of {new.sfreq:g} Hz instead of {old.sfreq:g} Hz"
    if new.ch_names != old.ch_names:
        changed = [f"{a}->{b}" for a, b in zip(old.ch_names, new.ch_names, strict=True) if a != b]
        return f"other channel names ({', '.join(changed[:5])})"
    return None
