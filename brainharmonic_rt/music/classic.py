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
_SHARPS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLATS = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")


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
    start: float = 0.0


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
        grid = 60.0 / music.tempo / self._spb
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
        self._key: str = music.key
        self._scale: str = music.scale
        # Grid timing as segments (t0, step position at t0, seconds per step), so a live tempo change
        # keeps the grid phase: step k sounds at t0 + (k - s0) * grid in the segment that holds it.
        self._segments: list[tuple[float, float, float]] = [(0.0, 0.0, grid)]
        self._solo: str | None = None
        self._plan: dict[int, int] = {}  # bar index → chord degree, decided one bar ahead
        self._external_plan: dict[int, int] = {}  # bar index → degree from a leader (multi-performer sync)
        self._sounding: list[_Sounding] = []
        self._smoothed: dict[str, dict[str, float]] = {}
        self._last_t: float | None = None
        self._turn = 0
        self.dropped = 0  #: notes dropped by the polyphony cap so far

    @property
    def grid(self) -> float:
        """Seconds between grid steps (at the latest tempo)."""
        return self._segments[-1][2]

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

    # -- live changes (control commands, multi-performer sync) ------------------------------
    #
    # Each change applies from a music time ``at`` on. Notes already composed beyond ``at`` stay
    # as they are unless the caller rewinds first (:meth:`rewind`, then compose ``[at, ...)`` again):
    # that is how the pipeline makes a command audible at once instead of after the lookahead.

    @property
    def tempo(self) -> float:
        """Beats per minute of the latest grid segment."""
        return 60.0 / (self._segments[-1][2] * self._spb)

    @property
    def key(self) -> str:
        return self._key

    @property
    def scale(self) -> str:
        return self._scale

    @property
    def steps_per_beat(self) -> int:
        return self._spb

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

    def _segment(self, t: float) -> tuple[float, float, float]:
        for seg in reversed(self._segments):
            if t >= seg[0] - _EPS:
                return seg
        return self._segments[0]

    def _pos(self, t: float) -> float:
        """Grid position (in steps, fractional) of music time ``t``."""
        t0, s0, grid = self._segment(t)
        return s0 + (t - t0) / grid

    def _time_of(self, step: float) -> float:
        """Music time of grid position ``step``."""
        for t0, s0, grid in reversed(self._segments):
            if step >= s0 - _EPS:
                return t0 + (step - s0) * grid
        t0, s0, grid = self._segments[0]
        return t0 + (step - s0) * grid

    def _grid_at(self, t: float) -> float:
        return self._segment(t)[2]

    def beat_at(self, t: float) -> float:
        """Beat position (fractional, 0 = session start unless a leader renumbered it) at music time ``t``."""
        return self._pos(t) / self._spb

    def time_of_beat(self, beat: float) -> float:
        """Music time (s) of beat position ``beat``."""
        return self._time_of(beat * self._spb)

    def retime(self, at: float, tempo: float | None = None, *, beat: float | None = None) -> None:
        """From music time ``at`` on, play at ``tempo`` BPM; the grid phase continues unless ``beat`` is
        given, in which case the beat position at ``at`` jumps to ``beat`` (a leader's numbering)."""
        tempo = self.tempo if tempo is None else float(tempo)
        if not 20.0 <= tempo <= 300.0:
            raise ValueError(f"tempo must be 20..300 BPM, got {tempo}")
        pos = self._pos(at) if beat is None else float(beat) * self._spb
        self._segments = [seg for seg in self._segments if seg[0] < at - _EPS]
        self._segments.append((at, pos, 60.0 / tempo / self._spb))
        del self._segments[:-8]  # older segments are never asked for again

    def rewind(self, t: float) -> None:
        """Forget notes composed with onsets at or after ``t`` (they were cancelled downstream)."""
        self._sounding = [s for s in self._sounding if s.start < t - _EPS]

    def set_key(
        self, key: str, scale: str | None = None, *, registers: dict[str, tuple[int, int]] | None = None
    ) -> None:
        """Key and scale (and optionally registers, name → (low, high)) from now on.

        Raises ConfigError, changing nothing, if a register would hold no note of the scale.
        """
        scale = self._scale if scale is None else scale
        registers = dict(registers or {})
        for name in registers:
            self._voice(name)
        bounds = [registers.get(v.name, (v.inst.low, v.inst.high)) for v in self._voices]
        allowed = [scale_pitches(key, scale, lo, hi) for lo, hi in bounds]
        pcs = pitch_classes(key, scale)
        for v, a, (lo, hi) in zip(self._voices, allowed, bounds, strict=True):
            if (lo, hi) != (v.inst.low, v.inst.high):
                v.inst = v.inst.model_copy(update={"low": int(lo), "high": int(hi)})
            v.allowed = a
            v.arp_pos = 0
        self._pcs, self._n_degrees = pcs, len(SCALES[scale])
        self._degree %= self._n_degrees
        self._plan = {b: d % self._n_degrees for b, d in self._plan.items()}
        self._key, self._scale = key, scale

    def _voice(self, name: str) -> _Voice:
        for v in self._voices:
            if v.name == name:
                return v
        raise KeyError(name)

    def set_register(self, name: str, low: int, high: int) -> None:
        """Register of one instrument; raises ConfigError (changing nothing) if it holds no note of the scale."""
        self.set_key(self._key, self._scale, registers={name: (low, high)})

    def set_program(self, name: str, program: int) -> None:
        """Record an instrument's new program (the caller sends the program change)."""
        v = self._voice(name)
        v.inst = v.inst.model_copy(update={"program": int(program)})

    def set_solo(self, name: str | None) -> None:
        """Only ``name`` plays from now on (None: everyone not muted plays)."""
        if name is not None:
            self._voice(name)
        self._solo = name

    def set_limits(self, *, max_polyphony: int | None = None, smoothing: float | None = None) -> None:
        """Polyphony cap and feature smoothing from now on (a config reload)."""
        update: dict[str, float | int] = {}
        if max_polyphony is not None:
            update["max_polyphony"] = int(max_polyphony)
        if smoothing is not None:
            update["smoothing"] = float(smoothing)
        self._music = self._music.model_copy(update=update)

    def _audible(self, v: _Voice) -> bool:
        return not v.muted and (self._solo is None or v.name == self._solo)

    def silenced(self) -> set[str]:
        """Instruments that play nothing now (muted, or not the solo)."""
        return {v.name for v in self._voices if not self._audible(v)}

    def chord_name(self, degree: int | None = None) -> str:
        """Symbol of the current chord (or of scale degree ``degree``), e.g. 'Dm' or 'G'."""
        d = self._degree if degree is None else degree
        n = self._n_degrees
        root, third, fifth = self._pcs[d % n], self._pcs[(d + 2) % n], self._pcs[(d + 4) % n]
        quality = {(4, 7): "", (3, 7): "m", (3, 6): "dim", (4, 8): "aug"}.get(
            ((third - root) % 12, (fifth - root) % 12), "sus"
        )
        names = _FLATS if self._key == "F" or "b" in self._key else _SHARPS
        return names[root] + quality

    @property
    def degree(self) -> int:
        """Scale degree (0-based) of the current chord's root."""
        return self._degree

    def chord_plan(self) -> list[tuple[int, int]]:
        """(bar, degree) of the chords decided ahead (the next bar's), for a leader to publish."""
        return sorted(self._plan.items())

    def follow_chords(self, plan: dict[int, int]) -> None:
        """Use a leader's chord degrees for these bars (bar index → degree) when they start."""
        self._external_plan.update({int(b): int(d) for b, d in plan.items()})

    def compose(self, state: BrainState, start: float, end: float) -> list[Note]:
        """Notes with onsets on grid steps in ``[start, end)`` (music seconds), sorted by time."""
        self._update_features(state)
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

    def _mean_alpha(self) -> float:
        if not self._smoothed:
            return 0.0
        return float(np.mean([z["alpha"] for z in self._smoothed.values()]))

    # -- music side -------------------------------------------------------------------------

    def _next_chord(self, bar: int) -> None:
        """Chord of bar ``bar``: a leader's plan if it has one, else ours (decided one bar ahead).

        Deciding one bar ahead lets a leader publish the next bar's chord before followers need it.
        """
        degree = self._plan.pop(bar, None)
        if degree is None:
            degree = self._walk(self._degree)
        external = self._external_plan.pop(bar, None)
        self._degree = (external if external is not None else degree) % self._n_degrees
        self._plan[bar + 1] = self._walk(self._degree)
        for old in [b for b in self._plan if b <= bar]:
            del self._plan[old]
        for old in [b for b in self._external_plan if b < bar]:
            del self._external_plan[old]

    def _walk(self, degree: int) -> int:
        """One step of the chord Markov walk from ``degree``."""
        rng = self._chord_rng
        stay = float(np.clip(0.2 + 0.3 * math.tanh(self._mean_alpha() / 2.0), 0.05, 0.6))
        degree %= self._n_degrees
        if rng.random() < stay:
            return degree
        if self._n_degrees == 7:
            nxt, p = _PROGRESSION[degree]
            return int(rng.choice(nxt, p=p))
        w = np.ones(self._n_degrees)
        w[0] = 3.0
        w[degree] = 0.0
        return int(rng.choice(self._n_degrees, p=w / w.sum()))

    def _chord(self) -> tuple[int, int, int]:
        """Pitch classes of the current chord: root, third, fifth (stacked scale thirds)."""
        n, d = self._n_degrees, self._degree
        return (self._pcs[d % n], self._pcs[(d + 2) % n], self._pcs[(d + 4) % n])

    def _step(self, step: int, calibrating: bool) -> list[Note]:
        t = self._time_of(step)
        if step % self._bar == 0:
            self._next_chord(step // self._bar)
        self._sounding = [s for s in self._sounding if s.end > t + _EPS]
        wanted = [(v, self._play(v, step)) for v in self._voices if self._audible(v)]
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
                dur = steps * self._grid_at(t)
                self._sounding.append(_Sounding(t + dur, ch, pitch, v.index, t))
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
