"""Tokens: MidiTok REMI per track, the torch-free vocabulary and the incremental note decoder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainharmonic_rt.config import InstrumentSettings
from brainharmonic_rt.errors import DataError, ModelError
from brainharmonic_rt.events import Note
from brainharmonic_rt.music.tokens import DRUM_PROGRAM, NoteDecoder, Vocab, bar_index
from brainharmonic_rt.sinks.midifile import notes_to_midi

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "midi"


def write_piece(path: Path, *, tempo: float = 120.0, drums: bool = False) -> list[Note]:
    """A two-instrument 4-bar piece on the sixteenth grid (piano chords + bass, optionally drums)."""
    spb = 60.0 / tempo
    notes = []
    for bar in range(4):
        for beat in range(4):
            t = (bar * 4 + beat) * spb
            notes.append(Note(t, spb * 0.5, 60 + (beat * 2 + bar) % 12, 80, 0, "piano"))
            notes.append(Note(t + spb / 2, spb * 0.25, 67, 64, 0, "piano"))
        notes.append(Note(bar * 4 * spb, 2 * spb, 36 + bar, 90, 1, "bass"))
        if drums:
            notes.append(Note(bar * 4 * spb, spb / 4, 36, 100, 9, "drums"))
    inst = {
        "piano": InstrumentSettings(program=0, channel=0),
        "bass": InstrumentSettings(program=32, channel=1, low=28, high=60, role="bass"),
    }
    if drums:
        inst["drums"] = InstrumentSettings(program=0, channel=9, low=35, high=81, role="percussion")
    notes_to_midi(notes, inst, tempo, path)
    return notes


@pytest.fixture(scope="module")
def tokenizer():
    from brainharmonic_rt.music.tokens import build_tokenizer

    return build_tokenizer()


def test_roundtrip_through_decoder(tmp_path: Path, tokenizer) -> None:
    from brainharmonic_rt.music.tokens import save_tokenizer, tokenize_file

    notes = write_piece(tmp_path / "a piece.mid", drums=True)
    tracks = tokenize_file(tokenizer, tmp_path / "a piece.mid")
    assert sorted(t.program for t in tracks) == [0, 32, DRUM_PROGRAM]
    save_tokenizer(tokenizer, tmp_path / "tok.json")
    vocab = Vocab.from_file(tmp_path / "tok.json")
    assert len(vocab) == len(tokenizer.vocab)
    piano = next(t for t in tracks if t.program == 0)
    dec = NoteDecoder(vocab)
    for tok in piano.ids:
        dec.push(int(tok))
    want = sorted((round(n.time / 0.5, 3), n.pitch) for n in notes if n.channel == 0)
    got = sorted((round(n.onset, 3), n.pitch) for n in dec.notes)
    assert got == want
    assert dec.bar == 3
    # at 120 bpm a beat is 0.5 s: 0.25 s notes last half a beat, 0.125 s a quarter beat
    assert {round(n.duration, 3) for n in dec.notes} == {0.5, 0.25}


def test_bar_index_counts_bars(tokenizer, tmp_path: Path) -> None:
    from brainharmonic_rt.music.tokens import save_tokenizer

    save_tokenizer(tokenizer, tmp_path / "tok.json")
    vocab = Vocab.from_file(tmp_path / "tok.json")
    ids = np.array([vocab.bar, 10, 11, vocab.bar, 12, vocab.bar])
    assert bar_index(ids, vocab.bar).tolist() == [0, 0, 0, 1, 1, 2]
    assert bar_index(np.array([10, vocab.bar, 12]), vocab.bar).tolist() == [0, 0, 0]


def test_vocab_kinds(tokenizer) -> None:
    vocab = Vocab([tokenizer[i] for i in range(len(tokenizer.vocab))])
    assert vocab.tokens[vocab.bar] == "Bar_None"
    pitches = vocab.pitch_ids(60, 62)
    assert sorted(vocab.tokens[i] for i in pitches if vocab.tokens[i].startswith("Pitch_")) == [
        "Pitch_60",
        "Pitch_61",
        "Pitch_62",
    ]
    assert vocab.value[vocab.index["Duration_1.2.4"]] == 1.5
    assert vocab.value[vocab.index["Position_12"]] == 12


def test_bad_tokenizer_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        Vocab.from_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"config": {}}')
    with pytest.raises(ModelError, match="not a brainharmonic tokenizer"):
        Vocab.from_file(tmp_path / "bad.json")


def test_unreadable_midi_is_a_data_error(tmp_path: Path, tokenizer) -> None:
    from brainharmonic_rt.music.tokens import tokenize_file

    (tmp_path / "junk.mid").write_bytes(b"not midi at all")
    with pytest.raises(DataError, match=r"Could not parse MIDI file .*junk\.mid"):
        tokenize_file(tokenizer, tmp_path / "junk.mid")


@pytest.mark.skipif(not CORPUS.is_dir(), reason="MIDI corpus not present")
def test_real_corpus_file_with_spaces() -> None:
    from brainharmonic_rt.music.tokens import build_tokenizer, tokenize_file

    path = CORPUS / "classical" / "02. Christe Eleison .mid"
    tracks = tokenize_file(build_tokenizer(), path)
    assert tracks and all(t.ids.size > 10 for t in tracks)


def test_runtime_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import brainharmonic_rt.music.tokens, brainharmonic_rt.music.generator, brainharmonic_rt.music.learned\n"
        "import brainharmonic_rt.brain.latent_map\n"
        "import brainharmonic_rt.evaluation.music_metrics, brainharmonic_rt.evaluation.generate\n"
        "print(sorted(m for m in ('torch', 'miditok') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
