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
emit drum tokens and drums only drum tokens. A global cap (``music.max_polyphony``) drops notes
when too many sound at once (voices take turns being first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..brain.latent_map import DEFAULT_MAP, LatentMap, Space, bandpower_features
from ..config import GeneratorSettings, InstrumentSettings, MusicSettings
from ..errors import ModelError
from ..events import BrainState, Note
from .generator import FORBID, GeneratorModel, Voice
from .scales import pitch_classes
from .tokens import BEATS_PER_BAR, DRUM_PROGRAM, Vocab

MAX_NOTE_BEATS = 8.0
_KICK, _SNARE, _HAT = 36, 38, 42
TOKENS_PER_BEAT_BUDGET = 64  # decoding budget per beat of span per voice (the corpus needs ~6)
_EPS = 1e-9


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
    return _KICK if pitch < 52 else (_SNARE if pitch < 67 else _HAT)


@dataclass(slots=True)
class _LVoice:
    name: str
    inst: InstrumentSettings
    voice: Voice
    latent: np.ndarray | None = None  # latent of the bar being decoded
    pending: np.ndarray | None = None  # latent for the next bar
    muted: bool = False
    drum_map: bool = False  # percussion through pitched tokens (see drum_sound)
    sounding: list[tuple[float, int]] = field(default_factory=list)  # (end time, pitch)


class LearnedComposer:
    """Brain states → notes from the generator, one voice per instrument (same contract as ClassicComposer).

    Parameters
    ----------
    instruments : group name → instrument.
    music : tempo, key, scale, seed, polyphony cap.
    generator : model paths and sampling settings.
    model, latent_map : already opened objects (tests, several composers sharing one session).
    """

    def __init__(
        self,
        instruments: dict[str, InstrumentSettings],
        music: MusicSettings,
        generator: GeneratorSettings | None = None,
        *,
        model: GeneratorModel | None = None,
        latent_map: LatentMap | None = None,
    ) -> None:
        gen = generator or GeneratorSettings()
        self._music = music
        self._gen = gen
        self.model = model or GeneratorModel(gen.model, threads=gen.threads, device=gen.device)
        if latent_map is None:
            path = Path(gen.latent_map) if gen.latent_map else DEFAULT_MAP
            latent_map = LatentMap.load(path) if (gen.latent_map or path.is_file()) else None
        self.latent_map = latent_map
        if latent_map is not None and latent_map.music_dim != self.model.latent_dim:
            raise ModelError(
                f"The latent map gives {latent_map.music_dim} values but the generator expects "
                f"{self.model.latent_dim}; fit the map again for this generator."
            )
        self._band_map: LatentMap | None = None
        self._spb = 60.0 / music.tempo
        pcs = pitch_classes(music.key, music.scale) if gen.scale_lock else None
        seed = music.seed & 0xFFFF_FFFF_FFFF_FFFF
        self._voices: list[_LVoice] = []
        for i, (name, inst) in enumerate(instruments.items()):
            program = DRUM_PROGRAM if inst.role == "percussion" else inst.program
            v = Voice(self.model, program, (seed, i), gen.temperature, gen.top_p)
            drums = self.model.resolve_program(DRUM_PROGRAM) == DRUM_PROGRAM
            v.base_bias = instrument_bias(self.model.vocab, inst, pcs, drums)
            drum_map = inst.role == "percussion" and not drums
            self._voices.append(_LVoice(name, inst, v, muted=inst.muted, drum_map=drum_map))
        self._origin: float | None = None
        self._turn = 0
        self.dropped = 0  #: notes dropped by the polyphony cap so far

    # -- what the rest of the service reads ------------------------------------------------------

    @property
    def tempo(self) -> float:
        return self._music.tempo

    @property
    def key(self) -> str:
        return self._music.key

    @property
    def scale(self) -> str:
        return self._music.scale

    @property
    def steps_per_beat(self) -> int:
        return self.model.vocab.positions_per_beat

    @property
    def grid(self) -> float:
        """Seconds between grid steps (sixteenths)."""
        return self._spb / self.steps_per_beat

    @property
    def instruments(self) -> dict[str, InstrumentSettings]:
        return {v.name: v.inst for v in self._voices}

    @property
    def muted(self) -> list[str]:
        return [v.name for v in self._voices if v.muted]

    @property
    def latents(self) -> dict[str, np.ndarray | None]:
        """The music latent each voice is playing now (telemetry)."""
        return {v.name: v.latent for v in self._voices}

    def set_muted(self, name: str, muted: bool) -> None:
        for v in self._voices:
            if v.name == name:
                v.muted = muted
                return
        raise KeyError(name)

    # -- brain side ------------------------------------------------------------------------------

    def music_latent(self, state: BrainState, name: str) -> np.ndarray | None:
        """Music latent (latent_dim,) for one instrument from a brain state, or None (calibrating)."""
        if state.calibrating:
            return None
        group = next((g for g in state.groups if g.name == name), None)
        vec = group.latent if group is not None and group.latent is not None else state.latent
        if vec is not None and self.latent_map is not None and vec.shape[-1] == self.latent_map.brain_dim:
            if np.all(np.isfinite(vec)):
                return self.latent_map(vec)
            return None
        feats = bandpower_features(group if group is not None else state)
        return self._bands(feats.shape[0])(feats)

    def _bands(self, k: int) -> LatentMap:
        """Band z-scores are already standardised: identity brain space onto the music axes."""
        if self._band_map is None or self._band_map.brain_dim != k:
            d = self.model.latent_dim
            music = self.latent_map.music if self.latent_map is not None else Space(np.zeros(d), np.eye(d), np.ones(d))
            brain = Space(np.zeros(k), np.eye(k), np.ones(k))
            self._band_map = LatentMap(brain, music, "whiten")
        return self._band_map

    # -- music side ------------------------------------------------------------------------------

    def compose(self, state: BrainState, start: float, end: float) -> list[Note]:
        """Notes with onsets in ``[start, end)`` (music seconds) for the brain state ``state``."""
        if end <= start:
            return []
        if self._origin is None:
            self._origin = start
        for v in self._voices:
            v.pending = self.music_latent(state, v.name)
        order = self._voices[self._turn % len(self._voices) :] + self._voices[: self._turn % len(self._voices)]
        self._turn += 1
        out: list[Note] = []
        budget = int(TOKENS_PER_BEAT_BUDGET * ((end - start) / self._spb + 1))
        for v in order:
            out.extend(self._decode(v, start, end, budget))
        out.sort(key=lambda n: (n.time, n.channel, n.pitch))
        return out

    def _time(self, beat: float) -> float:
        assert self._origin is not None
        return self._origin + beat * self._spb

    def _decode(self, v: _LVoice, start: float, end: float, budget: int) -> list[Note]:
        voice = v.voice
        notes: list[Note] = []
        if v.latent is None and voice.decoder.bar <= 0 and voice.steps == 0:
            v.latent = v.pending
        for _ in range(budget):
            if self._time(voice.decoder.beat) >= end - _EPS:
                break
            bar_before = voice.decoder.bar
            token_note = None
            voice.step(v.latent)
            if voice.decoder.bar != bar_before:
                v.latent = v.pending  # a new bar takes the newest latent
            if voice.decoder.notes:
                token_note = voice.decoder.notes.pop()
            if token_note is None:
                continue
            t = self._time(token_note.onset)
            if t < start - _EPS or t >= end - _EPS or v.muted:
                continue
            dur = min(token_note.duration, MAX_NOTE_BEATS) * self._spb
            note = self._admit(v, t, dur, token_note.pitch, token_note.velocity)
            if note is not None:
                notes.append(note)
        return notes

    def _admit(self, v: _LVoice, t: float, dur: float, pitch: int, velocity: int) -> Note | None:
        if v.drum_map:
            pitch, dur = drum_sound(pitch), min(dur, 0.25 * self._spb)
        for other in self._voices:
            other.sounding = [(e, p) for e, p in other.sounding if e > t + _EPS]
        v.sounding = [(e, p) for e, p in v.sounding if p != pitch]
        if sum(len(o.sounding) for o in self._voices) >= self._music.max_polyphony:
            self.dropped += 1
            return None
        lo, hi = v.inst.velocity
        vel = int(np.clip(round(lo + (velocity - 1) / 126 * (hi - lo)), 1, 127))
        v.sounding.append((t + dur, pitch))
        return Note(t, dur, pitch, vel, v.inst.channel, v.name)


def total_latent_beats(bars: int) -> float:
    """Beats in ``bars`` 4/4 bars."""
    return float(bars * BEATS_PER_BAR)
