"""Learned mode with the ensemble model: every voice hears the others, the harmony comes from the model.

The ensemble model (``models/ensemble.onnx``, card ``models/ensemble.md``) was trained on real
ensemble music (chorales, polyphony, string quartets, folk melodies). The composer keeps one model
stream per instrument on an eighth-note grid; one ONNX call advances all of them by one step
(:class:`~.ensemble_model.EnsembleModel`), then the voices choose one after the other, bass first
and melody last, each adding the model's learned pair and motion terms for what the voices before
it just chose and what the others still hold (:mod:`.ensemble_grid`). A chosen note has its length
from the onset, so the arbiter sees whole notes.

Key: the model plays in C major / A minor; the composer transposes by the key's offset
(:func:`~.ensemble_grid.key_offset`) and gives the model the plan's centre (major or minor).
Steering: per bar, the global music latent (from the global brain latent) and each instrument's
own (from its group's latent) through the brain → music map (:class:`~.steering.BrainSteering`);
before calibration ends the model plays unsteered.

The arbiter stays the guard: every sampled pitch is put to it (scale, no clash with a sounding
note, room under the cap) and a refused one is sampled again from the logits plus the arbiter's
mask; admission cuts a note short rather than clash. Strong-beat chord tones are *not* asked for:
the chords are the model's. Its veto rate is in :meth:`stats`. With ``[harmony] arbiter = false``
only the registers (a logit mask) and the polyphony cap remain.
"""

from __future__ import annotations

import collections
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..brain.latent_map import LatentMap, SessionCentres
from ..config import GeneratorSettings, HarmonySettings, InstrumentSettings, MusicSettings
from ..errors import ConfigError
from ..events import BrainState, Note
from .composer import SILENT_BELOW, AheadDecoding, Composer
from .ensemble_grid import (
    LOW_PITCH,
    N_EVENT,
    N_PITCH,
    N_POS,
    NONE,
    ROLES,
    RUNTIME_ROLE,
    STEPS_PER_BEAT,
    key_offset,
    motion_bias,
    pair_bias,
    register_features,
)
from .ensemble_model import EnsembleModel
from .generator import FORBID, sample
from .learned import KEPT_SNAPSHOTS, MAX_NOTE_BEATS, TILT, drum_sound
from .scales import pitch_classes
from .steering import BrainSteering
from .tokens import BEATS_PER_BAR

STEPS_PER_BAR = BEATS_PER_BAR * STEPS_PER_BEAT
#: order in which voices choose within a step (then by register, low first): bass, inner, texture, melody
_ORDER = {"bass": 0, "inner": 1, "texture": 1, "melody": 2}


@dataclass(slots=True)
class _EVoice:
    name: str
    inst: InstrumentSettings
    index: int
    role: int
    program: int  # the program the model is conditioned on
    rng: np.random.Generator
    thin_rng: np.random.Generator
    muted: bool = False
    drum: bool = False
    prev: int = NONE  # event at the previous step
    pitch: int = 0  # model-space pitch of the current note (0: none)
    end: int = -1  # grid step at which the current note ends
    last: int | None = None  # model-space pitch of the last onset
    latent: np.ndarray | None = None
    pending: np.ndarray | None = None
    mask: np.ndarray = field(default_factory=lambda: np.zeros(N_PITCH, np.float32))  # register mask (model space)

    def snapshot(self) -> tuple[Any, ...]:
        """What decoding changes (restored by a rewind)."""
        return (
            self.prev,
            self.pitch,
            self.end,
            self.last,
            self.latent,
            self.pending,
            copy.deepcopy(self.rng.bit_generator.state),
            copy.deepcopy(self.thin_rng.bit_generator.state),
        )

    def restore(self, saved: tuple[Any, ...]) -> None:
        self.prev, self.pitch, self.end, self.last, self.latent, self.pending, rng, thin = saved
        self.rng.bit_generator.state = copy.deepcopy(rng)
        self.thin_rng.bit_generator.state = copy.deepcopy(thin)


@dataclass(frozen=True, slots=True)
class _SpanStart:
    """The composer at the start of a composed span (see :meth:`EnsembleLearnedComposer.rewind`)."""

    start: float  #: music time (s)
    step: int
    state: np.ndarray  #: the model's recurrent state
    global_latent: tuple[np.ndarray | None, np.ndarray | None]
    voices: list[tuple[Any, ...]]


class EnsembleLearnedComposer(BrainSteering, AheadDecoding, Composer[_EVoice]):
    """Brain states → notes from the ensemble model (same contract as the other composers)."""

    def __init__(
        self,
        instruments: dict[str, InstrumentSettings],
        music: MusicSettings,
        generator: GeneratorSettings | None = None,
        harmony: HarmonySettings | None = None,
        *,
        model: EnsembleModel | None = None,
        latent_map: LatentMap | None = None,
        centres: SessionCentres | None = None,
    ) -> None:
        super().__init__(instruments, music, harmony)
        gen = generator or GeneratorSettings()
        self._gen = gen
        self.model = model or EnsembleModel(gen.model, threads=gen.threads, device=gen.device)
        path = Path(gen.latent_map) if gen.latent_map else None
        beside = self.model.onnx.path.with_name(self.model.onnx.path.stem + "_map.npz")  # the model's own map
        self._init_steering(latent_map, path, beside, self.model.latent_dim, centres)
        #: the engine passes its centres and feeds them with every state in any mode, else compose feeds them
        self._feeds_centres = centres is None
        self.temperature = gen.temperature
        self.top_p = gen.top_p
        seed = music.seed & 0xFFFF_FFFF_FFFF_FFFF
        self._voices = []
        for i, (name, inst) in enumerate(instruments.items()):
            role = ROLES.index(RUNTIME_ROLE[inst.role])
            self._voices.append(
                _EVoice(
                    name,
                    inst,
                    i,
                    role,
                    self.model.resolve_program(inst.program),
                    np.random.default_rng([seed, 11, i]),
                    np.random.default_rng([seed, 7_000_003, i]),
                    muted=inst.muted,
                    drum=inst.role == "percussion",
                )
            )
        self._global: np.ndarray | None = None
        self._global_pending: np.ndarray | None = None
        self._state = self.model.initial_state(len(self._voices))
        self._step = 0  # next grid step to decode
        self._offset = 0.0  # music beat of grid step 0
        self._started = False
        self._bar = -1
        self._frontier: float | None = None
        self._snapshots: collections.deque[_SpanStart] = collections.deque(maxlen=KEPT_SNAPSHOTS)
        self._set_key(self._key, self._scale)
        self._sync_audible()

    # -- what the rest of the service reads ------------------------------------------------------

    @property
    def steps_per_beat(self) -> int:
        return STEPS_PER_BEAT

    @property
    def latents(self) -> dict[str, np.ndarray | None]:
        """The voice latent each instrument is playing now (telemetry)."""
        return {v.name: v.latent for v in self._voices}

    def _adopted(self, other: Composer[Any], frontier: float | None) -> None:
        """The voices start at the first bar line after what ``other`` composed."""
        self._set_key(self._key, self._scale)
        self._frontier = frontier
        self._started = True
        beat = self._timeline.beat_at(frontier) if frontier is not None else 0.0
        first_bar = int(np.ceil(beat / BEATS_PER_BAR - 1e-9))
        self._bar = first_bar - 1
        self._offset = float(first_bar * BEATS_PER_BAR)
        self._step = 0
        self._snapshots.clear()

    # -- live changes ---------------------------------------------------------------------------
    #
    # Each composed span starts with a snapshot (the model's recurrent state and every voice's); a live
    # change at ``at`` restores the latest snapshot at or before ``at`` and :meth:`compose` decodes forward
    # again, keeping only the notes from ``at`` on, so the change is heard within the cut.

    def rewind(self, t: float) -> None:
        """Forget notes composed with onsets at or after ``t``: back to the last span start at or before ``t``
        (kept for :data:`KEPT_SNAPSHOTS` spans); with none that old, changes apply from the frontier."""
        snap = self._span_before(t)
        if snap is None:
            return
        self._step, self._state = snap.step, snap.state.copy()
        self._global, self._global_pending = snap.global_latent
        for v, saved in zip(self._voices, snap.voices, strict=True):
            v.restore(saved)

    def _set_key(self, key: str, scale: str) -> None:
        self._transpose, self._mode = key_offset(tonic_pc(key), scale)
        pitches = LOW_PITCH + np.arange(N_PITCH) + self._transpose
        self.arbiter.set_vocab(N_EVENT, np.arange(1, N_EVENT), pitches, TILT)
        for v in self._voices:
            v.mask = np.where((pitches >= v.inst.low) & (pitches <= v.inst.high), 0.0, FORBID).astype(np.float32)

    def _check_instrument(self, inst: InstrumentSettings, key: str, scale: str) -> None:
        super()._check_instrument(inst, key, scale)
        off, _ = key_offset(tonic_pc(key), scale)
        lo, hi = inst.low, inst.high
        if hi - off < LOW_PITCH or lo - off > LOW_PITCH + N_PITCH - 1:
            raise ConfigError(
                f"it holds no pitch the ensemble model plays ({LOW_PITCH + off}..{LOW_PITCH + N_PITCH - 1 + off}); "
                "widen or move it"
            )

    def _key_changed(self) -> None:
        self._set_key(self._key, self._scale)
        self._replan()

    def set_program(self, name: str, program: int) -> None:
        super().set_program(name, program)
        v = self._voice(name)
        v.program = self.model.resolve_program(int(program))

    def set_temperature(self, temperature: float) -> bool:
        """Sampling temperature of every voice from the next step on (an MQTT ``set_temperature``)."""
        super().set_temperature(temperature)
        self.temperature = float(temperature)
        return True

    # -- composing -------------------------------------------------------------------------------

    def compose(self, state: BrainState, start: float, end: float) -> list[Note]:
        """Notes with onsets in ``[start, end)`` (music seconds) for the brain state ``state``."""
        if not self._open_span(state, start, end):
            return []
        self._snapshots.append(
            _SpanStart(
                start,
                self._step,
                self._state.copy(),
                (self._global, self._global_pending),
                [v.snapshot() for v in self._voices],
            )
        )
        self._global_pending = self.music_latent(state, "")
        for v in self._voices:
            v.pending = self.music_latent(state, v.name)
        self.arbiter.forget_before(start)
        out: list[Note] = []
        while self._time(self._offset + self._step / STEPS_PER_BEAT) < end - 1e-9:
            out.extend(self._advance(start))
        return self._close_span(out, end)

    def _advance(self, start: float) -> list[Note]:
        """Decode one grid step for every voice (one ONNX call); return the admitted notes from ``start`` on."""
        k = self._step
        beat = self._offset + k / STEPS_PER_BEAT
        self._ensure_bar(beat)
        t = self._time(beat)
        pos = round((beat % BEATS_PER_BAR) * STEPS_PER_BEAT) % N_POS
        if pos == 0 or k == 0:  # a bar takes the newest latents
            self._global = self._global_pending
            for v in self._voices:
                v.latent = v.pending
        voices = self._voices
        n = len(voices)
        held = np.array([v.pitch if v.end > k else 0 for v in voices])
        audible = np.array([self._audible(v) for v in voices])
        pitched = np.array([not v.drum for v in voices])
        held_ev = np.where(held > 0, held - LOW_PITCH + 1, NONE)
        onehot = np.zeros((n, N_PITCH), np.float32)
        sounding = (held > 0) & audible & pitched
        onehot[np.flatnonzero(sounding), held[sounding] - LOW_PITCH] = 1.0
        others = onehot.sum(0, keepdims=True) - onehot
        plan = self.arbiter.plan_at(t)
        mode = self._mode if plan is None else (1 if plan.mode == "minor" else 0)
        latent = np.full((n, 2 * self.model.latent_dim), np.nan, np.float32)
        if self._global is not None:
            for i, v in enumerate(voices):
                latent[i, : self.model.latent_dim] = self._global
                latent[i, self.model.latent_dim :] = self._global if v.latent is None else v.latent
        reg = np.stack([register_features(v.inst.low - self._transpose, v.inst.high - self._transpose) for v in voices])
        logits, dur_logits, state, _, _ = self.model.step(
            np.array([v.prev for v in voices]),
            held_ev,
            others,
            np.full(n, pos),
            np.array([v.role for v in voices]),
            np.array([v.program for v in voices]),
            reg,
            np.full(n, mode),
            latent,
            self._state,
        )
        self._state = state
        order = sorted(
            range(n), key=lambda i: (_ORDER[ROLES[voices[i].role]], voices[i].inst.low + voices[i].inst.high)
        )
        decided: list[int] = []
        movers: list[tuple[int | None, int]] = []
        notes: list[Note] = []
        strong_pos = pos % STEPS_PER_BEAT == 0
        for i in order:
            v = voices[i]
            if held[i]:  # a line is monophonic: its note sounds on (the corpus' lines never start over a note)
                v.prev = NONE
                decided.append(i)
                continue
            known = [int(held[u]) for u in range(n) if u != i and u not in decided and sounding[u]]
            known += [voices[u].pitch for u in decided if voices[u].end > k and audible[u] and pitched[u]]
            row = logits[i].astype(np.float32).copy()
            extra = pair_bias(self.model.pair, v.role, np.asarray(known, int))
            extra += motion_bias(self.model.motion, v.last, movers)
            row[1:] += extra + (0.0 if v.drum else v.mask)
            if self.guarded and not v.drum:
                lean = self.arbiter.lean_bias(v.index, t)
                if lean is not None:
                    row += lean
            ev = sample(row, v.rng, self.temperature, self.top_p)
            if ev != NONE and self.guarded and not v.drum and audible[i]:
                mask = self.arbiter.veto(v.index, t, False, LOW_PITCH + ev - 1 + self._transpose)
                if mask is not None:
                    ev = sample(row + mask, v.rng, self.temperature, self.top_p)
            v.prev = ev
            decided.append(i)
            if ev == NONE:
                continue
            d = 1 + sample(dur_logits[i], v.rng, self.temperature, self.top_p)
            p = LOW_PITCH + ev - 1
            if v.last is None or v.last != p:
                movers.append((v.last, p))
            v.pitch, v.end, v.last = p, k + d, p
            if t >= start - 1e-9 and audible[i]:
                note = self._admit(v, t, beat, d / STEPS_PER_BEAT, p + self._transpose, strong_pos)
                if note is None:
                    v.end = k  # refused: silent from here (what the others hear)
                else:
                    notes.append(note)
                    steps = round(self._timeline.beat_at(t + note.duration) * STEPS_PER_BEAT - beat * STEPS_PER_BEAT)
                    v.end = k + max(1, min(d, steps))
        self._step += 1
        return notes

    def _admit(self, v: _EVoice, t: float, beat: float, beats: float, pitch: int, on_beat: bool) -> Note | None:
        presence = self.presence(v.name, t)
        if presence < SILENT_BELOW:  # its electrode group has no good channel
            return None
        spb = 60.0 / self.tempo
        dur = min(beats, MAX_NOTE_BEATS) * spb
        if v.drum:
            pitch, dur = drum_sound(pitch), min(dur, 0.25 * spb)
        plan = self.arbiter.plan_at(t)
        if (
            self.guarded
            and plan is not None
            and plan.density < 1.0
            and not on_beat
            and v.thin_rng.random() > plan.density
        ):
            return None  # a calmer plan plays sparser: off-beat notes are thinned
        got = self.arbiter.admit(v.index, t, dur, pitch, drum=v.drum, min_duration=0.5 * spb / STEPS_PER_BEAT)
        if got is None:
            return None
        lo, hi = v.inst.velocity
        accent = 0.75 if abs(beat % BEATS_PER_BAR) < 1e-9 else (0.6 if on_beat else 0.45)
        vel = int(np.clip(round(lo + accent * (hi - lo)), 1, 127))
        if presence < 1.0:
            vel = max(1, round(vel * presence))
        return Note(t, got, pitch, vel, v.inst.channel, v.name)


def tonic_pc(key: str) -> int:
    """Pitch class of a key name ('D', 'Bb', ...)."""
    return pitch_classes(key, "major")[0]


def learned_composer(
    instruments: dict[str, InstrumentSettings],
    music: MusicSettings,
    generator: GeneratorSettings,
    harmony: HarmonySettings,
    *,
    centres: SessionCentres | None = None,
) -> Composer[Any]:
    """The composer of learned mode for the model ``[generator] model`` names, by its kind: the ensemble
    model (the default, ``models/ensemble.onnx``) or the per-instrument REMI generator
    (``models/generator.onnx``, used when no ensemble model is there)."""
    from ..onnx_models import model_kind
    from .ensemble_model import DEFAULT_MODEL, KIND
    from .learned import LearnedComposer

    path = generator.model or (DEFAULT_MODEL if DEFAULT_MODEL.is_file() else None)
    if path is not None and model_kind(path) == KIND:
        gen = generator.model_copy(update={"model": path})
        return EnsembleLearnedComposer(instruments, music, gen, harmony, centres=centres)
    return LearnedComposer(instruments, music, generator, harmony, centres=centres)


def missing_learned_models(encoder_model: Path | None, generator_model: Path | None) -> list[Path]:
    """The shipped model files learned mode would open that are not there (empty: it can play).

    Only defaults count: a model path the user named and that is missing is an error where it is opened.
    """
    from ..brain.encoder import DEFAULT_MODEL as ENCODER
    from .ensemble_model import DEFAULT_MODEL as ENSEMBLE
    from .generator import DEFAULT_MODEL as GENERATOR

    missing = []
    if encoder_model is None and not ENCODER.is_file():
        missing.append(ENCODER)
    if generator_model is None and not (ENSEMBLE.is_file() or GENERATOR.is_file()):
        missing.append(ENSEMBLE)
    return missing
