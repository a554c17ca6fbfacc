"""The composer contract, and what every composer shares: the instruments (mute, solo, program, register,
presence), the beat timeline, the harmonic plan and the arbiter.

:class:`Composer` declares everything the rest of the service may ask of a composer; the engine, the
control plane, multi-performer sync and the MIDI clock are typed against it, so nothing probes a
composer with ``hasattr``. Both composers (classic and learned) derive from it, and a change of mode
hands the same plan, arbiter and beat grid over (:meth:`Composer.adopt`).

Live changes apply from a music time ``at``; the engine then rewinds the composer to ``at``
(:meth:`Composer.rewind`) and composes ``[at, frontier)`` again, so a change is heard within the cut in
either mode.
"""

from __future__ import annotations

import collections
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ..brain.latent_map import SessionCentres
from ..config import GestureSettings, HarmonySettings, InstrumentSettings, MusicSettings
from ..errors import ConfigError
from ..events import BrainState, Note
from .arbiter import Arbiter
from .constants import BEATS_PER_BAR
from .gestures import gesture_notes
from .harmony import HarmonicPlan
from .scales import scale_pitches
from .timeline import Timeline

#: Below this presence an instrument plays nothing (its group has had no good channel for about a bar).
SILENT_BELOW = 0.02


@dataclass(slots=True)
class Presence:
    """How much an instrument plays (0..1): fades to 0 over a bar when its channel group loses every
    good channel (a loose electrode group), and back to 1 over a bar when a channel recovers.

    Piecewise linear in music time: ``level`` at ``since``, moving towards ``target`` at ``1 / fade`` per s.
    """

    level: float = 1.0
    since: float = 0.0
    target: float = 1.0
    fade: float = 2.5

    def at(self, t: float) -> float:
        """Presence at music time ``t`` (s)."""
        step = max(t - self.since, 0.0) / self.fade if self.fade > 0 else 1.0
        if self.target >= self.level:
            return min(self.target, self.level + step)
        return max(self.target, self.level - step)

    def aim(self, target: float, t: float, fade: float) -> None:
        """From music time ``t`` on, move towards ``target`` over ``fade`` seconds."""
        if target != self.target:
            self.level, self.since, self.target, self.fade = self.at(t), t, target, fade


class _Instrument(Protocol):
    name: str
    inst: InstrumentSettings
    muted: bool


V = TypeVar("V", bound=_Instrument)


class Composer(ABC, Generic[V]):
    """What a composer must do (the abstract methods) and the shared state and live controls that do not
    depend on how notes are made (everything else, implemented once here)."""

    _voices: list[V]
    #: blinks and clenches as percussion (``[gestures]``); None or disabled: they are not heard
    gestures: GestureSettings | None = None

    def __init__(
        self, instruments: dict[str, InstrumentSettings], music: MusicSettings, harmony: HarmonySettings | None
    ) -> None:
        self._key: str = music.key
        self._scale: str = music.scale
        # A live tempo change keeps the beat phase (see Timeline).
        self._timeline = Timeline(music.tempo)
        self.plan = HarmonicPlan(music, harmony)
        h = harmony or HarmonySettings()
        #: False: only the polyphony cap and the registers guard the notes (``[harmony] arbiter``)
        self.guarded = h.arbiter
        if not h.arbiter:
            h = h.model_copy(update={"avoid_intervals": [], "strong_beat_chord_tones": False})
        self.arbiter = Arbiter(instruments, music.max_polyphony, h)
        self._solo: str | None = None
        self._presence = {name: Presence() for name in instruments}
        self._temperature: float | None = None

    # -- the contract: what each composer does its own way ------------------------------------------

    @abstractmethod
    def compose(self, state: BrainState, start: float, end: float) -> list[Note]:
        """Notes with onsets in ``[start, end)`` (music seconds) for the brain state ``state``, sorted by time."""

    @abstractmethod
    def rewind(self, t: float) -> None:
        """Forget what was composed from music time ``t`` on (the scheduler cancelled those notes), so the
        next :meth:`compose` starting at ``t`` composes them again under the current settings."""

    @property
    @abstractmethod
    def steps_per_beat(self) -> int:
        """Grid steps per beat (each composer has its own grid)."""

    @abstractmethod
    def _adopted(self, other: Composer[Any], frontier: float | None) -> None:
        """After :meth:`adopt` took the shared state over: get this composer's own state ready."""

    @abstractmethod
    def _key_changed(self) -> None:
        """After :meth:`set_key` changed the key, scale or registers: update what depends on them."""

    def _check_instrument(self, inst: InstrumentSettings, key: str, scale: str) -> None:
        """Raise ConfigError (or ModelError) if ``inst`` cannot play in ``key`` ``scale``; the default checks
        that its register holds a note of the scale. Called for every instrument before anything changes."""
        if inst.role != "percussion":
            scale_pitches(key, scale, inst.low, inst.high)

    # -- live changes (control commands, sync, clock-in, reload) ------------------------------------

    def adopt(self, other: Composer[Any], frontier: float | None = None) -> None:
        """Take over from ``other`` mid-session (a live mode switch): its beat grid, plan, arbiter, mutes,
        solo, presences and temperature; this composer goes on from ``frontier`` (the end of what ``other``
        composed)."""
        self._timeline, self.plan, self.arbiter = other._timeline, other.plan, other.arbiter
        self._presence = other._presence
        for name in other.muted:
            self._voice(name).muted = True
        self._solo = other.solo
        self.gestures = other.gestures
        self._sync_audible()
        self._adopted(other, frontier)
        if other._temperature is not None:
            self.set_temperature(other._temperature)

    def retime(self, at: float, tempo: float | None = None, *, beat: float | None = None, pin: bool = True) -> None:
        """From music time ``at`` on, play at ``tempo`` BPM; the grid phase continues unless ``beat`` is
        given, in which case the beat position at ``at`` jumps to ``beat`` (a leader's numbering).

        A tempo set from outside (a user, a leader, an incoming MIDI clock) pins it: the plan stops
        moving the tempo with the brain. ``pin=False`` (a phase nudge while our brain leads an Ableton
        Link session) leaves the plan free.
        """
        self._timeline.retime(at, self.tempo if tempo is None else float(tempo), beat=beat)
        if pin:
            self.plan.pin_tempo()

    def set_key(
        self, key: str, scale: str | None = None, *, registers: dict[str, tuple[int, int]] | None = None
    ) -> None:
        """Key and scale (and optionally registers, name → (low, high)) from now on; pins the key.

        Raises ConfigError (or ModelError), changing nothing, if an instrument could not play then.
        """
        scale = self._scale if scale is None else scale
        registers = dict(registers or {})
        for name in registers:
            self._voice(name)
        updated = []
        for v in self._voices:
            lo, hi = registers.get(v.name, (v.inst.low, v.inst.high))
            inst = v.inst.model_copy(update={"low": int(lo), "high": int(hi)})
            try:
                self._check_instrument(inst, key, scale)
            except ConfigError as exc:
                raise ConfigError(f"Register {lo}..{hi} of {v.name!r} does not fit {key} {scale}: {exc}") from None
            updated.append(inst)
        for v, inst in zip(self._voices, updated, strict=True):
            if inst != v.inst:
                v.inst = inst
                self.arbiter.set_instrument(v.name, inst)
        if (key, scale) != (self._key, self._scale):
            self.plan.set_home(key, scale, pin=True)
        self._key, self._scale = key, scale
        self._key_changed()

    def set_register(self, name: str, low: int, high: int) -> None:
        """Register of one instrument; raises ConfigError (changing nothing) if it could not play there."""
        self.set_key(self._key, self._scale, registers={name: (low, high)})

    def set_temperature(self, temperature: float) -> bool:
        """Sampling temperature from the next note on; returns whether this composer samples (the classic
        one does not: the value is kept and handed to a learned composer on a mode switch)."""
        if not 0 < temperature <= 2:
            raise ConfigError(f"Temperature must be in (0, 2], got {temperature}.")
        self._temperature = float(temperature)
        return False

    def set_limits(self, *, max_polyphony: int | None = None, smoothing: float | None = None) -> None:
        """Polyphony cap (and, where the composer smooths features, the smoothing) from now on (a reload)."""
        if max_polyphony is not None:
            self.arbiter.max_polyphony = int(max_polyphony)

    def gesture_notes(self, state: BrainState, start: float) -> list[Note]:
        """Percussion for the artifacts first seen in ``state``, on the grid from music time ``start``."""
        if self.gestures is None or not state.events:
            return []
        return gesture_notes(state.events, self.gestures, start, self.beat_at, self.time_of_beat)

    # -- what the rest of the service reads --------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Notes the arbiter refused so far (cap, clash)."""
        return self.arbiter.dropped

    def stats(self) -> dict[str, Any]:
        """What the guard did (telemetry, ``eval``, the demo summary): the arbiter's vetoes of sampled
        pitches (share and reasons) and the notes it dropped or shortened."""
        return {
            "arbiter": self.guarded,
            "veto": self.arbiter.veto_stats(),
            "dropped": self.arbiter.dropped,
            "shortened": self.arbiter.shortened,
        }

    @property
    def tempo(self) -> float:
        """Beats per minute of the latest timeline segment."""
        return self._timeline.tempo

    @property
    def grid(self) -> float:
        """Seconds between grid steps at the latest tempo."""
        return 60.0 / self.tempo / self.steps_per_beat

    @property
    def key(self) -> str:
        return self._key

    @property
    def scale(self) -> str:
        return self._scale

    @property
    def solo(self) -> str | None:
        return self._solo

    @property
    def muted(self) -> list[str]:
        """Instruments muted by name (a solo silences the others without muting them)."""
        return [v.name for v in self._voices if v.muted]

    @property
    def instruments(self) -> dict[str, InstrumentSettings]:
        """Instrument settings as they are now (programs and registers may have changed live)."""
        return {v.name: v.inst for v in self._voices}

    @property
    def degree(self) -> int:
        """Scale degree (0-based) of the current chord's root."""
        return self.plan.degree

    def chord_name(self, degree: int | None = None) -> str:
        """Symbol of the current chord (or of scale degree ``degree``), e.g. 'Dm' or 'G'."""
        return self.plan.chord_name(degree)

    def chord_plan(self) -> list[tuple[int, int]]:
        """(bar, degree) of the chords decided ahead (the next bar's), for a leader to publish."""
        return self.plan.chord_plan()

    def follow_chords(self, plan: dict[int, int]) -> None:
        """Use a leader's chord degrees for these bars (bar index → degree) when they start."""
        self.plan.follow_chords(plan)

    def beat_at(self, t: float) -> float:
        """Beat position (fractional, 0 = session start unless a leader renumbered it) at music time ``t``."""
        return self._timeline.beat_at(t)

    def time_of_beat(self, beat: float) -> float:
        """Music time (s) of beat position ``beat``."""
        return self._timeline.time_of_beat(beat)

    # -- instruments -------------------------------------------------------------------------------

    def _voice(self, name: str) -> V:
        for v in self._voices:
            if v.name == name:
                return v
        raise KeyError(name)

    def observe_signal(self, state: BrainState, at: float) -> None:
        """Aim each instrument's presence at its group's health in ``state``, from music time ``at``: a group
        with no good channel fades out over one bar, a recovered one fades back in."""
        bar = BEATS_PER_BAR * 60.0 / self.tempo
        for g in state.groups:
            p = self._presence.get(g.name)
            if p is not None:
                p.aim(1.0 if g.n_good > 0 else 0.0, at, bar)

    def presence(self, name: str, t: float) -> float:
        """How much instrument ``name`` plays at music time ``t`` (1 = fully; see :class:`Presence`)."""
        p = self._presence.get(name)
        return 1.0 if p is None else p.at(t)

    def _audible(self, v: V) -> bool:
        return not v.muted and (self._solo is None or v.name == self._solo)

    def _sync_audible(self) -> None:
        self.arbiter.audible = [self._audible(v) for v in self._voices]

    def silenced(self) -> set[str]:
        """Instruments that play nothing now (muted, or not the solo)."""
        return {v.name for v in self._voices if not self._audible(v)}

    def set_muted(self, name: str, muted: bool) -> None:
        """Mute or unmute one instrument from now on (e.g. a control command)."""
        self._voice(name).muted = muted
        self._sync_audible()

    def set_solo(self, name: str | None) -> None:
        """Only ``name`` plays from now on (None: everyone not muted plays)."""
        if name is not None:
            self._voice(name)
        self._solo = name
        self._sync_audible()

    def set_program(self, name: str, program: int) -> None:
        """Record an instrument's new program (the caller sends the program change)."""
        v = self._voice(name)
        v.inst = v.inst.model_copy(update={"program": int(program)})


class AheadDecoding:
    """What the two learned composers share: they decode ahead voice by voice, so they start bars by beat
    position, open and close each composed span the same way, and rewind to a snapshot taken at a span start.

    The first voice to reach a bar starts it in the plan; after a key change (:meth:`_replan`) the bar in
    progress is planned again from the next beat decoded, so the arbiter guards the new key at once.
    """

    _bar: int  #: index of the last bar started
    _revise_bar: bool = False
    _started: bool
    _frontier: float | None
    _feeds_centres: bool
    _snapshots: collections.deque[Any]  #: span starts, each with a ``start`` (music time)
    centres: SessionCentres
    plan: HarmonicPlan
    arbiter: Arbiter
    _timeline: Timeline

    if TYPE_CHECKING:  # from Composer, which comes after this mixin in the learned composers' bases

        def observe_signal(self, state: BrainState, at: float) -> None: ...

    def _time(self, beat: float) -> float:
        return self._timeline.time_of_beat(beat)

    def _open_span(self, state: BrainState, start: float, end: float) -> bool:
        """Take ``state`` in before composing ``[start, end)``; False: the span is empty."""
        if self._feeds_centres:
            self.centres.observe(state)
        if end <= start:
            return False
        if not self._started:
            self._timeline.reset(start)
            self._started = True
        self.plan.observe(state)
        self.observe_signal(state, start)
        return True

    def _close_span(self, notes: list[Note], end: float) -> list[Note]:
        self._frontier = end if self._frontier is None else max(self._frontier, end)
        notes.sort(key=lambda n: (n.time, n.channel, n.pitch))
        return notes

    def _span_before(self, t: float) -> Any:
        """For a rewind to ``t``: the latest kept span start at or before ``t`` (None: nothing that old is kept,
        the change applies from the composed frontier); notes from ``t`` on leave the arbiter."""
        self.arbiter.rewind(t)
        while self._snapshots and self._snapshots[-1].start > t + 1e-9:
            self._snapshots.pop()
        if not self._snapshots:
            return None
        self._frontier = t
        return self._snapshots[-1]

    def _replan(self) -> None:
        self._revise_bar = True

    def _ensure_bar(self, beat: float) -> None:
        """Start every plan bar up to the one holding ``beat``; first re-plan the bar in progress if asked."""
        if self._revise_bar and self._bar >= 0:
            self._revise_bar = False
            self._begin_bar(self._bar, self._time(max(beat, self._bar * BEATS_PER_BAR)))
        while self._bar < int(beat // BEATS_PER_BAR + 1e-9):
            self._bar += 1
            self._begin_bar(self._bar, self._time(self._bar * BEATS_PER_BAR))

    def _begin_bar(self, index: int, t: float) -> None:
        tempo = self._timeline.tempo
        bar = self.plan.start_bar(index, t, tempo)
        if abs(bar.tempo - tempo) > 1e-9:
            self._timeline.retime(t, bar.tempo)  # the plan's own change: not a pin
        self.arbiter.set_bar(bar)
