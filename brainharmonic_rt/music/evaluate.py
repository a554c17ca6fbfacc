"""Music metrics computed over whole pieces, as MusPy defines them (our own code, no muspy).

* ``pitch_class_entropy`` – Shannon entropy (bits) of the pitch-class histogram of all pitched notes.
* ``scale_consistency`` – the largest fraction of pitched notes inside one major or minor scale
  (24 candidates).
* ``groove_consistency`` – 1 − mean Hamming distance between the onset patterns of consecutive
  bars, divided by the bar resolution (onsets on a grid of ``resolution`` steps per beat, MusPy's
  default 24; 4/4 bars).
* ``empty_beat_rate`` – fraction of beats (up to the last note end) in which no note sounds.
* note lengths in beats: ``mean_duration``, ``max_duration``, ``long_note_rate`` (> 8 beats).

Drum notes (channel 10 / drum tracks) count only for the rhythm metrics. ``evaluate_file`` reads
MIDI with symusic (imported lazily; it ships with the ``[train]`` extra).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..events import Note

BEATS_PER_BAR = 4
RESOLUTION = 24
LONG_BEATS = 8.0
_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)


@dataclass(frozen=True, slots=True)
class PieceNotes:
    """Notes of one piece in beats: arrays of shape (n,) — onset, duration (beats), pitch, is_drum."""

    onset: np.ndarray
    duration: np.ndarray
    pitch: np.ndarray
    drum: np.ndarray


@dataclass(frozen=True, slots=True)
class Metrics:
    n_notes: int
    pitch_class_entropy: float
    scale_consistency: float
    groove_consistency: float
    empty_beat_rate: float
    mean_duration: float
    max_duration: float
    long_note_rate: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def from_notes(notes: Sequence[Note], tempo: float) -> PieceNotes:
    """Runtime notes (seconds) → beats at ``tempo`` BPM; channel 9 is drums."""
    spb = 60.0 / tempo
    return PieceNotes(
        np.array([n.time / spb for n in notes], float),
        np.array([n.duration / spb for n in notes], float),
        np.array([n.pitch for n in notes], int),
        np.array([n.channel == 9 for n in notes], bool),
    )


def read_midi(path: str | Path) -> PieceNotes:
    """All notes of a MIDI file in beats (quarter notes)."""
    try:
        from symusic import Score
    except ImportError:
        raise DataError("Reading MIDI for metrics needs symusic; install the [train] extra.") from None
    path = Path(path)
    if not path.is_file():
        raise DataError(f"MIDI file {path} does not exist; pass existing .mid files.")
    try:
        score: Any = Score(str(path)).to("quarter")  # type: ignore[attr-defined]
    except Exception as exc:
        raise DataError(f"Could not read {path} as MIDI ({exc}); pass a valid .mid file.") from None
    on, du, pi, dr = [], [], [], []
    for tr in score.tracks:
        arr = tr.notes.numpy()
        on.append(arr["time"])
        du.append(arr["duration"])
        pi.append(arr["pitch"])
        dr.append(np.full(arr["time"].shape, bool(tr.is_drum)))
    if not on:
        return PieceNotes(np.zeros(0), np.zeros(0), np.zeros(0, int), np.zeros(0, bool))
    return PieceNotes(
        np.concatenate(on).astype(float),
        np.concatenate(du).astype(float),
        np.concatenate(pi).astype(int),
        np.concatenate(dr),
    )


def pitch_class_entropy(pitch: np.ndarray) -> float:
    if pitch.size == 0:
        return float("nan")
    h = np.bincount(pitch % 12, minlength=12) / pitch.size
    h = h[h > 0]
    return float(-(h * np.log2(h)).sum())


def scale_consistency(pitch: np.ndarray) -> float:
    if pitch.size == 0:
        return float("nan")
    pc = pitch % 12
    best = 0.0
    for scale in (_MAJOR, _MINOR):
        for root in range(12):
            best = max(best, float(np.isin(pc, [(root + s) % 12 for s in scale]).mean()))
    return best


def groove_consistency(onset: np.ndarray, resolution: int = RESOLUTION) -> float:
    if onset.size == 0:
        return float("nan")
    bar_len = BEATS_PER_BAR * resolution
    steps = np.round(onset * resolution).astype(np.int64)
    n_bars = int(steps.max() // bar_len) + 1
    if n_bars < 2:
        return 1.0
    grid = np.zeros((n_bars, bar_len), bool)
    grid[steps // bar_len, steps % bar_len] = True
    ham = (grid[1:] != grid[:-1]).sum(axis=1)
    return float(1.0 - ham.mean() / bar_len)


def empty_beat_rate(onset: np.ndarray, duration: np.ndarray) -> float:
    if onset.size == 0:
        return float("nan")
    n_beats = int(np.ceil((onset + duration).max() - 1e-9))
    if n_beats <= 0:
        return 0.0
    sounding = np.zeros(n_beats, bool)
    for o, d in zip(onset, duration, strict=True):
        a = int(np.floor(o + 1e-9))
        b = int(np.ceil(o + max(d, 1e-6) - 1e-9))
        sounding[a : max(b, a + 1)] = True
    return float(1.0 - sounding.mean())


def evaluate(notes: PieceNotes) -> Metrics:
    """All metrics of one piece."""
    pitched = notes.pitch[~notes.drum]
    dur = notes.duration[~notes.drum]
    return Metrics(
        n_notes=int(notes.onset.size),
        pitch_class_entropy=pitch_class_entropy(pitched),
        scale_consistency=scale_consistency(pitched),
        groove_consistency=groove_consistency(notes.onset),
        empty_beat_rate=empty_beat_rate(notes.onset, notes.duration),
        mean_duration=float(dur.mean()) if dur.size else float("nan"),
        max_duration=float(dur.max()) if dur.size else float("nan"),
        long_note_rate=float((dur > LONG_BEATS).mean()) if dur.size else float("nan"),
    )


def evaluate_file(path: str | Path) -> Metrics:
    return evaluate(read_midi(path))


def summarize(rows: Iterable[Metrics]) -> dict[str, dict[str, float]]:
    """Mean and 10th/50th/90th percentiles of each metric over pieces (NaNs skipped)."""
    rows = list(rows)
    out: dict[str, dict[str, float]] = {}
    if not rows:
        return out
    for key in rows[0].as_dict():
        v = np.array([r.as_dict()[key] for r in rows], float)
        v = v[np.isfinite(v)]
        if v.size:
            p10, p50, p90 = np.percentile(v, [10, 50, 90])
            out[key] = {"mean": float(v.mean()), "p10": float(p10), "p50": float(p50), "p90": float(p90)}
    return out
