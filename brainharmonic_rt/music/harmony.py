"""The harmonic plan: one key, chord progression, tempo and density for the whole ensemble.

Every instrument plays over the same plan, decided bar by bar from the *global* brain state,
so the band moves together. The plan listens to one number, the arousal
``a = tanh(-z_alpha)`` (alpha suppression, the classic EEG marker of engagement; alpha z-score
averaged over groups; other weights with ``harmony.arousal``), smoothed over ``harmony.smoothing``
seconds, and turns it into a level with a Schmitt trigger (enter at ±threshold, leave at
±(threshold - hysteresis), at most one change per ``min_bars`` bars), so window-to-window noise
never flickers the music:

=========  ===========================================================================
calm       slower (tempo × (1 - tempo_range)), sparser (density × 0.7), lower register;
           tonal centre on the relative minor of the home key
neutral    the home key and tempo
aroused    faster (× (1 + tempo_range)), denser (× 1.35), higher; relative major centre
=========  ===========================================================================

A change of level is a *sudden change*: the next bar is a cadence (the new centre's dominant,
then its tonic). Relative keys share the home pitch collection, so modulating never takes a
note out of the scale. Chords are stacked scale thirds; chords that would hold a forbidden
interval (e.g. the diminished triad's tritone) are never chosen. Pins: ``set_home`` (a user's
key) and ``pin_tempo`` stop the plan from moving key or tempo; a leader's chords
(:meth:`follow_chords`) replace ours bar by bar.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np

from ..config import HarmonySettings, MusicSettings
from ..events import BrainState
from .constants import BEATS_PER_BAR
from .scales import pitch_classes

HISTORY = 100_000  # bars kept for reports (about 17 h at 96 BPM)
_SHARPS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLATS = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
_DENSITY = {-1: 0.7, 0: 1.0, 1: 1.35}
_REGISTER = {-1: -0.12, 0: 0.0, 1: 0.1}
# Functional progressions relative to the centre (0 = I, 4 = V, ...): from → (next, weight).
_PROGRESSION: dict[int, tuple[tuple[int, ...], tuple[float, ...]]] = {
    0: ((3, 4, 5, 1), (0.3, 0.3, 0.25, 0.15)),
    1: ((4, 6, 3), (0.6, 0.2, 0.2)),
    2: ((5, 3), (0.6, 0.4)),
    3: ((4, 0, 1), (0.45, 0.35, 0.2)),
    4: ((0, 5, 3), (0.6, 0.25, 0.15)),
    5: ((3, 1, 4), (0.4, 0.3, 0.3)),
    6: ((0, 5), (0.7, 0.3)),
}


@dataclass(frozen=True, slots=True)
class BarPlan:
    """What every instrument plays over in one bar (also the per-bar record of a session)."""

    index: int
    start: float  #: music seconds
    tempo: float  #: BPM
    key: str  #: name of the tonal centre
    scale: str  #: the home scale (the pitch collection never changes with the centre)
    mode: str  #: "major" or "minor": quality of the centre's chord
    chord: str  #: symbol, e.g. "Dm"
    degree: int  #: scale degree (0-based) of the chord root in the home scale
    density: float  #: multiplier of every instrument's onset probability
    register: float  #: shift of every instrument's register position (-0.12 .. 0.1)
    level: int  #: -1 calm, 0 neutral, 1 aroused
    pcs: tuple[int, ...]  #: pitch classes of the scale
    chord_pcs: tuple[int, ...]  #: pitch classes of the chord, root first

    @property
    def duration(self) -> float:
        return BEATS_PER_BAR * 60.0 / self.tempo


def triad(pcs: tuple[int, ...], degree: int) -> tuple[int, int, int]:
    """Root, third and fifth (stacked scale thirds) on ``degree`` of the scale ``pcs``."""
    n = len(pcs)
    return (pcs[degree % n], pcs[(degree + 2) % n], pcs[(degree + 4) % n])


def chord_symbol(pcs: tuple[int, ...], degree: int, flats: bool = False) -> str:
    """Name of the triad on ``degree``, e.g. 'Dm', 'G', 'Bdim'."""
    root, third, fifth = triad(pcs, degree)
    quality = {(4, 7): "", (3, 7): "m", (3, 6): "dim", (4, 8): "aug"}.get(
        ((third - root) % 12, (fifth - root) % 12), "sus"
    )
    return (_FLATS if flats else _SHARPS)[root] + quality


def interval_class(a: int, b: int) -> int:
    """Semitones between two pitches, mod 12 (0..11)."""
    return (a - b) % 12


def _consonant(chord: tuple[int, ...], avoid: frozenset[int]) -> bool:
    return all(interval_class(x, y) not in avoid for i, x in enumerate(chord) for y in chord[i + 1 :])


class HarmonicPlan:
    """Bar-by-bar key, chord, tempo and density for the ensemble (see the module docstring)."""

    def __init__(self, music: MusicSettings, harmony: HarmonySettings | None = None) -> None:
        self.settings = harmony or HarmonySettings()
        self.base_tempo = float(music.tempo)
        self.avoid = frozenset(self.settings.avoid_intervals)
        self.tempo_pinned = not self.settings.adaptive_tempo
        self.key_pinned = not self.settings.adaptive_key
        seed = music.seed & 0xFFFF_FFFF_FFFF_FFFF
        self._rng = np.random.default_rng([seed, 1_000_003])
        self.history: collections.deque[BarPlan] = collections.deque(maxlen=HISTORY)
        self.arousal = 0.0
        self.level = 0
        self._last_t: float | None = None
        self._level_bar = -(10**9)  # bar at which the level last changed
        self._pending_level: int | None = None
        self._decided: dict[int, int] = {}  # bar → degree, decided one bar ahead
        self._external: dict[int, int] = {}  # bar → degree from a leader
        self._forced: dict[int, int] = {}  # bar → degree of a cadence
        self._degree = 0
        self._centre = 0
        self._calibrating = True
        self.set_home(music.key, music.scale, pin=False)

    # -- home key ------------------------------------------------------------------------------

    def set_home(self, key: str, scale: str, *, pin: bool = True) -> None:
        """Key and scale of the home; ``pin`` (a user's choice) keeps the centre there from now on."""
        pcs = pitch_classes(key, scale)  # raises ConfigError for an unknown key or scale
        self.key, self.scale, self.pcs = key, scale, pcs
        self.flats = key == "F" or "b" in key
        n = len(pcs)
        self.valid = tuple(d for d in range(n) if _consonant(triad(pcs, d), self.avoid)) or (0,)
        self._centres = {0: 0, -1: self._relative("minor"), 1: self._relative("major")}
        if pin:
            self.key_pinned = True
        self._centre = self._centre_for(self.level)
        self._degree %= n
        self._decided = {b: d % n for b, d in self._decided.items()}
        self._forced.clear()

    def _quality(self, degree: int) -> str:
        root, third, _ = triad(self.pcs, degree)
        return "major" if (third - root) % 12 == 4 else "minor"

    def _relative(self, mode: str) -> int:
        """Degree of the relative major/minor centre in the home collection (the home if already so)."""
        if self._quality(0) == mode or 0 not in self.valid:
            return 0
        step = 3 if mode == "major" else 9  # relative major: +3 semitones; relative minor: -3
        target = (self.pcs[0] + step) % 12
        for d in self.valid:
            if self.pcs[d] == target and self._quality(d) == mode:
                return d
        return 0

    def _centre_for(self, level: int) -> int:
        return 0 if self.key_pinned else self._centres[level]

    # -- brain side ----------------------------------------------------------------------------

    def observe(self, state: BrainState) -> None:
        """Update the smoothed arousal from one window's global band z-scores."""
        self._calibrating = state.calibrating
        z = state.z_mean
        weights = self.settings.arousal
        raw = 0.0 if state.calibrating or not z else math.tanh(sum(w * z.get(b, 0.0) for b, w in weights.items()))
        tau = self.settings.smoothing
        dt = None if self._last_t is None else state.t_end - self._last_t
        self._last_t = state.t_end
        keep = 0.0 if tau <= 0 or dt is None or dt < 0 else math.exp(-dt / tau)
        self.arousal = keep * self.arousal + (1.0 - keep) * raw
        th, back = self.settings.threshold, self.settings.threshold - self.settings.hysteresis
        a, lvl = self.arousal, self.level
        if lvl == 0:
            target = 1 if a >= th else (-1 if a <= -th else 0)
        elif lvl == 1:
            target = 1 if a > back else (-1 if a <= -th else 0)
        else:
            target = -1 if a < -back else (1 if a >= th else 0)
        self._pending_level = target if target != lvl else None

    # -- bars ----------------------------------------------------------------------------------

    def start_bar(self, index: int, start: float, tempo: float) -> BarPlan:
        """Decide bar ``index`` (starting at music time ``start``, current ``tempo``) and record it.

        Returns the plan; its ``tempo`` is the one the composer should play this bar at.
        """
        n = len(self.pcs)
        revised: BarPlan | None = None
        while self.history and self.history[-1].index >= index:  # composed again (rewind, live change)
            revised = self.history.pop()
        if self._pending_level is not None and index - self._level_bar >= self.settings.min_bars:
            self.level, self._level_bar = self._pending_level, index
            self._pending_level = None
            new_centre = self._centre_for(self.level)
            if new_centre != self._centre:  # a modulation: cadence V (or IV) → I of the new centre
                self._centre = new_centre
                dominant = (new_centre + 4) % n
                approach = dominant if dominant in self.valid else (new_centre + 3) % n
                self._forced = {index: approach if approach in self.valid else new_centre, index + 1: new_centre}
                self._decided.pop(index + 1, None)
        degree = self._forced.pop(index, None)
        if degree is None and revised is not None and revised.index == index and revised.pcs == self.pcs:
            degree = revised.degree
        if degree is None:
            degree = self._decided.pop(index, None)
        if degree is None:
            degree = self._walk(self._degree)
        external = self._external.pop(index, None)
        self._degree = (external if external is not None else degree) % n
        nxt = self._forced.get(index + 1)
        self._decided[index + 1] = nxt if nxt is not None else self._walk(self._degree)
        for table in (self._decided, self._external, self._forced):
            for old in [b for b in table if b < index]:
                del table[old]
        if not self.tempo_pinned:
            tempo = self.base_tempo * (1.0 + self.settings.tempo_range * self.level)
            tempo = float(np.clip(tempo, 20.0, 300.0))
        level = 0 if self._calibrating else self.level
        density = _DENSITY[level] * (0.5 if self._calibrating else 1.0)
        centre_pc = self.pcs[self._centre]
        bar = BarPlan(
            index=index,
            start=float(start),
            tempo=float(tempo),
            key=(_FLATS if self.flats else _SHARPS)[centre_pc],
            scale=self.scale,
            mode=self._quality(self._centre),
            chord=chord_symbol(self.pcs, self._degree, self.flats),
            degree=self._degree,
            density=density,
            register=_REGISTER[level],
            level=level,
            pcs=self.pcs,
            chord_pcs=triad(self.pcs, self._degree),
        )
        self.history.append(bar)
        return bar

    def _walk(self, degree: int) -> int:
        """One step of the chord walk from ``degree``, relative to the centre; calm states stay longer."""
        rng, n = self._rng, len(self.pcs)
        stay = float(np.clip(0.25 - 0.15 * self.arousal, 0.05, 0.6))
        if rng.random() < stay and degree % n in self.valid:
            return degree % n
        if n == 7:
            nxt, p = _PROGRESSION[(degree - self._centre) % 7]
            choice = (self._centre + int(rng.choice(nxt, p=p))) % 7
            return choice if choice in self.valid else self._centre
        w = np.array([3.0 if d == self._centre else (0.0 if d == degree % n else 1.0) for d in self.valid])
        if w.sum() <= 0:
            return self.valid[0]
        return int(self.valid[int(rng.choice(len(self.valid), p=w / w.sum()))])

    # -- what the rest of the service reads / sets -------------------------------------------

    @property
    def current(self) -> BarPlan | None:
        return self.history[-1] if self.history else None

    @property
    def degree(self) -> int:
        return self._degree

    def chord_pcs(self) -> tuple[int, int, int]:
        return triad(self.pcs, self._degree)

    def chord_name(self, degree: int | None = None) -> str:
        return chord_symbol(self.pcs, self._degree if degree is None else degree, self.flats)

    def chord_plan(self) -> list[tuple[int, int]]:
        """(bar, degree) decided ahead (the next bar's), for a leader to publish."""
        return sorted(self._decided.items())

    def follow_chords(self, plan: dict[int, int]) -> None:
        """Use a leader's degrees for these bars (bar → degree) when they start."""
        self._external.update({int(b): int(d) for b, d in plan.items()})

    def pin_tempo(self) -> None:
        """A user, a leader or an incoming MIDI clock sets the tempo from now on."""
        self.tempo_pinned = True
