"""What every composer shares: the instruments (mute, solo, program), the beat timeline, the harmonic
plan and the arbiter.

Both composers (classic and learned) derive from :class:`EnsembleComposer`, so the control plane,
multi-performer sync, the MIDI clock and a live mode switch (:meth:`EnsembleComposer.adopt_shared`)
see one contract, and a change of mode hands the same plan, arbiter and beat grid over.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from ..config import HarmonySettings, InstrumentSettings, MusicSettings
from .arbiter import Arbiter
from .harmony import HarmonicPlan
from .timeline import Timeline


class _Instrument(Protocol):
    name: str
    inst: InstrumentSettings
    muted: bool


V = TypeVar("V", bound=_Instrument)


class EnsembleComposer(Generic[V]):
    """The shared state and the live controls that do not depend on how notes are made."""

    _voices: list[V]

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

    def adopt_shared(self, other: EnsembleComposer[Any]) -> None:
        """Take ``other``'s beat grid, plan, arbiter, mutes and solo (a live mode switch)."""
        self._timeline, self.plan, self.arbiter = other._timeline, other.plan, other.arbiter
        for name in other.muted:
            self._voice(name).muted = True
        self._solo = other.solo
        self._sync_audible()

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
    def steps_per_beat(self) -> int:
        """Grid steps per beat (each composer has its own grid)."""
        raise NotImplementedError

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
