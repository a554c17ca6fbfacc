"""Wires the stages: source → signal → brain → music → sinks, for live runs and offline renders.

One code path: :class:`Engine` turns chunks into windows, brain states and notes the same
way whether the samples come from a live LSL stream (wall clock) or a file (virtual clock,
as fast as the CPU allows). Only the source and the scheduler's clock differ.

Live runs use two tasks joined by a small drop-oldest queue of windows, so a slow
composing step can never stall the EEG reader (whose samples are always recorded).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .brain.latent_map import SessionCentres
from .config import InstrumentSettings, Settings
from .errors import ConfigError, DataError, StreamLostError
from .events import BrainState, Chunk, Note, SignalInfo, Window
from .music.clock import Scheduler
from .music.harmony import BarPlan
from .music.midiclock import ClockFollower, ClockTrack
from .recording import SessionRecorder
from .sinks.base import Sink
from .sources.base import Source

log = logging.getLogger("brainharmonic")

#: An incoming MIDI clock's tempo must move this far (BPM) from ours before we follow (its jitter stays put).
CLOCK_IN_JITTER = 0.5

StateListener = Callable[[BrainState, list[Note]], None]
#: Sees each preprocessed window after its notes are scheduled (e.g. OSC's own band powers); keep it quick.
WindowListener = Callable[[Window, BrainState], None]


class Engine:
    """Chunks in, (brain state, notes) out; owns every stateful stage between source and scheduler."""

    def __init__(self, info: SignalInfo, settings: Settings) -> None:
        from .brain.classic import ClassicBrain
        from .music.classic import ClassicComposer
        from .music.ensemble import resolve_instruments
        from .signal import SignalChain

        self.info = info
        self.settings = settings
        self.chain = SignalChain(info, settings.signal, settings.quality, settings.artifacts)
        self.brain: Any
        if settings.music.mode == "learned":
            # The learned encoder adds a latent vector and a brain token to every brain state.
            from .brain.encoder import LearnedBrain

            self.brain = LearnedBrain(info, settings.signal, settings.bands, settings.encoder)
        else:
            self.brain = ClassicBrain(info, settings.signal, settings.bands)
        self.instruments: dict[str, InstrumentSettings] = resolve_instruments(list(self.brain.groups), settings.music)
        # Where each latent source of this session sits (brain → music map centring): fed with every
        # state in any mode, so switching to learned mode mid-session keeps the calibration.
        self.centres = SessionCentres()
        self.composer: Any
        if settings.music.mode == "learned":
            # The generator composes; the brain latent steers it through the brain → music latent map.
            from .music.learned import LearnedComposer

            self.composer = LearnedComposer(
                self.instruments, settings.music, settings.generator, settings.harmony, centres=self.centres
            )
        else:
            self.composer = ClassicComposer(self.instruments, settings.music, settings.harmony)
        self.composer.gestures = settings.gestures
        from .signal.channels import fallback_notice

        #: one-line remarks about this input a person should see (log, telemetry, session events)
        notice = None if info.stype == "fMRI" else fallback_notice(info.name, info.ch_names, self.brain.groups)
        self.notices: list[str] = [notice] if notice is not None else []
        for notice in self.notices:
            log.warning("%s", notice)
        self._composed_until: float | None = None
        self.mode: str = settings.music.mode
        # Everything built so far (models, MNE, the signal chain) lives for the whole run: take it out of the
        # cyclic garbage collector's view, so a full collection mid-run costs microseconds instead of tens
        # of milliseconds (measured: 35-140 ms stalls in the learned composer's bars without this).
        gc.collect()
        gc.freeze()

    def set_mode(self, mode: str) -> dict[str, Any]:
        """Switch composers live (an MQTT ``set_mode``): the new one takes over the beat grid, the plan,
        the arbiter and the instruments from the end of what is composed, so nothing stops or jumps.

        The brain stays as it is: a classic brain gives the learned composer band-power latents (no
        encoder latents) until the service is restarted with ``--mode learned``.
        Raises ModelError (nothing changes) when the learned models cannot be opened.
        """
        if mode == self.mode:
            return {}
        old = self.composer
        music = self.settings.music.model_copy(update={"tempo": old.tempo, "key": old.key, "scale": old.scale})
        instruments = dict(self.composer.instruments)
        new: Any
        if mode == "learned":
            from .music.learned import LearnedComposer

            new = LearnedComposer(
                instruments, music, self.settings.generator, self.settings.harmony, centres=self.centres
            )
        else:
            from .music.classic import ClassicComposer

            new = ClassicComposer(instruments, music, self.settings.harmony)
        new.adopt(self.composer, self._composed_until)
        self.composer, self.mode = new, mode
        if mode == "learned" and not hasattr(self.brain, "spec"):  # a classic brain: no encoder latents
            return {"note": "steered by band powers (no encoder latents) until restarted with --mode learned"}
        return {}

    def windows(self, chunk: Chunk) -> list[Window]:
        return self.chain.push(chunk)

    def compose(self, window: Window) -> tuple[BrainState, list[Note]]:
        """Brain state for one window and the notes for the music span it opens.

        The span is the next hop of music starting one lookahead after the window's end:
        [window end + lookahead, window end + lookahead + hop). Nothing is composed for a time
        the window could not know about yet, and nothing earlier than the lookahead, so notes
        are not late as long as processing takes less than the lookahead. After a gap (dropped
        windows, a lost stream) the span starts afresh instead of catching up with late notes.
        """
        state = self.brain.process(window)
        self.centres.observe(state)
        start = window.t_end + self.settings.music.lookahead
        end = start + self.settings.signal.hop
        if self._composed_until is not None:
            start = max(start, self._composed_until)
        notes = self.composer.compose(state, start, end) if end > start else []
        if state.events:
            notes += self.composer.gesture_notes(state, start)
        self._composed_until = max(end, self._composed_until or end)
        return state, notes

    def reset_signal(self) -> None:
        """After a reconnect: filters and window ring start afresh; session time continues."""
        self.chain.reset()


class WindowQueue:
    """Bounded hand-off between reader and composer: drops the oldest window, never blocks the reader."""

    def __init__(self, maxsize: int = 4) -> None:
        self._items: collections.deque[Window | None] = collections.deque()
        self._maxsize = maxsize
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, item: Window | None) -> None:
        if item is not None and len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    async def get(self) -> Window | None:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    @property
    def depth(self) -> int:
        return len(self._items)


@dataclass
class RunStats:
    """What a run did, for telemetry, logs and the CLI summary."""

    windows: int = 0
    notes: int = 0
    stream_losses: int = 0
    reconnects: int = 0
    latencies_ms: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=10_000))
    stopped_by: str = ""

    def latency_summary(self) -> dict[str, float]:
        if not self.latencies_ms:
            return {}
        a = np.asarray(self.latencies_ms)
        return {"p50_ms": float(np.median(a)), "p99_ms": float(np.percentile(a, 99)), "n": float(a.size)}


@dataclass
class RenderResult:
    """Everything an offline render produced (kept in memory: renders are bounded by their input)."""

    notes: list[Note]
    states: list[BrainState]
    instruments: dict[str, InstrumentSettings]
    info: SignalInfo
    seconds: float
    bars: list[BarPlan] = field(default_factory=list)  #: the harmonic plan, bar by bar
    arbiter_costs: list[float] = field(default_factory=list)  #: seconds of arbiter work per bar


def _open_sinks(sinks: Sequence[Sink], engine: Engine) -> None:
    for sink in sinks:
        sink.open(engine.instruments, engine.settings.music.tempo)


async def render(
    settings: Settings,
    source: Source,
    sinks: Sequence[Sink] = (),
    *,
    recorder_root: Any = None,
    listeners: Sequence[StateListener] = (),
) -> RenderResult:
    """Run the whole pipeline on an offline source against a virtual clock; deterministic for a seed."""
    states: list[BrainState] = []
    notes_all: list[Note] = []
    async with source:
        engine = Engine(source.info, settings)
        _open_sinks(sinks, engine)
        last_t = 0.0
        async with Scheduler(sinks, realtime=False) as scheduler:
            async for chunk in source.chunks():
                for window in engine.windows(chunk):
                    state, notes = engine.compose(window)
                    states.append(state)
                    notes_all.extend(notes)
                    scheduler.schedule(notes)
                    scheduler.advance(window.t_end)
                    for listener in listeners:
                        listener(state, notes)
                if chunk.n_samples:
                    last_t = float(chunk.timestamps[-1])
            await scheduler.drain()
        for sink in sinks:
            sink.close()
    if not states:
        raise DataError(
            f"Input '{source.info.name}' ({last_t:.1f} s) is shorter than one {settings.signal.window:g} s window, "
            "so there is nothing to play; pass a longer recording (or a shorter [signal] window)."
        )
    if not any(s.signal_ok for s in states):
        raise DataError(
            f"Input '{source.info.name}' has no usable signal: in every window every channel is flat, NaN or "
            "railing, so there is no brain to play; check the recording (and its units)."
        )
    bars = list(engine.composer.plan.history)
    costs = list(engine.composer.arbiter.bar_costs)
    return RenderResult(notes_all, states, engine.instruments, source.info, last_t, bars, costs)


class LivePipeline:
    """A live run: reads a realtime source until stopped, plays notes on time, records the session.

    Every way out (end of input, stop event from Ctrl-C/SIGTERM, error, stream loss)
    leaves the synth silent: the scheduler's exit sends all-notes-off on every channel used.
    """

    def __init__(
        self,
        settings: Settings,
        source: Source,
        sinks: Sequence[Sink],
        *,
        record_root: Any = None,
        duration: float | None = None,
        listeners: Sequence[StateListener] = (),
    ) -> None:
        self.settings = settings
        self.source = source
        self.sinks = list(sinks)
        self.record_root = record_root
        self.duration = duration
        self.listeners = list(listeners)
        self.window_listeners: list[WindowListener] = []
        self.stats = RunStats()
        self.stop_event: asyncio.Event | None = None
        self.recorder: SessionRecorder | None = None
        self.engine: Engine | None = None
        self.scheduler: Scheduler | None = None
        self.clock: ClockTrack | None = None  #: MIDI clock out (output.midi_clock), per run
        self.clock_in: ClockFollower | None = None  #: the incoming MIDI clock followed (output.clock_in)
        self._queue: WindowQueue | None = None
        self._last_state: BrainState | None = None
        self._signal_ok: bool | None = None  # whether the latest window had any good channel
        self._silent_groups: frozenset[str] = frozenset()  # groups without a good channel in the latest window
        self.quality: dict[str, dict[str, Any]] = {}  #: the latest per-channel quality report

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the run to end (thread-safe only via loop.call_soon_threadsafe)."""
        if self.stop_event is not None and not self.stop_event.is_set():
            self.stats.stopped_by = reason
            self.stop_event.set()

    async def run(self) -> RunStats:
        self.stop_event = asyncio.Event()
        self._queue = WindowQueue()
        self.clock = ClockTrack() if self.settings.output.midi_clock else None
        self.clock_in = self._open_clock_in()  # a missing port fails before the stream is waited for
        try:
            return await self._run()
        finally:
            if self.clock_in is not None:
                self.clock_in.close()

    async def _run(self) -> RunStats:
        async with self.source:
            engine = self.engine = Engine(self.source.info, self.settings)
            _open_sinks(self.sinks, engine)
            recorder = None
            if self.record_root is not None:
                recorder = self.recorder = SessionRecorder(self.record_root, self.settings, self.source.info)
                recorder.__enter__()
                log.info("recording session to %s", recorder.folder)
                for notice in engine.notices:
                    recorder.event("notice", message=notice)
            try:
                async with Scheduler(self.sinks, realtime=True) as scheduler:
                    self.scheduler = scheduler
                    await self._supervise(engine, scheduler)
                    if self.stats.stopped_by == "end of input":
                        await scheduler.drain()
            finally:
                for sink in self.sinks:
                    sink.close()
                if self.scheduler is not None:
                    self.stats.notes = self.scheduler.played
                if recorder is not None:
                    if self.scheduler is not None:
                        recorder.write_notes(self.scheduler.take_played())
                    recorder.event("stopped", reason=self.stats.stopped_by)
                    recorder.close()
        return self.stats

    async def _supervise(self, engine: Engine, scheduler: Scheduler) -> None:
        assert self.stop_event is not None
        tasks = {
            asyncio.create_task(self._read(engine, scheduler), name="reader"),
            asyncio.create_task(self._compose(engine, scheduler), name="composer"),
            asyncio.create_task(self.stop_event.wait(), name="stop"),
        }
        if self.duration is not None:
            tasks.add(asyncio.create_task(self._timer(self.duration), name="timer"))
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            reader = next(t for t in tasks if t.get_name() == "reader")
            if reader in done and reader.exception() is None:
                # End of input: let the composer finish the queued windows first.
                composer = next(t for t in tasks if t.get_name() == "composer")
                await composer
                self.stats.stopped_by = self.stats.stopped_by or "end of input"
        finally:
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                self.stats.stopped_by = self.stats.stopped_by or f"error: {r}"
                raise r

    async def _timer(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.stop(f"duration {seconds:g} s reached")

    async def _read(self, engine: Engine, scheduler: Scheduler) -> None:
        assert self._queue is not None
        origin_set = False
        while True:
            try:
                async for chunk in self.source.chunks():
                    if not origin_set and chunk.n_samples:
                        # LSL timestamps are on the local monotonic clock: music time 0 is the first sample.
                        scheduler.set_origin(float(chunk.timestamps[0]))
                        origin_set = True
                    if self.recorder is not None:
                        self.recorder.write_chunk(chunk)
                    for window in engine.windows(chunk):
                        if window.quality is not None:
                            self._on_quality(window)
                        self._queue.put(window)
                break
            except StreamLostError as exc:
                self.stats.stream_losses += 1
                scheduler.panic()
                log.warning("%s All notes off; waiting for the stream to come back.", exc)
                if self.recorder is not None:
                    self.recorder.event("stream_lost", message=str(exc))
                reconnect = getattr(self.source, "reconnect", None)
                if not self.settings.stream.reconnect or reconnect is None:
                    raise
                await reconnect()
                engine.reset_signal()
                self.stats.reconnects += 1
                log.warning("Stream %s is back; music resumes.", self.source.info.name)
                if self.recorder is not None:
                    self.recorder.event("stream_back")
        self._queue.put(None)

    async def _compose(self, engine: Engine, scheduler: Scheduler) -> None:
        assert self._queue is not None
        while (window := await self._queue.get()) is not None:
            before = engine._composed_until
            state, notes = engine.compose(window)
            scheduler.schedule(notes)
            self._last_state = state
            if self.clock is not None and engine._composed_until is not None:
                # The clock runs on through spans without notes (a gap), but never sends a tick late.
                start = window.t_end + self.settings.music.lookahead if before is None else before
                self._tick(engine, scheduler, max(start, scheduler.music_now()), engine._composed_until)
            if window.received is not None:  # arrival on this machine's clock → notes scheduled
                self.stats.latencies_ms.append((time.monotonic() - window.received) * 1e3)
            self.stats.windows += 1
            self.stats.notes = scheduler.played
            self._watch_signal(state)
            if self.recorder is not None:
                self.recorder.write_state(state)
                self.recorder.write_notes(scheduler.take_played())
            for listener in self.listeners:
                listener(state, notes)
            for window_listener in self.window_listeners:
                window_listener(window, state)

    def _watch_signal(self, state: BrainState) -> None:
        """Say once (log, session events) when every channel, or a whole group, stops or starts carrying signal."""
        name = self.source.info.name
        ok = state.signal_ok
        if ok != self._signal_ok and not (ok and self._signal_ok is None):
            if ok:
                log.warning("Stream '%s' carries signal again; the music comes back.", name)
            else:
                log.warning(
                    "Every channel of stream '%s' is bad (flat, NaN or railing): holding silence until an electrode "
                    "recovers; check the headset's contact and its amplifier.",
                    name,
                )
            if self.recorder is not None:
                self.recorder.event("signal_back" if ok else "no_signal", t=round(state.t_end, 3))
        self._signal_ok = ok
        silent = frozenset(g.name for g in state.groups if g.n_good == 0)
        if ok and silent != self._silent_groups:
            for g in sorted(silent - self._silent_groups):
                log.warning(
                    "Channel group '%s' has no good channel: its instrument fades out; check those electrodes.", g
                )
            for g in sorted(self._silent_groups - silent):
                log.warning("Channel group '%s' carries signal again: its instrument fades back in.", g)
            if self.recorder is not None:
                self.recorder.event("groups_silent", t=round(state.t_end, 3), groups=sorted(silent))
        if ok:
            self._silent_groups = silent

    def _on_quality(self, window: Window) -> None:
        """A quality report (once per ``[quality] interval``): kept for telemetry and recorded."""
        from .signal.quality import quality_record

        assert window.quality is not None
        impedance = self.source.stats().get("impedance", {})
        channels = {q.name: quality_record(q) | {"impedance": impedance.get(q.name)} for q in window.quality}
        self.quality = channels
        if self.recorder is not None:
            self.recorder.write_quality({"t": round(window.t_end, 3), "channels": channels})

    def snapshot(self) -> dict[str, Any]:
        """Health figures for logs and telemetry."""
        out: dict[str, Any] = {
            "signal": {"ok": self._signal_ok is not False, "silent_groups": sorted(self._silent_groups)},
            "windows": self.stats.windows,
            "notes": self.stats.notes,
            "stream_losses": self.stats.stream_losses,
            "reconnects": self.stats.reconnects,
            "queue_depth": self._queue.depth if self._queue else 0,
            "windows_dropped": self._queue.dropped if self._queue else 0,
            "latency": self.stats.latency_summary(),
        }
        stats = getattr(self.source, "stats", None)
        if callable(stats):
            out["source"] = stats()
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler.stats()
        if self.engine is not None:
            out["quality"] = self.quality
            out["notices"] = list(self.engine.notices)
            detector = self.engine.chain.inspector.artifacts if self.engine.chain.inspector is not None else None
            if detector is not None:
                out["artifacts"] = dict(detector.counts)
        return out

    # ------------------------------------------------------------------ live control hooks
    # Used by control/handler.py (MQTT commands, multi-performer sync); the run itself never calls them.
    # They run on the event loop, between windows, so they never race the composer task.

    @property
    def music_frontier(self) -> float | None:
        """Music time (s) up to which notes are composed and scheduled; None before the first window."""
        return None if self.engine is None else self.engine._composed_until

    def recompose(self, state: BrainState, start: float) -> list[Note]:
        """Drop the notes scheduled at or after ``start`` and compose ``[start, frontier)`` again.

        After a live change (tempo, key, register) this makes it heard from ``start`` instead of after
        the lookahead. Needs a composer that can ``rewind`` (the classic one); otherwise does nothing.
        """
        engine, scheduler = self.engine, self.scheduler
        rewind = getattr(engine.composer, "rewind", None) if engine is not None else None
        if engine is None or scheduler is None or rewind is None or engine._composed_until is None:
            return []
        end = engine._composed_until
        if end <= start:
            return []
        scheduler.cancel(after=start)  # clock ticks after start too
        rewind(start)
        if self.clock is not None:
            self.clock.rewind(start)
        notes = engine.composer.compose(state, start, end)
        scheduler.schedule(notes)
        if self.clock is not None:
            self._tick(engine, scheduler, start, end)
        if self.recorder is not None:
            self.recorder.event("recomposed", from_time=round(start, 6))
        return notes

    # ------------------------------------------------------------------ MIDI clock

    def _tick(self, engine: Engine, scheduler: Scheduler, start: float, end: float) -> None:
        """Schedule the MIDI clock for ``[start, end)`` from the composer's beat timeline."""
        assert self.clock is not None
        msgs = self.clock.span(engine.composer, start, end)
        if msgs:
            scheduler.schedule_messages(msgs)

    def _open_clock_in(self) -> ClockFollower | None:
        """Open the MIDI input named by ``output.clock_in``; its tempo estimates come to the event loop."""
        port = self.settings.output.clock_in
        if port is None:
            return None
        if self.settings.control.follow is not None:
            raise ConfigError(
                f"output.clock_in ({port!r}) and control.follow ({self.settings.control.follow!r}) would both set "
                "the tempo; follow either the MIDI clock or the sync leader, not both."
            )
        from .control import handler  # noqa: F401  (imported now, not on the event loop at the first change)

        loop = asyncio.get_running_loop()

        def on_tempo(bpm: float) -> None:  # MIDI thread
            with contextlib.suppress(RuntimeError):  # the loop closed while the port was still open
                loop.call_soon_threadsafe(self._follow_clock, bpm)

        def on_transport(what: str) -> None:  # MIDI thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(log.info, "MIDI clock input %s: %s", port, what)

        follower = ClockFollower(port, api=self.settings.output.midi_api, on_tempo=on_tempo, on_transport=on_transport)
        follower.open()
        log.info("following the MIDI clock on %s", follower.port_name)
        return follower

    def _follow_clock(self, bpm: float) -> None:
        """Event loop: an incoming clock's tempo estimate; followed once it is ``CLOCK_IN_JITTER`` away."""
        composer = None if self.engine is None else self.engine.composer
        if composer is None or not hasattr(composer, "retime") or self.scheduler is None:
            return
        bpm = round(min(300.0, max(20.0, bpm)), 2)
        if abs(float(composer.tempo) - bpm) >= CLOCK_IN_JITTER:
            self.retime_now(bpm)

    def retime_now(self, bpm: float) -> float | None:
        """Play at ``bpm`` from just after now; what was scheduled beyond is composed again.

        The same cut as the MQTT ``set_tempo`` command (control/handler.py): the composer changes tempo
        ``CUT_MARGIN`` after now and :meth:`recompose` makes it heard at once. Returns the music time of
        the change, or None before the first window.
        """
        from .control.handler import CUT_MARGIN

        engine, scheduler = self.engine, self.scheduler
        if engine is None or scheduler is None or not scheduler.running or engine._composed_until is None:
            return None
        at = max(scheduler.music_now() + CUT_MARGIN, 0.0)
        engine.composer.retime(at, bpm)
        if self._last_state is not None and engine._composed_until > at:
            self.recompose(self._last_state, at)
        return at
