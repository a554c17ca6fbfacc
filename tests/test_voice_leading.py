"""Voice-leading and corpus-likeness metrics on hand-made examples (counts worked out by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from brainharmonic_rt.evaluation.likeness import features, likeness, overlap, segments
from brainharmonic_rt.evaluation.music_metrics import PieceNotes
from brainharmonic_rt.evaluation.voice_leading import top_lines, voice_leading


def piece(*voices: list[tuple[float, float, int]]) -> PieceNotes:
    """Voices as lists of (onset, duration, pitch) in beats; track = voice index."""
    rows = [(o, d, p, k) for k, v in enumerate(voices) for o, d, p in v]
    a = np.array(rows, float)
    return PieceNotes.build(a[:, 0], a[:, 1], a[:, 2].astype(int), np.zeros(len(rows), bool), a[:, 3].astype(int))


def line(start: float, pitches: list[int], length: float = 1.0) -> list[tuple[float, float, int]]:
    return [(start + i * length, length, p) for i, p in enumerate(pitches)]


def test_parallel_fifths_and_octaves_are_counted_per_motion() -> None:
    # bass C D E F, soprano G A B C: fifths, fifths, then E-B (fifth) → F-C (fifth): 3 parallel fifths in 3 motions
    p = piece(line(0, [48, 50, 52, 53]), line(0, [55, 57, 59, 60]))
    vl = voice_leading(p)
    assert (vl.motions, vl.parallel_perfect) == (3, 3)
    assert vl.parallel_per_100 == pytest.approx(100.0)
    # contrary motion into an octave is not parallel; oblique motion (one voice holds) neither
    q = piece(line(0, [48, 50, 50]), line(0, [64, 62, 65]))  # C-E (3rd), D-D (octave, contrary), D-F (oblique)
    vl = voice_leading(q)
    assert (vl.motions, vl.parallel_perfect) == (2, 0)
    # octaves in similar motion: C-C → D-D
    r = piece(line(0, [48, 50]), line(0, [60, 62]))
    assert voice_leading(r).parallel_perfect == 1


def test_crossing_leaps_and_top_line() -> None:
    # the alto (lower on average) rises above the soprano at its third onset
    p = piece(line(0, [60, 62, 67, 60]), line(0, [64, 65, 65, 64]))
    vl = voice_leading(p)
    assert vl.onsets == 8
    # at beat 2 the alto's 67 starts over the soprano's 65 (both onsets): both voices' onsets are crossed
    assert vl.crossings == 2
    assert vl.crossing_share == pytest.approx(0.25)
    # leaps: 60→62 (2), 62→67 (5), 67→60 (7); soprano 1, 0, 1 → no leap over an octave
    assert (vl.moves, vl.leaps) == (6, 0)
    wide = piece(line(0, [48, 64, 60]))
    assert (voice_leading(wide).moves, voice_leading(wide).leaps) == (2, 1)
    # a chord keeps its highest note in the track's top line
    chords = PieceNotes.build(
        np.array([0, 0, 1.0]), np.array([1, 1, 1.0]), np.array([60, 67, 65]), np.zeros(3, bool), np.zeros(3, int)
    )
    ((_on, end, pi),) = top_lines(chords)
    assert pi.tolist() == [67, 65] and end.tolist() == [1.0, 2.0]


def test_voice_leading_adds_up_over_pieces() -> None:
    a = voice_leading(piece(line(0, [48, 50]), line(0, [55, 57])))
    b = voice_leading(piece(line(0, [48, 52]), line(0, [60, 55])))
    total = a + b
    assert total.motions == a.motions + b.motions and total.parallel_perfect == 1


def test_overlap_of_densities() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 2000)
    assert overlap(x, rng.normal(0, 1, 2000)) > 0.9
    assert overlap(x, rng.normal(6, 1, 2000)) < 0.05
    # two unit normals one sd apart overlap by 2 Φ(-0.5) = 0.617
    assert overlap(x, rng.normal(1, 1, 2000)) == pytest.approx(0.617, abs=0.05)


def test_features_segments_and_likeness() -> None:
    p = piece(line(0, [60, 62, 64, 65, 67, 69, 71, 72]), line(0, [48, 50, 52, 53, 55, 57, 59, 60], 1.0))
    (seg,) = segments(p, beats=32)
    f = features(seg)
    assert f["pitch_range"][0] == 24.0
    assert f["ioi"][0] == pytest.approx(1.0)
    assert f["polyphony"][0] == pytest.approx(2.0)
    assert f["pitch_class"].sum() == pytest.approx(1.0)
    assert f["interval"][1] == pytest.approx(4 / 14) and f["interval"][2] == pytest.approx(10 / 14)
    assert f["note_length"][3] == pytest.approx(1.0)  # every note lasts one beat
    rng = np.random.default_rng(1)

    def scale_piece(shift: int, step: float) -> PieceNotes:
        pitches = list(60 + shift + np.cumsum(rng.choice([-2, -1, 1, 2], 16)))
        return piece(line(0, pitches, step), line(0, [p - 12 for p in pitches], step))

    ref = [scale_piece(int(rng.integers(-3, 4)), 1.0) for _ in range(12)]
    same = [scale_piece(int(rng.integers(-3, 4)), 1.0) for _ in range(12)]
    other = [piece(line(0, list(40 + 7 * np.arange(16) % 50), 0.25)) for _ in range(12)]
    assert likeness(same, ref)["mean"] > likeness(other, ref)["mean"] + 0.2
