"""Classic mode: band powers drive the music directly (an in-process EEGsynth equivalent).

Brain → music mapping
---------------------
Each instrument listens to its own channel group. Its band z-scores (robust z vs
the baseline, clipped ±4) are smoothed with an exponential filter
(``music.smoothing`` s) and squashed with ``s_b = tanh(z_b / 2)`` (±0.46 at 1 σ,
±0.76 at 2 σ). With ``drive = s_beta - s_alpha`` (−2..2):

============  ===================================================================
beta up       denser (onset probability × 2^(1.5·drive)), higher (register
              position 0.5 + 0.25·drive), louder (velocity position 0.55 + 0.25·drive)
alpha up      the mirror image: sparser, lower, softer
theta up      longer notes (duration × 2^(1.2·s_theta)); chords sustain the full bar
calibrating   sparser (× 0.35) and softer (× 0.6) until the baseline is known
============  ===================================================================

So a sustained change of 2 σ (beta up, alpha down) makes an instrument about 5×
denser, half a register higher and clearly louder; nothing re-normalises it away.
Key, chord, tempo and overall density come from the shared :class:`~.harmony.HarmonicPlan`
(driven by the global brain state, with hysteresis), and every note passes the
:class:`~.arbiter.Arbiter` before it is committed.

Roles shape rhythm: bass plays the chord root (or fifth) on beats; harmony plays
sustained chords on bar starts (and half bars when dense); melody walks the scale
stepwise towards its register target, landing on chord tones on beats; texture
arpeggiates chord tones; percussion plays kick / snare / hi-hat (GM drum map).

Every onset lies on the grid (``60 / tempo / steps_per_beat`` s); each wished pitch is
quantised by the arbiter onto the allowed set (chord tones on beats 1 and 3, scale tones
elsewhere, in register, no forbidden interval against sounding notes). The arbiter's global
cap (``max_polyphony``) holds a slot for each instrument that is active but silent;
instruments with fewer sounding notes choose first, ties rotating.
Randomness comes from numpy Generators seeded with ``(music.seed, instrument
index)``: the same states and spans give the same notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import HarmonySettings, InstrumentSettings, MusicSettings
from ..events import BrainState, Note
from .composer import SILENT_BELOW, EnsembleComposer
from .harmony import BarPlan
from .scales import quantize, scale_pitches

BANDS = ("theta", "alpha", "beta")
BEATS_PER_BAR = 4
_EPS = 1e-9

_KICK, _SNARE, _HAT = 36, 38, 42


@dataclass(frozen=True, slots=True)
class Features:
    """What the brain state asks of one instrument right now.

    density : multiplier of the role's onset probability (1 = neutral).
    register : target position in the register, 0 (low) .. 1 (high).
    loudness : velocity position inside the instrument's velocity range, 0..1.
    legato : multiplier of note durations (1 = neutral).
    """

    density: float
    register: float
    loudness: float
    legato: float


def features_from_z(z: dict[str, float], calibrating: bool) -> Features:
    """Map band z-scores of one group to :class:`Features` (see the module docstring)."""
    s = {b: math.tanh(float(z.get(b, 0.0)) / 2.0) for b in BANDS}
    drive = s["beta"] - s["alpha"]
    density = 2.0 ** (1.5 * drive)
    loudness = float(np.clip(0.55 + 0.25 * drive, 0.0, 1.0))
    if calibrating:
        density *= 0.35
        loudness *= 0.6
    return Features(
        density=density,
        register=float(np.clip(0.5 + 0.25 * drive, 0.05, 0.95)),
        loudness=loudness,
        legato=2.0 ** (1.2 * s["theta"]),
    )


@dataclass(slots=True)
class _Voice:
    name: str
    inst: InstrumentSettings
    allowed: np.ndarray  # shape (n,), scale pitches in the register
    rng: np.random.Generator
    index: int
    last_pitch: int | None = None
    arp_pos: int = 0
    arp_dir: int = 1
    muted: bool = False
    features: Features = field(default_factory=lambda: features_from_z({}, False))


class ClassicComposer(EnsembleComposer[_Voice]):
    """Turns :class:`BrainState` into grid-aligned, in-scale notes, one instrument per group.

    Parameters
    ----------
    instruments : group name → instrument (as from :func:`~.ensemble.resolve_instruments`).
    music : tempo, key, scale, grid, seed, polyphony cap, smoothing.
    harmony : the plan's and the arbiter's settings.
    """

    def __init__(
        self,
        instruments: dict[str, InstrumentSettings],
        music: MusicSettings,
        harmony: HarmonySettings | None = None,
    ) -> None:
        super().__init__(instruments, music, harmony)
        self._music = music
        self._spb = music.steps_per_beat
        self._bar = BEATS_PER_BAR * self._spb
        self._bar_plan: BarPlan | None = None
        self._revise_bar = False
        seed = music.seed & 0xFFFF_FFFF_FFFF_FFFF  # SeedSequence wants a non-negative entropy
        self._voices = [
            _Voice(
                name=name,
                inst=inst,
                allowed=scale_pitches(music.key, music.scale, inst.low, inst.high),
                rng=np.random.default_rng([seed, i]),
                index=i,
                muted=inst.muted,
            )
            for i, (name, inst) in enumerate(instruments.items())
        ]
        self._smoothed: dict[str, dict[str, float]] = {}
        self._last_t: float | None = None
        self._turn = 0

    @property
    def features(self) -> dict[str, Features]:
        """The latest features per instrument (for telemetry)."""
        return {v.name: v.features for v in self._voices}

    @property
    def steps_per_beat(self) -> int:
        return self._spb

    # -- live changes (control commands, multi-performer sync) ------------------------------
    #
    # Each change applies from a music time ``at`` on. Notes already composed beyond ``at`` stay
    # as they are unless the caller rewinds first (:meth:`rewind`, then compose ``[at, ...)`` again):
    # that is how the pipeline makes a command audible at once instead of after the lookahead.

    def _pos(self, t: float) -> float:
        """Grid position (in steps, fractional) of music time ``t``."""
        return self._timeline.beat_at(t) * self._spb

    def _time_of(self, step: float) -> float:
        """Music time of grid position ``step``."""
        return self._timeline.time_of_beat(step / self._spb)

    def _grid_at(self, t: float) -> float:
        return self._timeline.seconds_per_beat(t) / self._spb

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

    def adopt(self, other: EnsembleComposer[Any], frontier: float | None = None) -> None:
        """Take over from another composer mid-session (a live mode switch): same beat grid, plan,
        arbiter, mute/solo; steps go on from the grid position where ``other`` stopped composing."""
        self.adopt_shared(other)
        self._bar_plan = None

    def rewind(self, t: float) -> None:
        """Forget notes composed with onsets at or after ``t`` (they were cancelled downstream)."""
        self.arbiter.rewind(t)

    def set_key(
        self, key: str, scale: str | None = None, *, registers: dict[str, tuple[int, int]] | None = None
    ) -> None:
        """Key and scale (and optionally registers, name → (low, high)) from now on; pins the key.

        Raises ConfigError, changing nothing, if a register would hold no note of the scale.
        """
        scale = self._scale if scale is None else scale
        registers = dict(registers or {})
        for name in registers:
            self._voice(name)
        bounds = [registers.get(v.name, (v.inst.low, v.inst.high)) for v in self._voices]
        allowed = [scale_pitches(key, scale, lo, hi) for lo, hi in bounds]
        for v, a, (lo, hi) in zip(self._voices, allowed, bounds, strict=True):
            if (lo, hi) != (v.inst.low, v.inst.high):
                v.inst = v.inst.model_copy(update={"low": int(lo), "high": int(hi)})
                self.arbiter.set_instrument(v.name, v.inst)
            v.allowed = a
            v.arp_pos = 0
        if (key, scale) != (self._key, self._scale):
            self.plan.set_home(key, scale, pin=True)
        self._key, self._scale = key, scale
        self._revise_bar = True  # the bar in progress is planned again from the next composed step

    def set_register(self, name: str, low: int, high: int) -> None:
        """Register of one instrument; raises ConfigError (changing nothing) if it holds no note of the scale."""
        self.set_key(self._key, self._scale, registers={name: (low, high)})

    def set_limits(self, *, max_polyphony: int | None = None, smoothing: float | None = None) -> None:
        """Polyphony cap and feature smoothing from now on (a config reload)."""
        update: dict[str, float | int] = {}
        if max_polyphony is not None:
            update["max_polyphony"] = int(max_polyphony)
            self.arbiter.max_polyphony = int(max_polyphony)
        if smoothing is not None:
            update["smoothing"] = float(smoothing)
        self._music = self._music.model_copy(update=update)

    def compose(self, state: BrainState, start: float, end: float) -> list[Note]:
        """Notes with onsets on grid steps in ``[start, end)`` (music seconds), sorted by time."""
        self._update_features(state)
        self.observe_signal(state, start)
        self.plan.observe(state)
        first = max(0, math.ceil(self._pos(start) - _EPS))
        stop = math.ceil(self._pos(end) - _EPS)
        notes: list[Note] = []
        for step in range(first, stop):
            notes.extend(self._step(step, state.calibrating))
        notes.sort(key=lambda n: (n.time, n.channel, n.pitch))
        return notes

    # -- brain side -------------------------------------------------------------------------

    def _update_features(self, state: BrainState) -> None:
        tau = self._music.smoothing
        dt = None if self._last_t is None else state.t_end - self._last_t
        self._last_t = state.t_end
        keep = 0.0 if tau <= 0 or dt is None or dt < 0 else math.exp(-dt / tau)
        raw = {g.name: g.z for g in state.groups if g.n_good > 0}
        for v in self._voices:
            z = raw.get(v.name, {})
            old = self._smoothed.get(v.name)
            new = {b: float(z.get(b, 0.0)) for b in BANDS}
            if old is not None:
                new = {b: keep * old[b] + (1.0 - keep) * new[b] for b in BANDS}
            self._smoothed[v.name] = new
            v.features = features_from_z(new, state.calibrating)

    # -- music side -------------------------------------------------------------------------

    def _start_bar(self, step: int, t: float) -> None:
        """Ask the plan for this bar (tempo, chord, density) and hand it to the arbiter."""
        bar = self.plan.start_bar(step // self._bar, t, self.tempo)
        if abs(bar.tempo - self.tempo) > 1e-9:
            self._timeline.retime(t, bar.tempo)  # the plan's own change: not a pin
        self._bar_plan = bar
        self.arbiter.set_bar(bar)

    def _chord(self) -> tuple[int, ...]:
        """Pitch classes of the current chord, root first."""
        return self._bar_plan.chord_pcs if self._bar_plan is not None else self.plan.chord_pcs()

    def _step(self, step: int, calibrating: bool) -> list[Note]:
        t = self._time_of(step)
        if step % self._bar == 0 or self._bar_plan is None or self._revise_bar:
            self._revise_bar = False
            self._start_bar(step, t)
            t = self._time_of(step)
        self._bar_plan = self.arbiter.plan_at(t)
        self.arbiter.forget_before(t)
        wanted = [(v, self._play(v, step)) for v in self._voices if self._audible(v)]
        wanted = [(v, cand) for v, cand in wanted if cand]
        if not wanted:
            return []
        n_voices = len(self._voices)
        sounding = self.arbiter.notes
        counts = {v.index: sum(s.voice == v.index for s in sounding) for v, _ in wanted}
        wanted.sort(key=lambda vc: (counts[vc[0].index], (vc[0].index - self._turn) % n_voices))
        self._turn += 1
        strong = step % (2 * self._spb) == 0  # beats 1 and 3
        grid = self._grid_at(t)
        out: list[Note] = []
        for v, cand in wanted:
            drum = v.inst.role == "percussion"
            presence = self.presence(v.name, t)
            if presence < SILENT_BELOW:  # its electrode group has no good channel
                continue
            for pitch, velocity, steps in cand:
                if presence < 1.0:
                    velocity = max(1, round(velocity * presence))
                if not drum:
                    chosen = self.arbiter.choose(v.index, pitch, t, strong)
                    if chosen is None:
                        self.arbiter.dropped += 1
                        continue
                    pitch = chosen
                    if v.inst.role == "melody":
                        v.last_pitch = pitch
                dur = self.arbiter.admit(v.index, t, steps * grid, pitch, drum=drum, min_duration=0.5 * grid)
                if dur is not None:
                    out.append(Note(t, dur, pitch, velocity, v.inst.channel, v.name))
        return out

    def _velocity(self, v: _Voice, accent: float, scale: float = 1.0) -> int:
        lo, hi = v.inst.velocity
        pos = np.clip((v.features.loudness + accent) * scale + v.rng.uniform(-0.04, 0.04), 0.0, 1.0)
        return int(np.clip(round(lo + pos * (hi - lo)), 1, 127))

    def _target(self, v: _Voice) -> float:
        shift = self._bar_plan.register if self._bar_plan is not None else 0.0
        position = float(np.clip(v.features.register + shift, 0.0, 1.0))
        return v.inst.low + position * (v.inst.high - v.inst.low)

    def _nearest_pc(self, v: _Voice, pc: int, target: float) -> int:
        cands = v.allowed[v.allowed % 12 == pc]
        if cands.size == 0:
            return quantize(target, v.allowed)
        return int(cands[np.argmin(np.abs(cands - target))])

    def _duration(self, v: _Voice, base_steps: float, lo: float, hi: float) -> float:
        return float(np.clip(base_steps * v.features.legato, lo, hi))

    def _play(self, v: _Voice, step: int) -> list[tuple[int, int, float]]:
        """Candidate notes (pitch, velocity, duration in steps) of one voice at one step."""
        role = v.inst.role
        f = v.features
        if self._bar_plan is not None:  # the plan's overall density (calm: sparser)
            f = Features(f.density * self._bar_plan.density, f.register, f.loudness, f.legato)
        spb, bar = self._spb, self._bar
        in_bar = step % bar
        on_beat = step % spb == 0
        accent = 0.12 if in_bar == 0 else (0.06 if on_beat else 0.0)
        r = v.rng.random()
        if role == "bass":
            p = 0.4 * f.density if on_beat else (0.08 * f.density if step % max(1, spb // 2) == 0 else 0.0)
            if in_bar == 0:  # the bass keeps the downbeat even when calm
                p = max(p, 0.9 * min(1.0, 0.3 + f.density))
            if r >= min(p, 0.95):
                return []
            root, _, fifth = self._chord()
            pc = fifth if in_bar != 0 and v.rng.random() < 0.25 else root
            pitch = self._nearest_pc(v, pc, self._target(v))
            return [(pitch, self._velocity(v, accent), self._duration(v, spb * 0.9, 1, 2 * bar))]
        if role == "harmony":
            if in_bar == 0:
                p, length = 0.95 * min(1.0, 0.5 + f.density), bar
            elif in_bar == bar // 2:
                p, length = float(np.clip(0.3 * (f.density - 1.0), 0.0, 0.8)), bar // 2
            else:
                return []
            if r >= p:
                return []
            center = self._target(v)
            pitches = [self._nearest_pc(v, pc, center) for pc in self._chord()]
            vel = self._velocity(v, accent)
            dur = self._duration(v, length * 0.9, length * 0.3, length)
            return [(p_, vel, dur) for p_ in dict.fromkeys(pitches)]
        if role == "melody":
            p = (0.4 if on_beat else 0.2) * f.density
            if r >= min(p, 0.85):
                return []
            pitch = self._melody_pitch(v, on_beat)
            steps = float(v.rng.choice([1, 2, 2, 3, 4]))
            return [(pitch, self._velocity(v, accent), self._duration(v, steps, 1, bar))]
        if role == "texture":
            p = 0.3 * f.density if step % 2 == 0 or spb < 2 else 0.15 * f.density
            if r >= min(p, 0.95):
                return []
            pitch = self._arpeggio_pitch(v)
            return [(pitch, self._velocity(v, accent, 0.85), self._duration(v, 2, 1, bar))]
        # percussion (GM drum map; not quantised to the scale)
        out: list[tuple[int, int, float]] = []
        if step % (2 * spb) == 0 and r < 0.9 * min(1.0, f.density):
            out.append((_KICK, self._velocity(v, accent), 1.0))
        elif on_beat and r < 0.7 * min(1.0, f.density):
            out.append((_SNARE, self._velocity(v, accent), 1.0))
        if v.rng.random() < min(0.25 * f.density, 0.95):
            out.append((_HAT, self._velocity(v, accent, 0.8), 1.0))
        return out

    def _melody_pitch(self, v: _Voice, on_beat: bool) -> int:
        allowed = v.allowed
        target = self._target(v)
        rng = v.rng
        if v.last_pitch is None:
            pitch = quantize(target, allowed)
        else:
            idx = int(np.searchsorted(allowed, v.last_pitch).clip(0, allowed.size - 1))
            t_idx = int(np.searchsorted(allowed, target).clip(0, allowed.size - 1))
            move = int(rng.choice([-2, -1, 0, 1, 2], p=[0.12, 0.34, 0.08, 0.34, 0.12]))
            if abs(t_idx - idx) > 2:
                move += 1 if t_idx > idx else -1
            if rng.random() < 0.08:  # an occasional leap to a chord tone near the target
                idx = int(np.searchsorted(allowed, target).clip(0, allowed.size - 1))
                move = 0
            pitch = int(allowed[int(np.clip(idx + move, 0, allowed.size - 1))])
        if on_beat and rng.random() < 0.5:
            chord = self._chord()
            tones = allowed[np.isin(allowed % 12, chord)]
            if tones.size:
                pitch = int(tones[np.argmin(np.abs(tones - pitch))])
        v.last_pitch = pitch
        return pitch

    def _arpeggio_pitch(self, v: _Voice) -> int:
        tones = v.allowed[np.isin(v.allowed % 12, self._chord())]
        if tones.size == 0:
            tones = v.allowed
        target = self._target(v)
        # walk up and down the chord tones within about an octave around the target
        window = tones[np.abs(tones - target) <= 9]
        if window.size < 2:
            window = tones
        n = window.size
        if n == 1:
            return int(window[0])
        pos = v.arp_pos + v.arp_dir
        if pos >= n or pos < 0:
            v.arp_dir = -v.arp_dir
            pos = int(np.clip(v.arp_pos + v.arp_dir, 0, n - 1))
        v.arp_pos = pos
        return int(window[pos])
