"""The harmony arbiter: decides, before any instrument's note is committed, whether and how it may sound.

One arbiter serves the whole ensemble and both composers:

* **Allowed pitches** per instrument and onset: chord tones of the bar's chord on strong beats
  (beats 1 and 3), scale tones elsewhere, inside the instrument's register, minus every pitch
  that would form a forbidden interval class (default minor second, tritone, major seventh) with
  a note already sounding at that onset. Classic mode quantises onto this set
  (:meth:`Arbiter.choose`); the learned generator gets it as a logit mask (:meth:`Arbiter.pitch_bias`).
* **Admission** (:meth:`Arbiter.admit`): the clash rule again over the note's whole length (a later
  note of another instrument cuts it short rather than clash), and a global polyphony cap with a
  fair policy — an instrument that has played in the last bar and sounds nothing now always has a
  slot held for it, so one busy instrument cannot starve the others.
* **Revisions**: notes not yet played can be forgotten (:meth:`Arbiter.rewind`) and composed again
  when the plan changes.

Drums (the percussion role) count for the cap but not for harmony. The cost of all of this is
measured per bar (:attr:`Arbiter.bar_costs`, seconds) for the benchmark.
"""

from __future__ import annotations

import collections
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import HarmonySettings, InstrumentSettings
from .constants import FORBID
from .harmony import BarPlan

#: per voice: scale pitches, chord pitches, (weak, strong) token biases, register lean, scale / chord tables
_Sets = tuple[
    list[np.ndarray],
    list[np.ndarray],
    dict[int, tuple[np.ndarray, np.ndarray]],
    dict[int, np.ndarray],
    list[np.ndarray],
    list[np.ndarray],
]
_EPS = 1e-6
_RECENT_BARS = 4


@dataclass(slots=True)
class Sounding:
    """A committed note, as the arbiter sees it."""

    start: float
    end: float
    pitch: int
    voice: int
    drum: bool


@dataclass(slots=True)
class _Bar:
    serial: int  # unique per decision (cache keys)
    plan: BarPlan
    scale: list[np.ndarray]  # per voice: scale pitches in register
    chord: list[np.ndarray]  # per voice: chord tones in register (falls back to scale)
    # with a generator vocabulary (set_vocab), per voice over its pitch tokens: in scale / in chord, register lean
    # filled per voice when first needed (and shared by every bar with the same sets, see set_bar)
    base_bias: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (weak, strong) (vocab,)
    lean: dict[int, np.ndarray] = field(default_factory=dict)  # (vocab,) register lean only
    scale_table: list[np.ndarray] = field(default_factory=list)  # (128,) bool per voice
    chord_table: list[np.ndarray] = field(default_factory=list)


class Arbiter:
    """Allowed pitches, clash rule and polyphony cap for one ensemble (see the module docstring).

    Parameters
    ----------
    instruments : name → instrument, in voice order (voice index = position).
    max_polyphony : most notes sounding at once across the ensemble.
    harmony : forbidden interval classes and the strong-beat rule.
    """

    def __init__(
        self, instruments: dict[str, InstrumentSettings], max_polyphony: int, harmony: HarmonySettings | None = None
    ) -> None:
        h = harmony or HarmonySettings()
        self.names = list(instruments)
        self._inst = list(instruments.values())
        self.max_polyphony = int(max_polyphony)
        self.avoid = np.zeros(12, bool)
        self.avoid[list(h.avoid_intervals)] = True
        self._avoid_set = frozenset(int(i) for i in h.avoid_intervals)
        self.strong_chord = h.strong_beat_chord_tones
        self.notes: list[Sounding] = []
        self._bars: collections.deque[_Bar] = collections.deque(maxlen=_RECENT_BARS)
        self._last_onset = [-np.inf] * len(self._inst)
        self.audible = [True] * len(self._inst)
        self.bar_costs: collections.deque[float] = collections.deque(maxlen=100_000)
        self._cost = 0.0
        bits = [sum(1 << ((pc + ic) % 12) for ic in range(12) if self.avoid[ic]) for pc in range(12)]
        self._forbid_bits = bits  # pitch class → mask of the pitch classes it forbids
        self._allowed_cache: dict[tuple[int, int, bool, int, bool], np.ndarray] = {}
        self._bias_cache: dict[tuple[int, int, bool, int, bool], np.ndarray] = {}
        self._vocab: tuple[int, np.ndarray, np.ndarray, float] | None = None
        self._bad_cache: dict[int, np.ndarray] = {}
        self._value_pcs = np.zeros(0, int)
        self._mask_cache: dict[int, np.ndarray] = {}
        self._sets_cache: dict[tuple[object, ...], _Sets] = {}
        self._all_pitches_forbidden = np.zeros(0, np.float32)
        self._serial = 0
        self.dropped = 0  #: notes refused (cap, clash, nothing allowed)
        self.checked = 0  #: sampled pitches put to :meth:`veto`
        self.refused: collections.Counter[str] = collections.Counter()  #: vetoes by reason
        self.shortened = 0  #: notes cut short so a later note would not clash or overflow the cap

    # -- plan and instruments ----------------------------------------------------------------------

    def set_bar(self, plan: BarPlan) -> None:
        """A new bar starts (``plan.start``): its chord and scale become the allowed sets from then on."""
        if self._bars:
            self.bar_costs.append(self._cost)
        self._cost = 0.0
        t0 = time.perf_counter()
        while self._bars and self._bars[-1].plan.start >= plan.start - _EPS:
            self._bars.pop()  # a bar composed again (rewind) replaces the old decision
        self._serial += 1
        key = (plan.pcs, plan.chord_pcs, plan.register, tuple((i.low, i.high) for i in self._inst))
        sets = self._sets_cache.get(key)  # chords repeat: the sets of a (scale, chord, lean, registers) once
        if sets is None:
            sets = self._sets(plan)
            if len(self._sets_cache) > 256:
                self._sets_cache.clear()
            self._sets_cache[key] = sets
        scale, chord, base, lean, scale_table, chord_table = sets
        bar = _Bar(self._serial, plan, scale, chord, base, lean, scale_table, chord_table)
        self._bars.append(bar)
        self._cost += time.perf_counter() - t0

    def _sets(self, plan: BarPlan) -> _Sets:
        """Per voice: scale and chord pitches in register, then the token biases and pitch tables."""
        in_scale, in_chord = np.zeros(12, bool), np.zeros(12, bool)
        in_scale[list(plan.pcs)] = True
        in_chord[list(plan.chord_pcs)] = True
        scale, chord = [], []
        for inst in self._inst:
            pitches = np.arange(inst.low, inst.high + 1)
            sc = pitches[in_scale[pitches % 12]]
            ch = sc[in_chord[sc % 12]]
            scale.append(sc if sc.size else pitches)
            chord.append(ch if ch.size else scale[-1])
        tables: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
        for sc, ch in zip(scale, chord, strict=True):
            for table, pitches_ok in zip(tables, (sc, ch), strict=True):
                row = np.zeros(128, bool)
                row[pitches_ok[(pitches_ok >= 0) & (pitches_ok < 128)]] = True
                table.append(row)
        return scale, chord, {}, {}, tables[0], tables[1]

    def _token_set(self, bar: _Bar, voice: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
        """``voice``'s logit biases in ``bar`` (weak beat, strong beat; no sounding note counted yet) and
        its register lean, each (vocab,); computed once per set of chord, scale, lean and register."""
        got = bar.base_bias.get(voice)
        if got is not None:
            return got, bar.lean[voice]
        assert self._vocab is not None
        size, ids, values, tilt = self._vocab
        pcs = self._value_pcs
        inst, sc, ch = self._inst[voice], bar.scale[voice], bar.chord[voice]
        in_reg = (values >= inst.low) & (values <= inst.high)
        pc_scale, pc_chord = np.zeros(12, bool), np.zeros(12, bool)
        pc_scale[sc % 12] = True
        pc_chord[ch % 12] = True
        mid, half = (inst.low + inst.high) / 2.0, max((inst.high - inst.low) / 2.0, 1.0)
        lean = (tilt * bar.plan.register * (values - mid) / half).astype(np.float32)
        full_lean = np.zeros(size, np.float32)
        full_lean[ids] = lean
        pair = []
        for ok in (in_reg & pc_scale[pcs], in_reg & (pc_chord if self.strong_chord else pc_scale)[pcs]):
            b = np.zeros(size, np.float32)
            b[ids] = np.where(ok, lean, FORBID)
            pair.append(b)
        bar.base_bias[voice], bar.lean[voice] = (pair[0], pair[1]), full_lean
        return bar.base_bias[voice], full_lean

    def _mask_bias(self, mask: int) -> np.ndarray:
        """(vocab,) FORBID on the pitch tokens whose pitch class is in ``mask`` (cached per mask)."""
        add = self._mask_cache.get(mask)
        if add is None:
            assert self._vocab is not None
            size, ids, _, _ = self._vocab
            add = np.zeros(size, np.float32)
            add[ids[self._bad(mask)[self._value_pcs]]] = FORBID
            self._mask_cache[mask] = add
        return add

    def set_instrument(self, name: str, inst: InstrumentSettings) -> None:
        """A live change of register (the next bar's allowed sets use it)."""
        self._inst[self.names.index(name)] = inst

    def _bar(self, t: float) -> _Bar | None:
        bars = self._bars
        if bars and bars[-1].plan.start <= t + _EPS:  # the usual case: the newest bar
            return bars[-1]
        for bar in reversed(bars):
            if bar.plan.start <= t + _EPS:
                return bar
        return bars[0] if bars else None

    def plan_at(self, t: float) -> BarPlan | None:
        bar = self._bar(t)
        return None if bar is None else bar.plan

    # -- the sounding notes ------------------------------------------------------------------------

    def forget_before(self, t: float) -> None:
        """Drop notes that ended by ``t`` (nothing composed later can overlap them)."""
        self.notes = [s for s in self.notes if s.end > t + _EPS]

    def rewind(self, t: float) -> None:
        """Forget notes with onsets at or after ``t`` (cancelled downstream, to be composed again)."""
        self.notes = [s for s in self.notes if s.start < t - _EPS]

    def _situation(self, voice: int, t: float) -> tuple[int, bool]:
        """(bit mask of pitch classes forbidden at ``t``, whether ``voice`` finds the cap full there)."""
        mask = count = busy = 0
        at, before = t + _EPS, t - _EPS
        bits = self._forbid_bits
        for s in self.notes:  # the hot loop of the learned mask: plain ints only
            if s.start <= at < s.end:
                count += 1
                busy |= 1 << s.voice
                if not s.drum and (s.voice != voice or s.start < before):
                    mask |= bits[s.pitch % 12]
        if count >= self.max_polyphony:
            return mask, True
        if not (busy >> voice) & 1 or count < self.max_polyphony - len(self._inst) + 1:
            return mask, False  # no slot can be held against this voice
        return mask, count >= self._limit(voice, t, {v for v in range(len(self._inst)) if (busy >> v) & 1})

    def _limit(self, voice: int, t: float, busy: set[int]) -> int:
        """Most notes ``voice`` may add to at ``t``: one slot is held for each recently active, silent instrument."""
        if voice not in busy:
            return self.max_polyphony
        plan = self.plan_at(t)
        recent = plan.duration if plan is not None else 2.5  # "active": played within the last bar
        held = sum(
            1
            for v, last in enumerate(self._last_onset)
            if v != voice and self.audible[v] and v not in busy and t - last < recent
        )
        return self.max_polyphony - held

    def _allowed(self, voice: int, t: float, strong: bool) -> tuple[tuple[int, int, bool, int, bool], np.ndarray]:
        bar = self._bar(t)
        mask, full = self._situation(voice, t)
        key = (-1 if bar is None else bar.serial, voice, strong and self.strong_chord, mask, full)
        hit = self._allowed_cache.get(key)
        if hit is None:
            if bar is None:
                inst = self._inst[voice]
                base = np.arange(inst.low, inst.high + 1)
            else:
                base = bar.chord[voice] if strong and self.strong_chord else bar.scale[voice]
            hit = base[:0] if full else base[~self._bad(mask)[base % 12]]
            if len(self._allowed_cache) > 4096:
                self._allowed_cache.clear()
            self._allowed_cache[key] = hit
        return key, hit

    def _bad(self, mask: int) -> np.ndarray:
        """(12,) bool: the pitch classes in ``mask``."""
        bad = self._bad_cache.get(mask)
        if bad is None:
            bad = np.array([(mask >> pc) & 1 for pc in range(12)], bool)
            self._bad_cache[mask] = bad
        return bad

    # -- pitches ---------------------------------------------------------------------------------

    def allowed(self, voice: int, t: float, strong: bool) -> np.ndarray:
        """Pitches ``voice`` may start at ``t`` (sorted; empty: it should rest — nothing fits, or the cap is full)."""
        t0 = time.perf_counter()
        try:
            return self._allowed(voice, t, strong)[1]
        finally:
            self._cost += time.perf_counter() - t0

    def choose(self, voice: int, target: float, t: float, strong: bool) -> int | None:
        """The allowed pitch nearest ``target`` (ties: the lower), or None when nothing is allowed."""
        allowed = self.allowed(voice, t, strong)
        if allowed.size == 0:
            return None
        return int(allowed[np.argmin(np.abs(allowed - target))])

    def lean_bias(self, voice: int, t: float) -> np.ndarray | None:
        """(vocab,) the plan's register lean over the pitch tokens for ``voice`` at ``t`` (None: no lean)."""
        t0 = time.perf_counter()
        try:
            bar = self._bar(t)
            if bar is None or self._vocab is None or not bar.plan.register:
                return None
            return self._token_set(bar, voice)[1]
        finally:
            self._cost += time.perf_counter() - t0

    def set_vocab(self, size: int, pitch_ids: np.ndarray, pitch_values: np.ndarray, tilt: float = 0.0) -> None:
        """The generator's vocabulary, for :meth:`pitch_bias`; ``tilt``: logits across a register per unit of
        the plan's register shift (calm plans lean low, aroused ones high)."""
        self._vocab = (int(size), np.asarray(pitch_ids), np.asarray(pitch_values, int), float(tilt))
        self._value_pcs = self._vocab[2] % 12
        self._all_pitches_forbidden = np.zeros(int(size), np.float32)
        self._all_pitches_forbidden[self._vocab[1]] = FORBID
        self._mask_cache.clear()
        self._sets_cache.clear()
        self._bias_cache.clear()

    def pitch_bias(self, voice: int, t: float, strong: bool) -> np.ndarray:
        """Logit bias (vocab,) for the next pitch of ``voice`` at ``t``: FORBID outside the allowed set.

        Every pitch is forbidden when nothing is allowed (the cap is full or everything clashes), so the
        generator moves on (a position, a bar) instead of proposing a note that would be refused.
        Cached: the same bar, voice, beat strength and sounding situation give the same array.
        """
        t0 = time.perf_counter()
        try:
            bar = self._bar(t)
            mask, full = self._situation(voice, t)
            return self._pitch_bias(voice, bar, strong and self.strong_chord, mask, full)
        finally:
            self._cost += time.perf_counter() - t0

    def veto(self, voice: int, t: float, strong: bool, pitch: int) -> np.ndarray | None:
        """None if ``voice`` may start ``pitch`` at ``t``, else the logit bias to sample again with.

        One look at the sounding notes serves both answers (the learned composer asks for every pitch
        the generator samples).
        """
        t0 = time.perf_counter()
        try:
            bar = self._bar(t)
            mask, full = self._situation(voice, t)
            strong = strong and self.strong_chord
            self.checked += 1
            inst = self._inst[voice]
            if full:
                reason = "cap"
            elif (mask >> (pitch % 12)) & 1:
                reason = "clash"
            elif not inst.low <= pitch <= inst.high:
                reason = "register"
            elif bar is None or (0 <= pitch < 128 and (bar.chord_table if strong else bar.scale_table)[voice][pitch]):
                return None
            else:
                reason = "chord" if strong else "scale"
            self.refused[reason] += 1
            return self._pitch_bias(voice, bar, strong, mask, full)
        finally:
            self._cost += time.perf_counter() - t0

    def veto_stats(self) -> dict[str, float | int | dict[str, int]]:
        """Sampled pitches checked, refused, the refused share and the refusals by reason (cap, clash,
        register, scale, chord): what the guard had to change of what a generator proposed."""
        refused = sum(self.refused.values())
        return {
            "checked": self.checked,
            "refused": refused,
            "rate": refused / self.checked if self.checked else 0.0,
            "by_reason": dict(self.refused),
        }

    def _pitch_bias(self, voice: int, bar: _Bar | None, strong: bool, mask: int, full: bool) -> np.ndarray:
        if self._vocab is None:
            raise RuntimeError("pitch_bias needs set_vocab() first")
        size, ids, values, _ = self._vocab
        key = (-1 if bar is None else bar.serial, voice, strong, mask, full)
        bias = self._bias_cache.get(key)
        if bias is None:
            if full:
                bias = self._all_pitches_forbidden
            elif bar is not None:
                bias = self._token_set(bar, voice)[0][int(strong)] + self._mask_bias(mask)
            else:  # before the first bar: register only
                inst = self._inst[voice]
                bias = np.zeros(size, np.float32)
                bias[ids] = np.where((values >= inst.low) & (values <= inst.high), 0.0, FORBID)
            if len(self._bias_cache) > 4096:
                self._bias_cache.clear()
            self._bias_cache[key] = bias
        return bias

    # -- admission -------------------------------------------------------------------------------

    def admit(
        self, voice: int, t: float, duration: float, pitch: int, *, drum: bool = False, min_duration: float = 0.0
    ) -> float | None:
        """Commit a note if the rules let it sound; returns its (possibly shortened) duration, or None."""
        t0 = time.perf_counter()
        try:
            return self._admit(voice, t, duration, pitch, drum, min_duration)
        finally:
            self._cost += time.perf_counter() - t0

    def _admit(
        self, voice: int, t: float, duration: float, pitch: int, drum: bool, min_duration: float
    ) -> float | None:
        end = t + duration
        at, before = t + _EPS, t - _EPS
        # a retrigger of the same pitch on the same instrument ends the old note (the scheduler does so),
        # but only if the new note is admitted
        retrigger: list[Sounding] = []
        now: list[Sounding] = []
        later: list[Sounding] = []
        for s in self.notes:
            if s.voice == voice and s.pitch == pitch and s.start < before < s.end:
                retrigger.append(s)
            elif s.start < end - _EPS and s.end > at:
                (now if s.start <= at else later).append(s)
        avoid = self._avoid_set
        if not drum and avoid:
            for s in now:
                if not s.drum and (pitch - s.pitch) % 12 in avoid:  # already sounding: the clash rule refuses
                    self.dropped += 1
                    return None
            for s in later:
                if not s.drum and (pitch - s.pitch) % 12 in avoid:
                    end = min(end, s.start)  # a later note: end before it
        # the cap, with one slot held for each recently active instrument that sounds nothing now
        if len(now) >= self.max_polyphony or (
            len(now) > self.max_polyphony - len(self._inst)
            and len(now) >= self._limit(voice, t, {s.voice for s in now})
        ):
            self.dropped += 1
            return None
        # later onsets inside the note must not push the ensemble over the cap: end before them
        if later and len(now) + len(later) >= self.max_polyphony:
            overlapping = now + later
            for s in sorted(later, key=lambda s: s.start):
                if s.start >= end - _EPS:
                    break
                count = sum(1 for o in overlapping if o.start <= s.start + _EPS and o.end > s.start + _EPS)
                if count + 1 > self.max_polyphony:
                    end = s.start
                    break
        if end - t < max(min_duration, _EPS):
            self.dropped += 1
            return None
        if end < t + duration - _EPS:
            self.shortened += 1
        for r in retrigger:
            r.end = t
        self.notes.append(Sounding(t, end, int(pitch), voice, drum))
        self._last_onset[voice] = max(self._last_onset[voice], t)
        return end - t


def merge_veto_stats(stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Add up the ``veto`` entries of several composers' :meth:`stats` (renders of several sessions)."""
    checked = sum(int(s.get("veto", {}).get("checked", 0)) for s in stats)
    by: Counter[str] = Counter()
    for s in stats:
        by.update(s.get("veto", {}).get("by_reason", {}))
    refused = sum(by.values())
    return {
        "checked": checked,
        "refused": refused,
        "rate": refused / checked if checked else 0.0,
        "by_reason": {k: v / checked if checked else 0.0 for k, v in sorted(by.items())},
        "dropped": sum(int(s.get("dropped", 0)) for s in stats),
    }


def guard_telemetry(composer_stats: Mapping[str, Any]) -> dict[str, float | int | bool]:
    """A composer's :meth:`stats` flattened for ``telemetry/health`` (``guard``)."""
    if not composer_stats:
        return {}
    v = merge_veto_stats([composer_stats])
    out: dict[str, float | int | bool] = {
        "arbiter": bool(composer_stats.get("arbiter", True)),
        "checked": int(v["checked"]),
        "veto_rate": float(v["rate"]),
        "dropped": int(v["dropped"]),
    }
    out |= {f"veto_{k}": float(x) for k, x in v["by_reason"].items()}
    return out
