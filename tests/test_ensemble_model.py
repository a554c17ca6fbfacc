"""Ensemble model: a tiny real corpus (Bach chorales from music21 + MIDI written here) → training →
ONNX export with parity → the composer with real onnxruntime sessions (contract, arbiter on and off)."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pytest

from brainharmonic_rt.config import GeneratorSettings, HarmonySettings, InstrumentSettings, MusicSettings
from brainharmonic_rt.errors import ConfigError, DataError
from brainharmonic_rt.evaluation.music_metrics import dissonant_share, from_notes
from brainharmonic_rt.evaluation.voice_leading import guard_summary
from brainharmonic_rt.events import BrainState, GroupState
from brainharmonic_rt.music.ensemble_grid import (
    LOW_PITCH,
    N_PITCH,
    key_offset,
    motion_bias,
    pair_bias,
)

from .test_tokens import write_piece

torch = pytest.importorskip("torch")
pytest.importorskip("music21")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from brainharmonic_rt.training.ensemble_corpus import add_corpus_args, build_corpus_command

    midi = tmp_path_factory.mktemp("midi")
    for i in range(2):
        write_piece(midi / f"piece {i}.mid", tempo=100 + 10 * i)
    out = tmp_path_factory.mktemp("corpus")
    p = argparse.ArgumentParser()
    add_corpus_args(p)
    args = p.parse_args(["--out", str(out), "--midi", str(midi), "--limit", "14", "--sources", "bach"])
    assert build_corpus_command(args) == 0
    return out


@pytest.fixture(scope="module")
def model_path(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from brainharmonic_rt.training.ensemble_args import add_train_ensemble_args
    from brainharmonic_rt.training.ensemble_train import train_ensemble

    out = tmp_path_factory.mktemp("models") / "ensemble.onnx"
    p = argparse.ArgumentParser()
    add_train_ensemble_args(p)
    args = p.parse_args(
        ["--corpus", str(corpus_dir), "--out", str(out), "--steps", "8", "--batch", "4", "--window", "32",
         "--hidden", "32", "--latent-dim", "4", "--val-every", "4"]
    )  # fmt: skip
    assert train_ensemble(args) == 0
    return out


def test_corpus_has_voices_roles_splits_and_a_card(corpus_dir: Path) -> None:
    import json

    from brainharmonic_rt.training.ensemble_corpus import SPLITS, CorpusArrays, corpus_paths

    npz, card = corpus_paths(corpus_dir)
    c = CorpusArrays.load(npz)
    info = json.loads(card.read_text())
    assert set(info["sources"]) == {"bach", "midi"}
    bach = info["sources"]["bach"]
    assert bach["voices_per_piece"].get("4", 0) >= 10  # chorales: four voices each
    assert bach["roles"]["bass"] == bach["roles"]["melody"] == bach["pieces"]
    assert set(bach["programs"]) == {"52"}  # sung
    assert sum(bach["split"].values()) == bach["pieces"] and set(bach["split"]) == set(SPLITS)
    assert c.pitch.min() >= LOW_PITCH and c.pitch.max() < LOW_PITCH + N_PITCH
    assert (c.dur >= 1).all()
    # every line is monophonic: onsets strictly increase, a note ends by the next onset
    for li in np.unique(c.note_line):
        on, du = c.onset[c.note_line == li], c.dur[c.note_line == li]
        assert (np.diff(on) > 0).all() and (on[:-1] + du[:-1] <= on[1:]).all()
    with pytest.raises(DataError, match="build it with"):
        CorpusArrays.load(corpus_dir / "missing.npz")


def test_grid_of_a_hand_made_piece() -> None:
    from brainharmonic_rt.training.ensemble_corpus import CorpusArrays, Line, Piece
    from brainharmonic_rt.training.ensemble_train import grid_of

    lines = [
        Line(np.array([0, 4]), np.array([4, 2]), np.array([60, 62]), 52, 2),  # melody: C (4 steps), D (2)
        Line(np.array([0, 2]), np.array([2, 4]), np.array([48, 43]), 52, 0),  # bass: C (2), G (4)
    ]
    c = CorpusArrays.of([Piece("bach", "x", lines, np.array([0, 8]), 0, 0, 8)])
    g = grid_of(c, 0)
    bass, mel = 0, 1  # voices sorted by mean pitch
    assert g.ev[bass, :7].tolist() == [48 - LOW_PITCH + 1, 0, 43 - LOW_PITCH + 1, 0, 0, 0, 0]
    assert g.dur[mel, 0] == 3 and g.dur[mel, 4] == 1  # length classes = steps - 1
    assert g.held[mel, :7].tolist() == [0, 37, 37, 37, 0, 39, 0]  # 60 → event 37, 62 → 39
    assert g.last[bass, :4].tolist() == [0, 25, 25, 20]
    assert g.role.tolist() == [0, 2] and g.pos[:9].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0]


def test_key_offsets_keep_the_collection() -> None:
    assert key_offset(2, "dorian") == (0, 1)  # D dorian: C major's pitches, minor centre
    assert key_offset(7, "major") == (-5, 0)  # G major: C transposed down a fourth
    assert key_offset(2, "minor") == (5, 1)  # D minor: A minor + 5 semitones
    assert key_offset(9, "minor_pentatonic") == (0, 1)


def test_pair_and_motion_terms() -> None:
    pair = np.zeros((4, 73), np.float32)
    pair[2, 36 + 7] = 1.5  # melody likes a fifth above
    b = pair_bias(pair, 2, np.array([48]))
    assert b[55 - LOW_PITCH] == pytest.approx(1.5) and b.sum() == pytest.approx(1.5)
    motion = np.zeros((13, 12), np.float32)
    motion[7, 7] = -4.0  # fifth → fifth: parallel fifths
    m = motion_bias(motion, 60, [(53, 55)])  # the other voice moved F → G; we were a fifth above F
    assert m[62 - LOW_PITCH] == pytest.approx(-4.0)  # D over G: parallel fifths
    assert m[60 - LOW_PITCH] == 0.0  # staying on C is not a motion


def test_training_export_parity_and_card_files(model_path: Path) -> None:
    import json

    from brainharmonic_rt.music.ensemble_model import EnsembleModel

    record = json.loads(model_path.with_suffix(".train.json").read_text())
    assert record["parity_max_abs"] < 1e-4
    assert record["history"] and "val_ce" in record["history"][-1]
    assert model_path.with_name("ensemble_latent.npz").is_file()
    m = EnsembleModel(model_path)
    assert m.pair.shape == (4, 73) and m.motion.shape == (13, 12)
    assert m.resolve_program(52) == 52 and m.resolve_program(53) in m.programs
    assert m.resolve_program(11) in m.programs  # vibraphone → a program it knows
    out = m.step(
        np.zeros(5, np.int64), np.zeros(5, np.int64), np.zeros((5, N_PITCH), np.float32), np.zeros(5, np.int64),
        np.array([0, 1, 1, 2, 3]), np.full(5, 52), np.zeros((5, 2), np.float32), np.zeros(5, np.int64),
        None, m.initial_state(5),
    )  # fmt: skip
    assert out[0].shape == (5, N_PITCH + 1) and np.isfinite(out[0]).all()


def _instruments() -> dict[str, InstrumentSettings]:
    from brainharmonic_rt.music.ensemble import resolve_instruments

    return resolve_instruments(["frontal", "central", "temporal", "parietal", "occipital"], MusicSettings())


def _state(i: int, calibrating: bool = False) -> BrainState:
    rng = np.random.default_rng(i)
    groups = tuple(
        GroupState(g, {"alpha": float(rng.normal())}, {"alpha": float(rng.normal())}, 4)
        for g in ("frontal", "central", "temporal", "parietal", "occipital")
    )
    return BrainState(i, i * 0.25 + 2.0, 0.0, groups, calibrating)


def _run(composer, windows: int = 120) -> list:
    notes = []
    for i in range(windows):
        t = 2.1 + i * 0.25
        notes += composer.compose(_state(i, calibrating=i < 8), t, t + 0.25)
    return notes


def test_composer_contract_with_and_without_the_arbiter(model_path: Path) -> None:
    from brainharmonic_rt.music.ensemble_composer import EnsembleLearnedComposer

    gen = GeneratorSettings(model=model_path)

    def make(arbiter: bool, seed: int = 0) -> EnsembleLearnedComposer:
        return EnsembleLearnedComposer(_instruments(), MusicSettings(seed=seed), gen, HarmonySettings(arbiter=arbiter))

    a, b = make(True), make(True)
    na, nb = _run(a), _run(b)
    assert na and [(n.time, n.pitch) for n in na] == [(n.time, n.pitch) for n in nb]  # deterministic
    assert [(n.time, n.pitch) for n in _run(make(True, seed=1))] != [(n.time, n.pitch) for n in na]
    stats = a.stats()
    assert stats["arbiter"] is True and stats["veto"]["checked"] > 0 and 0 <= stats["veto"]["rate"] <= 1
    assert dissonant_share(from_notes(na, a.tempo)) == 0.0  # the clash rule holds under the model's notes
    for n in na:
        inst = a.instruments[n.instrument]
        assert inst.low <= n.pitch <= inst.high and n.duration > 0
    off = make(False)
    n_off = _run(off)
    assert n_off and off.stats()["veto"]["checked"] == 0 and off.stats()["arbiter"] is False
    for n in n_off:  # registers hold without the arbiter
        inst = off.instruments[n.instrument]
        assert inst.low <= n.pitch <= inst.high
    # at most one note at a time per instrument (voices are lines)
    for name in a.instruments:
        mine = sorted((n.time, n.time + n.duration) for n in na if n.instrument == name)
        assert all(e <= s2 + 1e-9 for (_, e), (s2, _) in itertools.pairwise(mine))
    lines = guard_summary(from_notes(na, a.tempo), stats)
    assert "vetoed" in lines[0] and "parallel fifths" in lines[1]


def test_composer_live_controls(model_path: Path) -> None:
    from brainharmonic_rt.music.ensemble_composer import EnsembleLearnedComposer

    c = EnsembleLearnedComposer(_instruments(), MusicSettings(), GeneratorSettings(model=model_path), HarmonySettings())
    _run(c, 20)
    c.set_key("G", "major")
    c.set_register("temporal", 36, 48)
    c.set_temperature(0.5)
    c.set_muted("frontal", True)
    c.set_program("central", 48)
    later = []
    for i in range(20, 80):
        t = 2.1 + i * 0.25
        later += c.compose(_state(i), t, t + 0.25)
    assert later and not [n for n in later if n.instrument == "frontal"]
    assert all(36 <= n.pitch <= 48 for n in later if n.instrument == "temporal" and n.time > c.time_of_beat(44))
    with pytest.raises(ConfigError):
        c.set_temperature(0)
    with pytest.raises(ConfigError, match="holds no pitch"):
        c.set_register("temporal", 2, 10)
    c.set_solo("temporal")
    solo = []
    for i in range(80, 120):
        t = 2.1 + i * 0.25
        solo += c.compose(_state(i), t, t + 0.25)
    assert solo and {n.instrument for n in solo} == {"temporal"}


def test_learned_mode_picks_the_composer_by_model_kind(model_path: Path) -> None:
    from brainharmonic_rt.music.ensemble_composer import EnsembleLearnedComposer, learned_composer
    from brainharmonic_rt.music.learned import LearnedComposer

    inst = _instruments()
    got = learned_composer(inst, MusicSettings(), GeneratorSettings(model=model_path), HarmonySettings())
    assert isinstance(got, EnsembleLearnedComposer)
    generator = Path(__file__).resolve().parents[1] / "models" / "generator.onnx"
    other = learned_composer(inst, MusicSettings(), GeneratorSettings(model=generator), HarmonySettings())
    assert isinstance(other, LearnedComposer)


def test_learned_mode_falls_back_to_classic_without_its_models(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from brainharmonic_rt.brain import encoder
    from brainharmonic_rt.config import load_settings
    from brainharmonic_rt.events import SignalInfo
    from brainharmonic_rt.music.classic import ClassicComposer
    from brainharmonic_rt.pipeline import Engine

    monkeypatch.setattr(encoder, "DEFAULT_MODEL", tmp_path / "encoder.onnx")
    info = SignalInfo("x", 250.0, ("Fz", "Cz", "Pz", "O1"), "EEG", "x")
    with caplog.at_level("WARNING", logger="brainharmonic"):
        engine = Engine(info, load_settings(None, music={"mode": "learned"}))
    assert isinstance(engine.composer, ClassicComposer) and engine.mode == "classic"
    assert "playing classic mode instead" in caplog.text and "encoder.onnx" in caplog.text
