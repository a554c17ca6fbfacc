"""Music metrics on hand-made notes whose answers are known, and runtime notes ↔ written file agreement."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest

from brainharmonic_rt.config import InstrumentSettings
from brainharmonic_rt.evaluation.music_metrics import (
    Metrics,
    dissonant_share,
    evaluate,
    evaluate_file,
    from_notes,
    simultaneity,
)
from brainharmonic_rt.events import Note
from brainharmonic_rt.sinks.midifile import notes_to_midi

TEMPO = 120.0  # 0.5 s per beat


def n(beat: float, beats: float, pitch: int, channel: int = 0, velocity: int = 80) -> Note:
    return Note(beat * 0.5, beats * 0.5, pitch, velocity, channel, f"ch{channel}")


def metrics(*notes: Note) -> Metrics:
    return evaluate(from_notes(list(notes), TEMPO))


def test_consonant_triad_has_no_dissonant_pair() -> None:
    m = metrics(n(0, 4, 60), n(0, 4, 64), n(0, 4, 67))
    assert m.dissonant_share == 0.0
    assert m.max_polyphony == 3
    assert m.instruments_active == 1


def test_minor_second_against_a_held_note() -> None:
    assert metrics(n(0, 4, 60), n(1, 1, 61)).dissonant_share == 1.0


def test_a_note_ending_at_an_onset_is_not_paired() -> None:
    # C held 0-4; E 1-2; F# at 2: E has just ended, so F# pairs with C only (a tritone)
    m = metrics(n(0, 4, 60), n(1, 1, 64), n(2, 1, 66))
    bad, total, poly = simultaneity(from_notes([n(0, 4, 60), n(1, 1, 64), n(2, 1, 66)], TEMPO))
    assert (bad, total, poly) == (1, 2, 2)
    assert m.dissonant_share == 0.5


def test_notes_starting_together_are_paired_once_each() -> None:
    # 60-61 (1) and 60-66 (6) are dissonant, 61-66 (5) is not
    assert metrics(n(0, 1, 60), n(0, 1, 61), n(0, 1, 66)).dissonant_share == pytest.approx(2 / 3)


def test_compound_sevenths_and_seconds_count() -> None:
    assert metrics(n(0, 2, 60), n(1, 1, 73)).dissonant_share == 1.0  # minor ninth
    assert metrics(n(0, 2, 60), n(1, 1, 71)).dissonant_share == 1.0  # major seventh
    assert metrics(n(0, 2, 60), n(1, 1, 72)).dissonant_share == 0.0  # octave


def test_drums_take_no_part_in_pairs_but_in_polyphony() -> None:
    m = metrics(n(0, 4, 60), n(1, 1, 61, channel=9), n(1, 1, 42, channel=9))
    assert math.isnan(m.dissonant_share)
    assert m.max_polyphony == 3
    assert m.instruments_active == 2


def test_a_retriggered_note_ends_where_it_retriggers() -> None:
    # channel 0 plays 60 for 4 beats but retriggers 60 at beat 1 (for 1 beat): the first one ends at 1
    same = [n(0, 4, 60), n(1, 1, 60), n(3, 1, 61)]
    assert metrics(*same).max_polyphony == 1
    assert math.isnan(metrics(*same).dissonant_share)
    # on another channel nothing is cut: 60 still sounds under 61
    other = [n(0, 4, 60), n(1, 1, 60, channel=1), n(3, 1, 61)]
    assert metrics(*other).max_polyphony == 2
    assert metrics(*other).dissonant_share == pytest.approx(1 / 2)  # (60,60) unison, (61,60) second


def test_random_pitches_are_dissonant_a_quarter_of_the_time() -> None:
    rng = np.random.default_rng(3)
    notes = [n(float(b), 1.5, int(p), channel=int(c)) for b, p, c in zip(
        np.repeat(np.arange(600), 3), rng.integers(36, 96, 1800), np.tile([0, 1, 2], 600), strict=True)]  # fmt: skip
    share = dissonant_share(from_notes(notes, TEMPO))
    assert 0.22 < share < 0.28
    assert metrics(*notes).instruments_active == 3


def test_empty_piece() -> None:
    m = evaluate(from_notes([], TEMPO))
    assert m.n_notes == 0 and m.max_polyphony == 0 and m.instruments_active == 0
    assert math.isnan(m.dissonant_share)


def test_runtime_notes_and_their_file_give_the_same_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from brainharmonic_rt.evaluation.generate import add_eval_music_args, eval_music

    rng = np.random.default_rng(0)
    notes = []
    for _ in range(400):
        ch = int(rng.choice([0, 1, 2, 9]))
        pitch = int(rng.choice([36, 38, 42])) if ch == 9 else int(rng.integers(40, 90))
        notes.append(Note(round(rng.uniform(0, 60) * 4) / 4, float(rng.choice([0.25, 0.5, 2.0])), pitch, 90, ch, ""))
    notes.sort(key=lambda x: (x.time, x.channel, x.pitch))
    instruments = {f"i{c}": InstrumentSettings(channel=c, program=0) for c in (0, 1, 2, 9)}
    path = notes_to_midi(notes, instruments, 96.0, tmp_path / "x.mid")
    a = evaluate(from_notes(notes, 96.0))
    b = evaluate_file(path)
    assert a.n_notes == b.n_notes == 400
    assert a.max_polyphony == b.max_polyphony >= 5
    assert a.instruments_active == b.instruments_active == 4
    assert a.dissonant_share == pytest.approx(b.dissonant_share)
    assert a.scale_consistency == pytest.approx(b.scale_consistency)

    p = argparse.ArgumentParser()
    add_eval_music_args(p)
    assert eval_music(p.parse_args([str(path)])) == 0
    out = capsys.readouterr().out
    assert "dissn" in out and "instr" in out
    row = next(line for line in out.splitlines() if line.strip().endswith(" 4") and "x.mid" in line)
    assert f"{b.dissonant_share:7.3f}" in row and f"{b.max_polyphony:5d}" in row
