"""Learned mode: the note generator composes, the brain steers it through the bar latent.

One generator :class:`~.generator.Voice` per instrument (its program; drums for percussion),
decoding REMI tokens incrementally. Programs the model saw too little of are conditioned as the
program it saw most (the committed model: piano, 99.8 % of the corpus); the instrument still sounds
as its own program. Without drum data, percussion plays pitched tokens mapped to kick / snare /
hi-hat by register (:func:`drum_sound`). Per window, each instrument's brain vector (its group's
learned latent, else the global latent, else the group's band-power z-scores) goes through the
brain → music :class:`~brainharmonic_rt.brain.latent_map.LatentMap`; the result becomes that
voice's latent from its next bar on (a bar keeps one latent, as in training).

Music time: beat ``b`` of a voice sounds at ``origin + b · 60 / tempo`` where ``origin`` is the
start of the first composed span. :meth:`compose` decodes each voice until its stream has moved
past ``end`` and returns the notes with onsets in ``[start, end)``.

Constraints are logit biases, not post-hoc edits: pitches outside the instrument's register (and,
with ``generator.scale_lock``, outside the key/scale) are forbidden, pitched instruments cannot
emit drum tokens and drums only drum tokens. Every pitch the model samples is put to the harmony
:class:`~.arbiter.Arbiter` (chord tones on beats 1 and 3, scale tones elsewhere, nothing that
clashes with a sounding note, room under the cap); a refused pitch is sampled again from the
logits plus the arbiter's logit mask, which draws from the same distribution as masking every
step but builds the mask only when needed (see :meth:`~.generator.Voice.step`). The shared
:class:`~.harmony.HarmonicPlan` leans each voice's register bar by bar; admitted notes pass the
arbiter's clash rule and cap. The plan's tempo and density apply bar by bar (calm: off-beat notes
thinned).
"""

from __future__ import annotations

import collections
import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..brain.latent_map import DEFAULT_MAP, LatentMap, SessionCentres
from ..config import GeneratorSettings, HarmonySettings, InstrumentSettings, MusicSettings
from ..errors import ModelError
from ..events import BrainState, Note
from .composer import SILENT_BELOW, AheadDecoding, Composer
from .constants import FORBID, HAT, KICK, SNARE
from .generator import GeneratorModel, Voice, VoiceState, step_voices
from .scales import pitch_classes
from .steering import BrainSteering
from .tokens import BEATS_PER_BAR, DRUM_PROGRAM, Vocab

MAX_NOTE_BEATS = 8.0
#: Notes one voice may start at one onset, by role: a piano-trained model voices chords everywhere, an
#: ensemble wants single lines from melody and bass (the grammar bias forbids pitches beyond this).
ROLE_CHORD = {"melody": 1, "bass": 1, "texture": 2, "harmony": 4, "percussion": 3}
#: Grid (in sixteenths) on which a role may start notes (as in classic mode: pads on beats, lines and arpeggios
#: in eighths at most); percussion may use every sixteenth.
ROLE_GRID = {"harmony": 4, "bass": 2, "melody": 2, "texture": 2}
TILT = 6.0  # logits across a register per unit of the plan's register shift
TOKENS_PER_BEAT_BUDGET = 64  # decoding budget per beat of span per voice (the corpus needs ~6)
#: Span starts kept for rewinds: 16 hops (4 s at the default 0.25 s) reach back past any cut (~now + 10 ms)
KEPT_SNAPSHOTS = 16


def instrument_bias(
    vocab: Vocab, inst: InstrumentSettings, scale_pcs: tuple[int, ...] | None, drums: bool = True
) -> np.ndarray:
    """Fixed logit bias (vocab,) for one instrument: register, drums vs pitched, optional scale.

    ``drums``: the model can play drum tokens; when it cannot, a percussion instrument plays
    unrestricted pitched tokens that :func:`drum_sound` turns into drum sounds.
    """
    bias = np.zeros(len(vocab), np.float32)
    pitch = vocab.ids_of("pitch")
    drum = vocab.ids_of("drum")
    if inst.role == "percussion":
        bias[pitch if drums else drum] = FORBID
        return bias
    bias[drum] = FORBID
    step = ROLE_GRID.get(inst.role, 1)
    if step > 1:  # roles shape rhythm: pads change on beats, the bass moves in eighths at most
        pos = vocab.ids_of("position")
        bias[pos[vocab.value[pos].astype(int) % step != 0]] = FORBID
    vals = vocab.value[pitch].astype(int)
    bad = (vals < inst.low) | (vals > inst.high)
    if scale_pcs is not None:
        bad |= ~np.isin(vals % 12, scale_pcs)
    if bad.all():
        raise ModelError(
            f"Instrument register {inst.low}..{inst.high} holds no pitch the generator can play in this scale; "
            "widen low/high."
        )
    bias[pitch[bad]] = FORBID
    return bias


def drum_sound(pitch: int) -> int:
    """GM drum for a pitched note (models without drum data): low → kick, middle → snare, high → closed hat."""
    return KICK if pitch < 52 else (SNARE if pitch < 67 else HAT)


@dataclass(slots=True)
class _LVoice:
    name: str
    inst: InstrumentSettings
    voice: Voice
    index: int
    thin_rng: np.random.Generator  # the plan's density thinning (apart from the voice's sampling RNG)
    latent: np.ndarray | None = None  # latent of the bar being decoded
    pending: np.ndarray | None = None  # latent for the next bar
    muted: bool = False
    drum_map: bool = False  # percussion through pitched tokens (see drum_sound)
    fixed_bias: np.ndarray | None = None  # register / drums / scale lock, before the plan's lean
    offset: float = 0.0  # music beat of the voice's own beat 0 (a composer taking over mid-session)
    veto: Callable[[int], np.ndarray | None] | None = None  # the arbiter's check of a sampled pitch


@dataclass(frozen=True, slots=True)
class _VoiceSnapshot:
    """One voice at a span start: its decoding state and the composer's per-voice state."""

    voice: VoiceState
    latent: np.ndarray | None
    pending: np.ndarray | None
    thin_rng: Mapping[str, Any]

    @classmethod
    def of(cls, v: _LVoice) -> _VoiceSnapshot:
        return cls(v.voice.snapshot(), v.latent, v.pending, copy.deepcopy(v.thin_rng.bit_generator.state))


@dataclass(frozen=True, slots=True)
class _SpanStart:
    start: float  #: music time (s) the span began at
    voices: list[_VoiceSnapshot]


class LearnedComposer(BrainSteering, AheadDecoding, Composer[_LVoice]):
    """Brain states → notes from the generator, one voice per instrument (same contract as ClassicComposer).

    Parameters
    ----------
    instruments : group name → instrument.
    music : tempo, key, scale, seed, polyphony cap.
    generator : model paths and sampling settings.
    harmony : the shared plan's and the arbiter's settings.
    model, latent_map : already opened objects (tests, several composers sharing one session).
    centres : the session's latent centres (the pipeline's, so they outlive a mode switch).
    """

    def __init__(
        self,
        instruments: dict[str, InstrumentSettings],
        music: MusicSettings,
        generator: GeneratorSettings | None = None,
        harmony: HarmonySettings | None = None,
        *,
        model: GeneratorModel | None = None,
        latent_map: LatentMap | None = None,
        centres: SessionCentres | None = None,
    ) -> None:
        super().__init__(instruments, music, harmony)
        gen = generator or GeneratorSettings()
        self._music = music
        self._gen = gen
        self.model = model or GeneratorModel(gen.model, threads=gen.threads, device=gen.device)
        path = Path(gen.latent_map) if gen.latent_map else None
        self._init_steering(latent_map, path, DEFAULT_MAP, self.model.latent_dim, centres)
        #: the engine passes its centres and feeds them with every state in any mode, else compose feeds them
        self._feeds_centres = centres is None
        vocab = self.model.vocab
        pitch_ids = vocab.ids_of("pitch")
        self.arbiter.set_vocab(len(vocab), pitch_ids, vocab.value[pitch_ids].astype(int), TILT)
        self._is_pitch = vocab.kind == vocab.KINDS.index("pitch")
        self._token_pitch = vocab.value.astype(int)
        self._drums = self.model.resolve_program(DRUM_PROGRAM) == DRUM_PROGRAM
        seed = music.seed & 0xFFFF_FFFF_FFFF_FFFF
        self._voices: list[_LVoice] = []
        for i, (name, inst) in enumerate(instruments.items()):
            program = DRUM_PROGRAM if inst.role == "percussion" else inst.program
            v = Voice(self.model, program, (seed, i), gen.temperature, gen.top_p, groove=gen.groove)
            v.max_chord = ROLE_CHORD[inst.role]
            drum_map = inst.role == "percussion" and not self._drums
            rng = np.random.default_rng([seed, 7_000_003, i])
            self._voices.append(_LVoice(name, inst, v, i, rng, muted=inst.muted, drum_map=drum_map))
        for lv in self._voices:
            lv.veto = self._veto(lv)  # once: the check reads the voice's state when called
        self._set_biases()
        self._started = False
        self._bar = -1  # last bar the plan started
        self._frontier: float | None = None  # end of the last composed span
        self._turn = 0
        self.vetoed = 0  #: sampled pitches the arbiter refused (sampled again from its mask)
        self._snapshots: collections.deque[_SpanStart] = collections.deque(maxlen=KEPT_SNAPSHOTS)

    def _set_biases(self) -> None:
        pcs = pitch_classes(self._key, self._scale) if self._gen.scale_lock and self.guarded else None
        for v in self._voices:
            v.fixed_bias = instrument_bias(self.model.vocab, v.inst, pcs, self._drums)
            v.voice.base_bias = v.fixed_bias

    # -- what the rest of the service reads ------------------------------------------------------

    @property
    def steps_per_beat(self) -> int:
        return self.model.vocab.positions_per_beat

    @property
    def latents(self) -> dict[str, np.ndarray | None]:
        """The music latent each voice is playing now (telemetry)."""
        return {v.name: v.latent for v in self._voices}

    def _adopted(self, other: Composer[Any], frontier: float | None) -> None:
        """The voices start at the first bar line after what ``other`` composed."""
        vocab = self.model.vocab
        pitch_ids = vocab.ids_of("pitch")
        self.arbiter.set_vocab(len(vocab), pitch_ids, vocab.value[pitch_ids].astype(int), TILT)
        self._frontier = frontier
        self._started = True
        beat = self._timeline.beat_at(frontier) if frontier is not None else 0.0
        first_bar = int(np.ceil(beat / BEATS_PER_BAR - 1e-9))
        self._bar = first_bar - 1
        for v in self._voices:
            v.offset = float(first_bar * BEATS_PER_BAR)
        self._snapshots.clear()

    # -- live changes ------------------------------------------------------------------------------
    #
    # Each composed span starts with a snapshot of every voice (its small decoding state); a live change
    # at ``at`` restores the latest snapshot at or before ``at`` and :meth:`compose` decodes forward again,
    # keeping only the notes from ``at`` on, so the change is heard within the cut, as in classic mode.

    def rewind(self, t: float) -> None:
        """Forget notes composed with onsets at or after ``t``: the voices go back to the last span start at
        or before ``t`` (kept for :data:`KEPT_SNAPSHOTS` spans) and decode again from there."""
        snap = self._span_before(t)
        if snap is None:
            return  # nothing that old is kept: the change applies from the composed frontier
        for v, saved in zip(self._voices, snap.voices, strict=True):
            v.voice.restore(saved.voice)
            v.latent, v.pending = saved.latent, saved.pending
            v.thin_rng.bit_generator.state = copy.deepcopy(saved.thin_rng)

    def _check_instrument(self, inst: InstrumentSettings, key: str, scale: str) -> None:
        super()._check_instrument(inst, key, scale)
        instrument_bias(self.model.vocab, inst, pitch_classes(key, scale) if self._gen.scale_lock else None)

    def _key_changed(self) -> None:
        self._set_biases()
        self._replan()

    def set_temperature(self, temperature: float) -> bool:
        """Sampling temperature of every voice from the next token on (an MQTT ``set_temperature``)."""
        super().set_temperature(temperature)
        for v in self._voices:
            v.voice.temperature = float(temperature)
        return True

    # -- music side ------------------------------------------------------------------------------

    def compose(self, state: BrainState, start: float, end: float) -> list[Note]:
        """Notes with onsets in ``[start, end)`` (music seconds) for the brain state ``state``."""
        if not self._open_span(state, start, end):
            return []
        for v in self._voices:
            v.pending = self.music_latent(state, v.name)
        n = len(self._voices)
        order = self._voices[self._turn % n :] + self._voices[: self._turn % n]
        self._turn += 1
        self.arbiter.forget_before(start)
        self._snapshots.append(_SpanStart(start, [_VoiceSnapshot.of(v) for v in self._voices]))
        out: list[Note] = []
        budget = int(TOKENS_PER_BEAT_BUDGET * ((end - start) / (60.0 / self.tempo) + 1))
        out.extend(self._decode(order, start, end, budget))
        return self._close_span(out, end)

    def _veto(self, v: _LVoice) -> Callable[[int], np.ndarray | None] | None:
        """The arbiter's say on a sampled pitch: None (allowed) or its full mask to sample again with."""
        if v.inst.role == "percussion" or not self.guarded:
            return None  # arbiter off: only the registers (fixed bias) and the cap (admission) remain

        def check(token: int) -> np.ndarray | None:
            if not self._is_pitch[token]:
                return None
            beat = v.offset + v.voice.decoder.beat
            t = self._time(beat)
            strong = abs(beat - round(beat)) < 1e-9 and round(beat) % 2 == 0
            bias = self.arbiter.veto(v.index, t, strong, int(self._token_pitch[token]))
            self.vetoed += bias is not None
            return bias

        return check

    def _lean(self, v: _LVoice) -> None:
        """At each of its bars, a voice takes the plan's register lean into its fixed bias."""
        if v.inst.role == "percussion" or not self.guarded:
            return
        lean = self.arbiter.lean_bias(v.index, self._time(v.offset + v.voice.decoder.beat))
        v.voice.base_bias = v.fixed_bias if lean is None or v.fixed_bias is None else v.fixed_bias + lean

    def _decode(self, order: list[_LVoice], start: float, end: float, budget: int) -> list[Note]:
        """Decode every voice until it has moved past ``end``, all voices in one ONNX call per token step."""
        notes: list[Note] = []
        left = dict.fromkeys(range(len(self._voices)), budget)
        live = order
        while live:
            batch = []
            for v in live:
                beat = v.offset + v.voice.decoder.beat
                self._ensure_bar(beat)
                if left[v.index] > 0 and self._time(beat) < end - 1e-9:
                    if v.latent is None and v.voice.decoder.bar <= 0 and v.voice.steps == 0:
                        v.latent = v.pending
                    batch.append(v)
            live = batch
            if not batch:
                break
            logits, state = step_voices([v.voice for v in batch], [v.latent for v in batch])
            for i, v in enumerate(batch):
                left[v.index] -= 1
                voice = v.voice
                bar_before = voice.decoder.bar
                voice.advance(logits[i], state[:, i : i + 1, :], veto=v.veto)
                if voice.decoder.bar != bar_before:
                    v.latent = v.pending  # a new bar takes the newest latent
                    self._lean(v)
                if not voice.decoder.notes:
                    continue
                token_note = voice.decoder.notes.pop()
                onset = v.offset + token_note.onset
                self._ensure_bar(onset)
                t = self._time(onset)
                if t < start - 1e-9 or t >= end - 1e-9 or not self._audible(v):
                    continue
                note = self._admit(v, t, onset, token_note.duration, token_note.pitch, token_note.velocity)
                if note is not None:
                    notes.append(note)
        return notes

    def _admit(self, v: _LVoice, t: float, beat: float, beats: float, pitch: int, velocity: int) -> Note | None:
        presence = self.presence(v.name, t)
        if presence < SILENT_BELOW:  # its electrode group has no good channel
            return None
        spb = 60.0 / self.tempo
        dur = min(beats, MAX_NOTE_BEATS) * spb
        drum = v.inst.role == "percussion"
        if v.drum_map:
            pitch, dur = drum_sound(pitch), min(dur, 0.25 * spb)
        plan = self.arbiter.plan_at(t)
        on_beat = abs(beat - round(beat)) < 1e-9
        if (
            self.guarded
            and plan is not None
            and plan.density < 1.0
            and not on_beat
            and v.thin_rng.random() > plan.density
        ):
            return None  # a calmer plan plays sparser: off-beat notes are thinned
        got = self.arbiter.admit(v.index, t, dur, pitch, drum=drum, min_duration=0.25 * spb / self.steps_per_beat)
        if got is None:
            return None
        lo, hi = v.inst.velocity
        vel = int(np.clip(round(lo + (velocity - 1) / 126 * (hi - lo)), 1, 127))
        if presence < 1.0:
            vel = max(1, round(vel * presence))
        return Note(t, got, pitch, vel, v.inst.channel, v.name)
