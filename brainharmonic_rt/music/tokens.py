"""The MIDI token vocabulary, shared by training (which tokenises the corpus) and the runtime.

Tokenisation is MidiTok REMI with one token stream per track (``one_token_stream_for_programs=
False``), so every instrument of a piece is its own sequence and the generator runs one voice per
instrument. A bar reads ``Bar Position_p Pitch_n Velocity_v Duration_d [Pitch Velocity Duration]...
Position_p ...``; positions are sixteenths (0..15 in a 4/4 bar), durations MidiTok's
``beats.steps.resolution`` strings up to 8 beats.

Why two halves: MidiTok imports torch, and the runtime must not, so :func:`build_tokenizer` and
:func:`tokenize_file` (training only) import it lazily, while :class:`Vocab` and
:class:`NoteDecoder` read the token strings from the saved tokenizer file (or the model's
metadata) with the standard library alone.

Programs: General MIDI 0..127, and :data:`DRUM_PROGRAM` (128) for drum tracks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, ModelError
from .constants import BEATS_PER_BAR

DRUM_PROGRAM = 128
N_PROGRAMS = 129
DEFAULT_TOKENIZER = Path(__file__).resolve().parents[2] / "models" / "generator_tokenizer.json"

#: MidiTok settings: the one place they live (training writes them, the runtime reads the result).
TOKENIZER_PARAMS: dict[str, Any] = {
    "pitch_range": (21, 109),
    "beat_res": {(0, 4): 4, (4, 8): 2},
    "num_velocities": 8,
    "special_tokens": ["PAD", "BOS", "EOS"],
    "use_programs": False,
    "one_token_stream_for_programs": False,
    "use_chords": False,
    "use_rests": False,
    "use_tempos": False,
    "use_time_signatures": False,
    "use_sustain_pedals": False,
    "use_pitch_bends": False,
    "use_control_changes": False,
    "remove_duplicated_notes": True,
}


def build_tokenizer(path: str | Path | None = None) -> Any:
    """A MidiTok REMI tokenizer (training only: imports miditok, which imports torch).

    ``path``: a saved tokenizer file to load; none = a new one from :data:`TOKENIZER_PARAMS`.
    """
    from miditok import REMI, TokenizerConfig

    if path is not None:
        return REMI(params=Path(path))
    return REMI(TokenizerConfig(**TOKENIZER_PARAMS))


def save_tokenizer(tokenizer: Any, path: str | Path) -> None:
    """Save MidiTok's own file plus the vocabulary in id order (so :class:`Vocab` needs no miditok)."""
    path = Path(path)
    tokenizer.save(path)
    data = json.loads(path.read_text())
    inv = {i: t for t, i in tokenizer.vocab.items()}
    data["vocab_list"] = [inv[i] for i in range(len(inv))]
    path.write_text(json.dumps(data, indent=1))


@dataclass(frozen=True, slots=True)
class Track:
    """One tokenised track: token ids of shape (n_tokens,), int16; its program (0..128)."""

    ids: np.ndarray
    program: int


def tokenize_file(tokenizer: Any, path: str | Path) -> list[Track]:
    """Tokenise one MIDI file into one :class:`Track` per non-empty track (training only)."""
    from symusic import Score

    try:
        score: Any = Score(str(path))
    except Exception as exc:
        raise DataError(f"Could not parse MIDI file {path} ({exc}); remove it from the corpus or fix it.") from None
    tracks = [t for t in score.tracks if len(t.notes) > 0]
    if not tracks:
        return []
    score.tracks = tracks
    seqs = tokenizer.encode(score)
    out = []
    for tr, seq in zip(tracks, seqs, strict=True):
        ids = np.asarray(seq.ids, dtype=np.int16)
        if ids.size:
            out.append(Track(ids, DRUM_PROGRAM if tr.is_drum else int(tr.program)))
    return out


def _duration_beats(text: str) -> float:
    beats, steps, res = (int(x) for x in text.split("."))
    return beats + steps / res


class Vocab:
    """Token strings and what they mean, without miditok.

    Attributes are arrays of shape (vocab_size,): ``kind`` (small ints, see ``KINDS``), ``value``
    (pitch, velocity, sixteenth position or duration in beats, else 0).
    """

    KINDS = ("special", "bar", "position", "pitch", "velocity", "duration", "drum", "other")

    def __init__(self, tokens: list[str]) -> None:
        if not tokens:
            raise ModelError("The token vocabulary is empty; export the generator again.")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        n = len(self.tokens)
        self.kind = np.zeros(n, dtype=np.int8)
        self.value = np.zeros(n, dtype=np.float64)
        for i, tok in enumerate(self.tokens):
            name, _, val = tok.partition("_")
            k = {
                "Bar": "bar",
                "Position": "position",
                "Pitch": "pitch",
                "Velocity": "velocity",
                "Duration": "duration",
                "PitchDrum": "drum",
            }.get(name, "special" if val == "None" else "other")
            self.kind[i] = self.KINDS.index(k)
            if k in ("position", "pitch", "velocity", "drum"):
                self.value[i] = float(val)
            elif k == "duration":
                self.value[i] = _duration_beats(val)
        self.bar = self.index.get("Bar_None", -1)
        self.bos = self.index.get("BOS_None", -1)
        self.pad = self.index.get("PAD_None", 0)
        self.positions_per_beat = 4

    def __len__(self) -> int:
        return len(self.tokens)

    def ids_of(self, kind: str) -> np.ndarray:
        """Token ids of one kind (e.g. ``"pitch"``), int64."""
        return np.flatnonzero(self.kind == self.KINDS.index(kind))

    def pitch_ids(self, low: int = 0, high: int = 127) -> np.ndarray:
        """Pitch (and drum pitch) token ids with a value in [low, high]."""
        mask = np.isin(self.kind, [self.KINDS.index("pitch"), self.KINDS.index("drum")])
        return np.flatnonzero(mask & (self.value >= low) & (self.value <= high))

    @classmethod
    def from_file(cls, path: str | Path = DEFAULT_TOKENIZER) -> Vocab:
        """Read a tokenizer file written by :func:`save_tokenizer`."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"Tokenizer file {path} does not exist; train the generator or restore models/.")
        try:
            data = json.loads(path.read_text())
            return cls(list(data["vocab_list"]))
        except (ValueError, KeyError) as exc:
            raise ModelError(
                f"Tokenizer file {path} is not a brainharmonic tokenizer ({exc}); write it with save_tokenizer."
            ) from None


@dataclass(frozen=True, slots=True)
class TokenNote:
    """A decoded note in beats from the start of the stream (4 beats per bar)."""

    onset: float
    duration: float
    pitch: int
    velocity: int


@dataclass(slots=True)
class NoteDecoder:
    """Turns REMI tokens into notes one token at a time (the generator's output side).

    ``bar`` counts Bar tokens seen (the first Bar opens bar 0); a ``Pitch``/``Velocity``/
    ``Duration`` triple at the current position makes a note. Out-of-grammar tokens are skipped.
    """

    vocab: Vocab
    bar: int = -1
    position: int = 0
    seen_position: int = -1  #: last Position token of this bar (-1 = none yet)
    bar_tokens: int = 0  #: tokens since the last Bar
    notes_here: int = 0  #: notes completed at the current position
    onsets: int = 0  #: positions of this bar where a note started, as bits (1 << position)
    prev_onsets: int = 0  #: the same for the previous bar (what a groove bias repeats)
    _pitch: int | None = None
    _velocity: int | None = None
    notes: list[TokenNote] = field(default_factory=list)

    @property
    def beat(self) -> float:
        """Beat position of the decoder (start of the current bar + position)."""
        return max(self.bar, 0) * BEATS_PER_BAR + self.position / self.vocab.positions_per_beat

    def push(self, token: int) -> TokenNote | None:
        """Consume one token id; return the note it completes, if any."""
        kind = self.vocab.KINDS[int(self.vocab.kind[token])]
        val = self.vocab.value[token]
        self.bar_tokens += 1
        if kind == "bar":
            self.bar += 1
            self.position = 0
            self.seen_position = -1
            self.prev_onsets, self.onsets = self.onsets, 0
            self.bar_tokens = 0
            self.notes_here = 0
            self._pitch = self._velocity = None
        elif kind == "position":
            self.position = self.seen_position = int(val)
            self.notes_here = 0
            self._pitch = self._velocity = None
        elif kind in ("pitch", "drum"):
            self._pitch, self._velocity = int(val), None
        elif kind == "velocity" and self._pitch is not None:
            self._velocity = int(val)
        elif kind == "duration" and self._pitch is not None and self._velocity is not None:
            note = TokenNote(self.beat, float(val), self._pitch, max(1, min(127, self._velocity)))
            self._pitch = self._velocity = None
            self.notes_here += 1
            self.onsets |= 1 << self.position
            self.notes.append(note)
            return note
        return None


def bar_index(ids: np.ndarray, bar_token: int) -> np.ndarray:
    """Bar number of every token (a Bar token belongs to the bar it opens), shape (n,), int64.

    Tokens before the first Bar get bar 0.
    """
    return np.maximum(np.cumsum(ids == bar_token) - 1, 0).astype(np.int64)
