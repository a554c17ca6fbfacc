"""Music metrics computed over whole pieces, as MusPy defines them (our own code, no muspy).

* ``pitch_class_entropy`` – Shannon entropy (bits) of the pitch-class histogram of all pitched notes.
* ``scale_consistency`` – the largest fraction of pitched notes inside one major or minor scale
  (24 candidates).
* ``groove_consistency`` – 1 − mean Hamming distance between the onset patterns of consecutive
  bars, divided by the bar resolution (onsets on a grid of ``resolution`` steps per beat, MusPy's
  default 24; 4/4 bars).
* ``empty_beat_rate`` – fraction of beats (up to the last note end) in which no note sounds.
* note lengths in beats: ``mean_duration``, ``max_duration``, ``long_note_rate`` (> 8 beats).
* ``dissonant_share`` – of the simultaneous pitch pairs, the share a listener hears as strongly
  dissonant (interval mod 12 in {1, 6, 11}: minor second / major seventh, tritone, also
  compound). At each onset the new note is paired with every pitched note sounding then, and
  notes starting together are paired once each. Random pitches give 0.25.
* ``max_polyphony`` – most notes (drums included) sounding at once.
* ``instruments_active`` – tracks (MIDI files) or channels (runtime notes) with at least one note.

Drum notes (channel 10 / drum tracks) count only for the rhythm metrics and polyphony. A note
retriggered on its own track and pitch ends there, as the scheduler and a synth end it, so
runtime notes and the file they were written to give the same numbers. ``evaluate_file``
reads MIDI with symusic (imported lazily; it ships with the ``[train]`` extra).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..events import Note
from ..music.constants import BEATS_PER_BAR, DRUM_CHANNEL

RESOLUTION = 24
LONG_BEATS = 8.0
DISSONANT = (1, 6, 11)  # intervals mod 12 heard as strongly dissonant
TIME_EPS = 1e-4  # beats; onsets this close are simultaneous, a note ending this close to t is over
_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)


@dataclass(frozen=True, slots=True)
class PieceNotes:
    """Notes of one piece in beats: arrays of shape (n,) — onset, duration (beats), pitch, is_drum,
    track (an int per instrument: the MIDI track, or the channel of runtime notes)."""

    onset: np.ndarray
    duration: np.ndarray
    pitch: np.ndarray
    drum: np.ndarray
    track: np.ndarray

    @classmethod
    def build(
        cls, onset: np.ndarray, duration: np.ndarray, pitch: np.ndarray, drum: np.ndarray, track: np.ndarray
    ) -> PieceNotes:
        """Arrays → notes sorted by (onset, track, pitch), each retriggered note cut where it retriggers."""
        onset = np.asarray(onset, float)
        duration = np.maximum(np.asarray(duration, float), 0.0)
        pitch = np.asarray(pitch, np.int64)
        drum = np.asarray(drum, bool)
        track = np.asarray(track, np.int64)
        order = np.lexsort((pitch, track, onset))
        onset, duration, pitch, drum, track = (a[order] for a in (onset, duration, pitch, drum, track))
        return cls(onset, end_retriggers(onset, duration, track, pitch), pitch, drum, track)


def end_retriggers(onset: np.ndarray, duration: np.ndarray, track: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Durations (n,) with each note cut at the next onset of the same (track, pitch), as a synth plays it.

    Any time unit; arrays of shape (n,) in any order. Notes starting together on one pitch and
    track: all but the last get length 0.
    """
    duration = np.asarray(duration, float).copy()
    if duration.size < 2:
        return duration
    onset = np.asarray(onset, float)
    same = np.lexsort((onset, pitch, track))
    o = onset[same]
    nxt = np.full(o.shape, np.inf)
    follows = (track[same][1:] == track[same][:-1]) & (pitch[same][1:] == pitch[same][:-1])
    nxt[:-1][follows] = o[1:][follows]
    duration[same] = np.minimum(duration[same], nxt - o)
    return duration


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
    dissonant_share: float
    max_polyphony: int
    instruments_active: int

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def from_notes(notes: Sequence[Note], tempo: float) -> PieceNotes:
    """Runtime notes (seconds) → beats at ``tempo`` BPM; channel 9 is drums, a channel is a track.

    A .mid written from these notes holds one track per channel, so both count the same instruments.
    """
    spb = 60.0 / tempo
    return PieceNotes.build(
        np.array([n.time / spb for n in notes], float),
        np.array([n.duration / spb for n in notes], float),
        np.array([n.pitch for n in notes], int),
        np.array([n.channel == DRUM_CHANNEL for n in notes], bool),
        np.array([n.channel for n in notes], int),
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
        score: Any = Score(str(path))  # ticks: exact, unlike float32 quarters
    except Exception as exc:
        raise DataError(f"Could not read {path} as MIDI ({exc}); pass a valid .mid file.") from None
    tpq = float(score.ticks_per_quarter) or 480.0
    on, du, pi, dr, tk = [], [], [], [], []
    for k, tr in enumerate(score.tracks):
        arr = tr.notes.numpy()
        on.append(arr["time"].astype(float) / tpq)
        du.append(arr["duration"].astype(float) / tpq)
        pi.append(arr["pitch"].astype(np.int64))
        dr.append(np.full(arr["time"].shape, bool(tr.is_drum)))
        tk.append(np.full(arr["time"].shape, k, np.int64))
    if not on:
        return PieceNotes.build(np.zeros(0), np.zeros(0), np.zeros(0, int), np.zeros(0, bool), np.zeros(0, int))
    return PieceNotes.build(*(np.concatenate(a) for a in (on, du, pi, dr, tk)))


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


def simultaneity(notes: PieceNotes, eps: float = TIME_EPS) -> tuple[int, int, int]:
    """(dissonant pairs, all pitched pairs, most notes sounding at once) over the piece.

    At each onset t the notes starting at t are paired with every pitched note still sounding
    (onset < t < end, ends within ``eps`` are over) and with each other, once per pair; drums
    take no part in pairs but count for polyphony. Notes of zero length sound at their onset only.
    """
    n = notes.onset.size
    if n == 0:
        return 0, 0, 0
    order = np.argsort(notes.onset, kind="stable")
    onset = notes.onset[order]
    end = onset + notes.duration[order]
    pitch = notes.pitch[order]
    drum = notes.drum[order]
    # groups of simultaneous onsets: a new group where the gap to the previous onset exceeds eps
    cuts = np.flatnonzero(np.diff(onset) > eps) + 1
    bounds = np.concatenate([[0], cuts, [n]])
    bad = total = poly = 0
    active: list[int] = []
    dis = np.zeros(12, bool)
    dis[list(DISSONANT)] = True
    for a, b in itertools.pairwise(bounds.tolist()):
        t = onset[a]
        active = [i for i in active if end[i] > t + eps]
        poly = max(poly, len(active) + (b - a))
        new = pitch[a:b][~drum[a:b]]
        if new.size:
            old = np.array([pitch[i] for i in active if not drum[i]], np.int64)
            if old.size:
                hit = dis[np.abs(new[:, None] - old[None, :]) % 12]
                bad += int(hit.sum())
                total += int(hit.size)
            if new.size > 1:
                iu = np.triu_indices(new.size, 1)
                hit = dis[np.abs(new[:, None] - new[None, :])[iu] % 12]
                bad += int(hit.sum())
                total += int(hit.size)
        active.extend(range(a, b))
    return bad, total, poly


def dissonant_share(notes: PieceNotes) -> float:
    """Share of simultaneous pitched pairs a semitone, tritone or major seventh apart (mod 12); NaN if none."""
    bad, total, _ = simultaneity(notes)
    return bad / total if total else float("nan")


def evaluate(notes: PieceNotes) -> Metrics:
    """All metrics of one piece."""
    pitched = notes.pitch[~notes.drum]
    dur = notes.duration[~notes.drum]
    bad, total, poly = simultaneity(notes)
    return Metrics(
        n_notes=int(notes.onset.size),
        pitch_class_entropy=pitch_class_entropy(pitched),
        scale_consistency=scale_consistency(pitched),
        groove_consistency=groove_consistency(notes.onset),
        empty_beat_rate=empty_beat_rate(notes.onset, notes.duration),
        mean_duration=float(dur.mean()) if dur.size else float("nan"),
        max_duration=float(dur.max()) if dur.size else float("nan"),
        long_note_rate=float((dur > LONG_BEATS).mean()) if dur.size else float("nan"),
        dissonant_share=bad / total if total else float("nan"),
        max_polyphony=poly,
        instruments_active=int(np.unique(notes.track).size),
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
