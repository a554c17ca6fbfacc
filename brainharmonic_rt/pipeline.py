"""Wires the stages: source → signal → brain → music → sinks, for live runs and offline renders.

One code path: :class:`Engine` turns chunks into windows, brain states and scheduled notes the same
way whether the samples come from a live LSL stream (wall clock) or a file (virtual clock, as fast as
the CPU allows); :func:`render` and the live loop call the same :meth:`Engine.step`. Only the source
and the scheduler's clock differ.

The engine is the one owner of live edits: it holds the composed frontier, the last brain state and
the MIDI clock track, and :meth:`Engine.apply` is the only way a live change (an MQTT or web command,
a sync leader, an incoming MIDI clock, a config reload) reaches the music: applied ``CUT_MARGIN``
after now, with the notes already scheduled beyond that composed again, in either mode.

Live runs use two tasks (reader and composer, under one :class:`asyncio.TaskGroup`) joined by a small
drop-oldest :class:`WindowStream`, so a slow composing step can never stall the EEG reader (whose
samples are always recorded).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .brain.latent_map import SessionCentres
from .config import InstrumentSettings, Settings
from .errors import ConfigError, DataError, StreamLostError
from .events import BrainState, Chunk, Note, SignalInfo, Window
from .music.composer import Composer
from .music.harmony import BarPlan
from .recording import SessionRecorder
from .sinks.base import RecordsAudio, Sink
from .sinks.midiclock import ClockTrack
from .sinks.scheduler import Scheduler
from .sources.base import Source
from .sources.midiclock import ClockFollower

if TYPE_CHECKING:
    from .brain.classic import ClassicBrain
    from .brain.encoder import LearnedBrain

log = logging.getLogger("brainharmonic")

#: A live change applies this long after "now", so the notes composed again are never late (applying takes
#: ~0.3 ms in classic mode, ~2 ms in learned mode).
CUT_MARGIN = 0.01
#: An incoming MIDI clock's tempo must move this far (BPM) from ours before we follow (its jitter stays put).
CLOCK_IN_JITTER = 0.5

StateListener = Callable[[BrainState, list[Note]], None]
#: Sees each preprocessed window after its notes are scheduled (e.g. OSC's own band powers); keep it quick.
WindowListener = Callable[[Window, BrainState], None]


class Engine:
    """Chunks in, scheduled notes out; owns every stateful stage between source and scheduler, and every
    live edit (:meth:`apply`)."""

    def __init__(self, info: SignalInfo, settings: Settings, *, midi_clock: bool = False) -> None:
        from .brain.classic import ClassicBrain
        from .music.classic import ClassicComposer
        from .music.ensemble import resolve_instruments
        from .signal import SignalChain

        self.info = info
        self.settings = settings
        self.chain = SignalChain(info, settings.signal, settings.quality, settings.artifacts)
        self.brain: ClassicBrain | LearnedBrain
        if settings.music.mode == "learned":
            from .music.ensemble_composer import missing_learned_models

            missing = missing_learned_models(settings.encoder.model, settings.generator.model)
            if missing:
                log.warning(
                    "Learned mode needs %s, which is missing; playing classic mode instead "
                    "(restore models/ or pass --mode classic).",
                    ", ".join(str(m) for m in missing),
                )
                settings = settings.model_copy(update={"music": settings.music.model_copy(update={"mode": "classic"})})
                self.settings = settings
        if settings.music.mode == "learned":
            # The learned encoder (EEG, or fMRI for fMRI sources) adds a latent vector and a brain token.
            from .brain.learned_brain import learned_brain

            self.brain = learned_brain(info, settings.signal, settings.bands, settings.encoder)
        else:
            self.brain = ClassicBrain(info, settings.signal, settings.bands)
        self.instruments: dict[str, InstrumentSettings] = resolve_instruments(list(self.brain.groups), settings.music)
        # Where each latent source of this session sits (brain → music map centring): fed with every
        # state in any mode, so switching to learned mode mid-session keeps the calibration.
        self.centres = SessionCentres()
        self.composer: Composer[Any]
        if settings.music.mode == "learned":
            # The generator composes; the brain latent steers it through the brain → music latent map.
            from .music.ensemble_composer import learned_composer

            self.composer = learned_composer(
                self.instruments, settings.music, self._generator_settings(), settings.harmony, centres=self.centres
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
        self.mode: str = settings.music.mode
        self.encodes = settings.music.mode == "learned"  #: the brain carries encoder latents
        self.scheduler: Scheduler | None = None  #: where notes go (:meth:`start`)
        self.clock = ClockTrack() if midi_clock else None  #: MIDI clock out, ticked with every composed span
        self._frontier: float | None = None
        self._last_state: BrainState | None = None
        self.recomposed = 0  #: live changes that re-composed scheduled notes

    # -- the step: one window in, its notes scheduled ---------------------------------------------

    def start(self, scheduler: Scheduler) -> None:
        """Send notes (and MIDI clock ticks) to ``scheduler`` from now on."""
        self.scheduler = scheduler

    @property
    def frontier(self) -> float | None:
        """Music time (s) up to which notes are composed and scheduled; None before the first window."""
        return self._frontier

    @property
    def last_state(self) -> BrainState | None:
        """The latest brain state (a live change composes again with it)."""
        return self._last_state

    def windows(self, chunk: Chunk) -> list[Window]:
        return self.chain.push(chunk)

    def step(self, window: Window) -> tuple[BrainState, list[Note]]:
        """Brain state for one window and the notes of the music span it opens, scheduled.

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
        before = self._frontier
        if before is not None:
            start = max(start, before)
        notes = self.composer.compose(state, start, end) if end > start else []
        if state.events:
            notes += self.composer.gesture_notes(state, start)
        self._frontier = max(end, before if before is not None else end)
        self._last_state = state
        if self.scheduler is not None:
            self.scheduler.schedule(notes)
            # The clock runs on through spans without notes (a gap), but never sends a tick late.
            tick_from = window.t_end + self.settings.music.lookahead if before is None else before
            self._tick(max(tick_from, self.scheduler.music_now()), self._frontier)
        return state, notes

    # -- live edits --------------------------------------------------------------------------------

    def apply(self, change: Callable[[float], object]) -> float:
        """Apply ``change(at)`` to the composer from ``at`` = now + :data:`CUT_MARGIN` on and compose what
        was scheduled beyond ``at`` again, so the change is heard at once; returns ``at``.

        ``change`` must validate before it mutates: if it raises, nothing has changed. Before the first
        window (nothing scheduled yet) the change simply applies from ``at``.
        """
        if self.scheduler is None or not self.scheduler.running:
            raise RuntimeError("Engine.apply needs a running scheduler (Engine.start); the run has not begun.")
        at = max(self.scheduler.music_now() + CUT_MARGIN, 0.0)
        change(at)
        self._recompose(at)
        return at

    def _recompose(self, at: float) -> None:
        """Drop what is scheduled from ``at`` on and compose ``[at, frontier)`` again with the last state."""
        end, state, scheduler = self._frontier, self._last_state, self.scheduler
        if end is None or state is None or scheduler is None or end <= at:
            return
        scheduler.cancel(after=at)  # clock ticks after ``at`` too
        self.composer.rewind(at)
        if self.clock is not None:
            self.clock.rewind(at)
        scheduler.schedule(self.composer.compose(state, at, end))
        self._tick(at, end)
        self.recomposed += 1

    def _tick(self, start: float, end: float) -> None:
        """Schedule the MIDI clock for ``[start, end)`` from the composer's beat timeline."""
        if self.clock is not None and self.scheduler is not None:
            msgs = self.clock.span(self.composer, start, end)
            if msgs:
                self.scheduler.schedule_messages(msgs)

    def _generator_settings(self) -> Any:
        """[generator] settings, with the brain's own latent map when its latents need one (fMRI).

        The fMRI encoder's map was fitted to the per-instrument generator's music space
        (``models/generator_latent.npz``), so, unless a model is named, fMRI plays that generator.
        """
        own = getattr(self.brain, "latent_map", None)
        gen = self.settings.generator
        if own is None or gen.latent_map is not None:
            return gen
        from .music.generator import DEFAULT_MODEL

        return gen.model_copy(update={"latent_map": own, "model": gen.model or DEFAULT_MODEL})

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
        new: Composer[Any]
        if mode == "learned":
            from .music.ensemble_composer import learned_composer

            new = learned_composer(
                instruments, music, self._generator_settings(), self.settings.harmony, centres=self.centres
            )
        else:
            from .music.classic import ClassicComposer

            new = ClassicComposer(instruments, music, self.settings.harmony)
        new.adopt(self.composer, self._frontier)
        self.composer, self.mode = new, mode
        if mode == "learned" and not self.encodes:
            return {"note": "steered by band powers (no encoder latents) until restarted with --mode learned"}
        return {}

    def set_program(self, name: str, program: int) -> None:
        """An instrument's program from now on (the caller sends the program change to the sinks)."""
        self.composer.set_program(name, program)
        self.instruments[name] = self.composer.instruments[name]

    def reset_signal(self) -> None:
        """After a reconnect: filters and window ring start afresh; session time continues."""
        self.chain.reset()


class WindowStream:
    """Bounded hand-off between reader and composer: drops the oldest window, never blocks the reader,
    and ends (``async for`` stops) once :meth:`close` is called and what was queued is taken."""

    def __init__(self, maxsize: int = 4) -> None:
        self._items: collections.deque[Window] = collections.deque()
        self._maxsize = maxsize
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def put(self, window: Window) -> None:
        if self._closed:
            raise RuntimeError("WindowStream is closed; no window can be added.")
        if len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(window)
        self._ready.set()

    def close(self) -> None:
        """No more windows: the consumer ends after taking those already queued."""
        self._closed = True
        self._ready.set()

    async def __aiter__(self) -> AsyncIterator[Window]:
        while True:
            while not self._items:
                if self._closed:
                    return
                self._ready.clear()
                await self._ready.wait()
            yield self._items.popleft()

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
    composer_stats: dict[str, Any] = field(default_factory=dict)  #: what the guard did (Composer.stats)


def _open_sinks(sinks: Sequence[Sink], engine: Engine, stack: contextlib.ExitStack | None = None) -> None:
    """Open each sink for the engine's instruments; with ``stack``, each is closed when the stack unwinds."""
    for sink in sinks:
        sink.open(engine.instruments, engine.settings.music.tempo)
        if stack is not None:
            stack.callback(sink.close)


async def render(
    settings: Settings,
    source: Source,
    sinks: Sequence[Sink] = (),
    *,
    listeners: Sequence[StateListener] = (),
) -> RenderResult:
    """Run the whole pipeline on an offline source against a virtual clock; deterministic for a seed."""
    states: list[BrainState] = []
    notes_all: list[Note] = []
    last_t = 0.0
    async with source:
        engine = Engine(source.info, settings)
        with contextlib.ExitStack() as closing:
            _open_sinks(sinks, engine, closing)
            async with Scheduler(sinks, realtime=False) as scheduler:
                engine.start(scheduler)
                async for chunk in source.chunks():
                    for window in engine.windows(chunk):
                        state, notes = engine.step(window)
                        scheduler.advance(window.t_end)
                        states.append(state)
                        notes_all.extend(notes)
                        for listener in listeners:
                            listener(state, notes)
                    if chunk.n_samples:
                        last_t = float(chunk.timestamps[-1])
                await scheduler.drain()
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
    stats = engine.composer.stats()
    return RenderResult(notes_all, states, engine.instruments, source.info, last_t, bars, costs, stats)


class _Stopped(Exception):
    """Raised inside the run's task group to end it (stop requested, duration reached, end of input)."""


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
        self.clock_in: ClockFollower | None = None  #: the incoming MIDI clock followed (output.clock_in)
        self._windows: WindowStream | None = None
        self._signal_ok: bool | None = None  # whether the latest window had any good channel
        self._silent_groups: frozenset[str] = frozenset()  # groups without a good channel in the latest window
        self.quality: dict[str, dict[str, Any]] = {}  #: the latest per-channel quality report

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the run to end (thread-safe only via loop.call_soon_threadsafe)."""
        if self.stop_event is not None and not self.stop_event.is_set():
            self.stats.stopped_by = reason
            self.stop_event.set()

    async def run(self) -> RunStats:
        """Play until stopped; every resource (clock input, source, recorder, sinks, scheduler) is closed in
        the reverse order it was opened, whatever ends the run."""
        self.stop_event = asyncio.Event()
        self._windows = WindowStream()
        async with contextlib.AsyncExitStack() as stack:
            self.clock_in = self._open_clock_in()  # a missing port fails before the stream is waited for
            if self.clock_in is not None:
                stack.callback(self.clock_in.close)
            await stack.enter_async_context(self.source)
            engine = self.engine = Engine(self.source.info, self.settings, midi_clock=self.settings.output.midi_clock)
            # Everything built so far (models, MNE, the signal chain) lives for the whole run: take it out of
            # the cyclic garbage collector's view, so a full collection mid-run costs microseconds instead of
            # tens of milliseconds (measured: 35-140 ms stalls in the learned composer's bars without this).
            gc.collect()
            gc.freeze()
            stack.callback(gc.unfreeze)
            _open_sinks(self.sinks, engine, stack.enter_context(contextlib.ExitStack()))
            if self.record_root is not None:
                self.recorder = stack.enter_context(SessionRecorder(self.record_root, self.settings, self.source.info))
                log.info("recording session to %s", self.recorder.folder)
                self.recorder.set_instruments(engine.composer.instruments)
                for notice in self._notices():
                    self.recorder.event("notice", message=notice)
                for sink in self.sinks:  # the live synth keeps what it plays as audio.flac (--record-audio)
                    if isinstance(sink, RecordsAudio):
                        sink.record_to(self.recorder.folder)
            stack.callback(self._finish_recording)
            scheduler = self.scheduler = await stack.enter_async_context(Scheduler(self.sinks, realtime=True))
            engine.start(scheduler)
            await self._play(engine, scheduler)
            if self.stats.stopped_by == "end of input":
                await scheduler.drain()
        return self.stats

    def _finish_recording(self) -> None:
        """After the scheduler's last note-off: what was played goes into the session, then it closes."""
        if self.scheduler is not None:
            self.stats.notes = self.scheduler.played
        if self.recorder is not None:
            if self.scheduler is not None:
                self.recorder.write_notes(self.scheduler.take_played())
            self.recorder.event("stopped", reason=self.stats.stopped_by)

    async def _play(self, engine: Engine, scheduler: Scheduler) -> None:
        """Reader and composer under one task group, until a stop, the end of input or an error."""
        assert self.stop_event is not None
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._read(engine, scheduler), name="reader")
                tasks.create_task(self._compose(engine, scheduler), name="composer")
                tasks.create_task(self._until_stopped(), name="stop")
                if self.duration is not None:
                    tasks.create_task(self._timer(self.duration), name="timer")
        except BaseExceptionGroup as group:
            errors = [e for e in _leaves(group) if not isinstance(e, _Stopped)]
            if errors:
                self.stats.stopped_by = self.stats.stopped_by or f"error: {errors[0]}"
                raise errors[0] from None

    async def _until_stopped(self) -> None:
        assert self.stop_event is not None
        await self.stop_event.wait()
        raise _Stopped

    async def _timer(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.stop(f"duration {seconds:g} s reached")

    async def _read(self, engine: Engine, scheduler: Scheduler) -> None:
        assert self._windows is not None
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
                        self._windows.put(window)
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
        self._windows.close()

    async def _compose(self, engine: Engine, scheduler: Scheduler) -> None:
        assert self._windows is not None
        async for window in self._windows:
            state, notes = engine.step(window)
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
        self.stop("end of input")

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

    def _notices(self) -> list[str]:
        """One-line remarks a person should see: about the input, and why a sink plays nothing (no audio)."""
        out = list(self.engine.notices) if self.engine is not None else []
        return out + [p for p in (getattr(s, "problem", None) for s in self.sinks) if isinstance(p, str)]

    def snapshot(self) -> dict[str, Any]:
        """Health figures for logs and telemetry."""
        out: dict[str, Any] = {
            "signal": {"ok": self._signal_ok is not False, "silent_groups": sorted(self._silent_groups)},
            "windows": self.stats.windows,
            "notes": self.stats.notes,
            "stream_losses": self.stats.stream_losses,
            "reconnects": self.stats.reconnects,
            "queue_depth": self._windows.depth if self._windows else 0,
            "windows_dropped": self._windows.dropped if self._windows else 0,
            "latency": self.stats.latency_summary(),
        }
        stats = getattr(self.source, "stats", None)
        if callable(stats):
            out["source"] = stats()
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler.stats()
        if self.engine is not None:
            out["recomposed"] = self.engine.recomposed
            out["quality"] = self.quality
            out["notices"] = self._notices()
            detector = self.engine.chain.inspector.artifacts if self.engine.chain.inspector is not None else None
            if detector is not None:
                out["artifacts"] = dict(detector.counts)
            out["composer"] = self.engine.composer.stats()
        return out

    # ------------------------------------------------------------------ MIDI clock in

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
        engine, scheduler = self.engine, self.scheduler
        if engine is None or scheduler is None or not scheduler.running:
            return
        bpm = round(min(300.0, max(20.0, bpm)), 2)
        if abs(engine.composer.tempo - bpm) >= CLOCK_IN_JITTER:
            engine.apply(lambda at: engine.composer.retime(at, bpm))


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    """The exceptions inside a (nested) exception group, in order."""
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out
