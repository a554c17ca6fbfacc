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
The group average chooses the chord of each bar (a Markov walk over scale
degrees; calm, high-alpha states stay on a chord longer).

Roles shape rhythm: bass plays the chord root (or fifth) on beats; harmony plays
sustained chords on bar starts (and half bars when dense); melody walks the scale
stepwise towards its register target, landing on chord tones on beats; texture
arpeggiates chord tones; percussion plays kick / snare / hi-hat (GM drum map).

Every onset lies on the grid (``60 / tempo / steps_per_beat`` s); pitches are
quantised to key and scale inside each instrument's register. A global cap
(``max_polyphony``) limits notes sounding at once; when it bites, instruments with
fewer sounding notes go first, ties rotating, so no instrument is always dropped.
Randomness comes from numpy Generators seeded with ``(music.seed, instrument
index)``: the same states and spans give the same notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..config import InstrumentSettings, MusicSettings
from ..events import BrainState, Note
from .scales import SCALES, pitch_classes, quantize, scale_pitches

BANDS = ("theta", "alpha", "beta")
BEATS_PER_BAR = 4
_EPS = 1e-9

# Scale-degree chord progressions for 7-note scales (from degree → likely next degrees).
_PROGRESSION: dict[int, tuple[tuple[int, ...], tuple[float, ...]]] = {
    0: ((3, 4, 5, 1), (0.3, 0.3, 0.25, 0.15)),
    1: ((4, 6, 3), (0.6, 0.2, 0.2)),
    2: ((5, 3), (0.6, 0.4)),
    3: ((4, 0, 1), (0.45, 0.35, 0.2)),
    4: ((0, 5, 3), (0.6, 0.25, 0.15)),
    5: ((3, 1, 4), (0.4, 0.3, 0.3)),
    6: ((0, 5), (0.7, 0.3)),
}
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


@dataclass(slots=True)
class _Sounding:
    end: float
    channel: int
    pitch: int
    voice: int


class ClassicComposer:
    """Turns :class:`BrainState` into grid-aligned, in-scale notes, one instrument per group.

    Parameters
    ----------
    instruments : group name → instrument (as from :func:`~.ensemble.resolve_instruments`).
    music : tempo, key, scale, grid, seed, polyphony cap, smoothing.
    """

    def __init__(self, instruments: dict[str, InstrumentSettings], music: MusicSettings) -> None:
        self._music = music
        self._spb = music.steps_per_beat
        self._bar = BEATS_PER_BAR * self._spb
        self._grid = 60.0 / music.tempo / self._spb
        self._pcs = pitch_classes(music.key, music.scale)
        self._n_degrees = len(SCALES[music.scale])
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
        self._chord_rng = np.random.default_rng([seed, 1_000_003])
        self._degree = 0
        self._sounding: list[_Sounding] = []
        self._smoothed: dict[str, dict[str, float]] = {}
        self._last_t: float | None = None
        self._turn = 0
        self.dropped = 0  #: notes dropped by the polyphony cap so far

    @property
    def grid(self) -> float:
        """Seconds between grid steps."""
        return self._grid

    @property
    def features(self) -> dict[str, Features]:
        """The latest features per instrument (for telemetry)."""
        return {v.name: v.features for v in self._voices}

    def set_muted(self, name: str, muted: bool) -> None:
        """Mute or unmute one instrument from now on (e.g. a control command)."""
        for v in self._voices:
            if v.name == name:
                v.muted = muted
                return
        raise KeyError(name)

    def compose(self, state: BrainState, start: float, end: float) -> list[Note]:
        """Notes with onsets on grid steps in ``[start, end)`` (music seconds), sorted by time."""
        self._update_features(state)
        first = max(0, math.ceil(start / self._grid - _EPS))
        stop = math.ceil(end / self._grid - _EPS)
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

    def _mean_alpha(self) -> float:
        if not self._smoothed:
            return 0.0
        return float(np.mean([z["alpha"] for z in self._smoothed.values()]))

    # -- music side -------------------------------------------------------------------------

    def _next_chord(self) -> None:
        rng = self._chord_rng
        stay = float(np.clip(0.2 + 0.3 * math.tanh(self._mean_alpha() / 2.0), 0.05, 0.6))
        if rng.random() < stay:
            return
        if self._n_degrees == 7:
            nxt, p = _PROGRESSION[self._degree]
            self._degree = int(rng.choice(nxt, p=p))
        else:
            w = np.ones(self._n_degrees)
            w[0] = 3.0
            w[self._degree] = 0.0
            self._degree = int(rng.choice(self._n_degrees, p=w / w.sum()))

    def _chord(self) -> tuple[int, int, int]:
        """Pitch classes of the current chord: root, third, fifth (stacked scale thirds)."""
        n, d = self._n_degrees, self._degree
        return (self._pcs[d % n], self._pcs[(d + 2) % n], self._pcs[(d + 4) % n])

    def _step(self, step: int, calibrating: bool) -> list[Note]:
        t = step * self._grid
        if step % self._bar == 0:
            self._next_chord()
        self._sounding = [s for s in self._sounding if s.end > t + _EPS]
        wanted = [(v, self._play(v, step)) for v in self._voices if not v.muted]
        wanted = [(v, cand) for v, cand in wanted if cand]
        if not wanted:
            return []
        n_voices = len(self._voices)
        counts = {v.index: sum(s.voice == v.index for s in self._sounding) for v, _ in wanted}
        wanted.sort(key=lambda vc: (counts[vc[0].index], (vc[0].index - self._turn) % n_voices))
        self._turn += 1
        out: list[Note] = []
        for v, cand in wanted:
            for pitch, velocity, steps in cand:
                ch = v.inst.channel
                # a retrigger of a sounding (channel, pitch) ends the old note first (the scheduler does so)
                self._sounding = [s for s in self._sounding if not (s.channel == ch and s.pitch == pitch)]
                if len(self._sounding) >= self._music.max_polyphony:
                    self.dropped += 1
                    continue
                dur = steps * self._grid
                self._sounding.append(_Sounding(t + dur, ch, pitch, v.index))
                out.append(Note(t, dur, pitch, velocity, ch, v.name))
        return out

    def _velocity(self, v: _Voice, accent: float, scale: float = 1.0) -> int:
        lo, hi = v.inst.velocity
        pos = np.clip((v.features.loudness + accent) * scale + v.rng.uniform(-0.04, 0.04), 0.0, 1.0)
        return int(np.clip(round(lo + pos * (hi - lo)), 1, 127))

    def _target(self, v: _Voice) -> float:
        return v.inst.low + v.features.register * (v.inst.high - v.inst.low)

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
