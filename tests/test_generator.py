"""Generator: a tiny real train → ONNX export → parity → incremental decoding, composer and CLI functions.

The corpus is a handful of real .mid files written here (two styles), tokenised by MidiTok.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mido
import numpy as np
import pytest

from brainharmonic_rt.config import GeneratorSettings, InstrumentSettings, MusicSettings
from brainharmonic_rt.errors import ConfigError, DataError, ModelError
from brainharmonic_rt.evaluation.music_metrics import evaluate_file
from brainharmonic_rt.events import BrainState, GroupState
from brainharmonic_rt.music.generator import FORBID, GeneratorModel, Voice, sample
from brainharmonic_rt.music.scales import pitch_classes

from .test_tokens import write_piece

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny corpus → `train_generator` for a few steps → models/generator.onnx in a temp folder."""
    from brainharmonic_rt.training.generator_train import add_train_generator_args, train_generator

    root = tmp_path_factory.mktemp("midi")
    for style in ("classical", "jazz"):
        (root / style).mkdir()
        for i in range(3):
            write_piece(root / style / f"piece {i}.MID", tempo=100 + 10 * i, drums=style == "jazz")
    out = tmp_path_factory.mktemp("models") / "generator.onnx"
    p = argparse.ArgumentParser()
    add_train_generator_args(p)
    args = p.parse_args(
        [
            "--midi",
            str(root),
            "--out",
            str(out),
            "--steps",
            "6",
            "--batch",
            "4",
            "--seq",
            "64",
            "--hidden",
            "32",
            "--latent-dim",
            "8",
            "--val-every",
            "3",
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    assert train_generator(args) == 0
    return out


def test_training_writes_model_tokenizer_and_summary(trained: Path) -> None:
    assert trained.is_file()
    assert trained.with_name("generator_tokenizer.json").is_file()
    summary = json.loads(trained.with_suffix(".train.json").read_text())["summary"]
    assert summary["steps"] == 6
    assert summary["parity_max_abs"] < 1e-4
    assert np.isfinite(summary["val_ce"])
    space = np.load(trained.with_name("generator_latent.npz"))
    assert space["mean"].shape == (8,) and space["axes"].shape == (8, 8)


def test_parity_torch_vs_onnx_stepwise(trained: Path) -> None:
    from brainharmonic_rt.training.generator_eval import load_checkpoint
    from brainharmonic_rt.training.generator_export import parity

    model = load_checkpoint(trained.with_suffix(".pt"))
    assert parity(model, trained, steps=20) < 1e-4


def test_same_seed_same_tokens_and_latent_matters(trained: Path) -> None:
    m = GeneratorModel(trained)
    z = np.ones(m.latent_dim, np.float32)

    def run(seed: int, latent: np.ndarray | None) -> list[int]:
        v = Voice(m, 0, seed)
        return [v.step(latent) for _ in range(40)]

    assert run(3, z) == run(3, z)
    assert run(3, z) != run(4, z)
    logits_a, _ = m.step(np.array([m.vocab.bar]), m.initial_state(), z[None], np.array([0]))
    logits_b, _ = m.step(np.array([m.vocab.bar]), m.initial_state(), -z[None], np.array([0]))
    logits_c, _ = m.step(np.array([m.vocab.bar]), m.initial_state(), None, np.array([0]))
    assert not np.allclose(logits_a, logits_b)
    assert not np.allclose(logits_a, logits_c)


def test_logit_mask_forbids_tokens(trained: Path) -> None:
    m = GeneratorModel(trained)
    only = m.vocab.index["Pitch_64"]
    bias = np.zeros(len(m.vocab), np.float32)
    bias[m.vocab.pitch_ids()] = FORBID
    bias[only] = 0.0
    v = Voice(m, 0, 1, temperature=1.5, top_p=1.0)
    for _ in range(300):
        v.step(None, bias)
    assert v.decoder.notes, "an untrained-ish model still makes some notes in 300 tokens"
    assert {n.pitch for n in v.decoder.notes} == {64}
    onsets = [n.onset for n in v.decoder.notes]
    assert onsets == sorted(onsets)  # grammar bias: positions only move forward inside a bar


def test_groove_nudges_the_previous_bars_rhythm(trained: Path) -> None:
    m = GeneratorModel(trained)
    vocab = m.vocab
    v = Voice(m, 0, 0, groove=2.0)
    logits = np.random.default_rng(0).normal(size=len(vocab))
    assert np.array_equal(v.groove_logits(logits), logits)  # no previous bar yet: no nudge
    note = ("Pitch_60", "Velocity_63", "Duration_1.0.4")
    for tok in ("Position_4", *note, "Position_12", *note, "Position_14", "Bar_None"):
        v.decoder.push(vocab.index[tok])
    # onsets are where notes started: Position_14 had none
    assert v.decoder.prev_onsets == (1 << 4) | (1 << 12) and v.decoder.onsets == 0
    out = v.groove_logits(logits)
    d = out - logits
    p4, p8, p12 = (vocab.index[f"Position_{k}"] for k in (4, 8, 12))
    assert d[p4] - d[p8] == pytest.approx(2.0) and d[p12] - d[p8] == pytest.approx(2.0)
    assert d[vocab.bar] == pytest.approx(d[p8])  # onsets of the previous bar are still ahead: Bar does not repeat it
    pitches = vocab.pitch_ids()
    assert np.array_equal(out[pitches], logits[pitches])  # whether a chord grows is not touched
    rhythm = np.r_[v._positions, vocab.bar]
    assert np.logaddexp.reduce(out[rhythm]) == pytest.approx(np.logaddexp.reduce(logits[rhythm]))  # mass kept
    # past the previous bar's last onset, ending the bar is what repeats it
    for tok in ("Position_12", *note):
        v.decoder.push(vocab.index[tok])
    logits = np.zeros(len(vocab))
    logits[v._positions[v._position_values <= 12]] = FORBID
    d = v.groove_logits(logits) - logits
    assert d[vocab.bar] - d[vocab.index["Position_14"]] == pytest.approx(2.0)
    assert v.groove_logits(logits)[p4] == FORBID  # forbidden tokens stay forbidden
    cold = Voice(m, 0, 0, temperature=0.5, groove=2.0)  # the share is kept at the sampler's temperature
    cold.decoder = v.decoder
    warm = np.random.default_rng(1).normal(size=len(vocab))
    lse = np.logaddexp.reduce
    assert lse(cold.groove_logits(warm)[rhythm] / 0.5) == pytest.approx(lse(warm[rhythm] / 0.5))
    off = Voice(m, 0, 0)  # groove 0: the model's own logits
    off.decoder = v.decoder
    assert np.array_equal(off.groove_logits(logits), logits)
    with pytest.raises(ConfigError, match="groove"):
        Voice(m, 0, 0, groove=-1.0)


def test_style_knn_and_handmade_features() -> None:
    from brainharmonic_rt.training.generator_eval import handmade_features, knn_grouped_accuracy

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 200)
    groups = np.repeat(np.arange(40), 10)  # 20 files per class
    x = rng.standard_normal((400, 6)) + 3.0 * y[:, None]
    acc, bal = knn_grouped_accuracy(x, y, groups)
    assert acc > 0.95 and bal > 0.95
    acc, _ = knn_grouped_accuracy(rng.standard_normal((400, 6)), y, groups)
    assert 0.3 < acc < 0.7  # no signal, no accuracy
    # only queried rows are scored: the noisy half as queries, the clean half as neighbours only
    noisy = np.arange(400) % 10 < 5
    x2 = np.where(noisy[:, None], rng.standard_normal((400, 6)), x)
    acc_all, _ = knn_grouped_accuracy(x2, y, groups)
    acc_noisy, _ = knn_grouped_accuracy(x2, y, groups, query=noisy)
    assert acc_noisy < acc_all
    # rows that are not queries stay in the neighbour pool: one queried file per class scores well only
    # because the other 38 files are neighbours
    one_file = (groups == 0) | (groups == 20)
    acc_pool, _ = knn_grouped_accuracy(x, y, groups, query=one_file)
    assert acc_pool > 0.95
    # a C-major arpeggio on the beats of 4 bars: (bar, position, pitch, velocity, duration)
    notes = np.array(
        [(b, p, pitch, 64, 1.0) for b in range(4) for p, pitch in zip((0, 4, 8), (60, 64, 67), strict=True)]
    )
    f = handmade_features(notes.astype(float))
    assert f.shape == (26,) and np.isfinite(f).all()
    assert f[:12].tolist() == pytest.approx([1 / 3] * 3 + [0.0] * 9)  # pitch-class profile, sorted
    assert f[12] == pytest.approx(np.log2(3))  # pitch-class entropy
    assert f[13] == 3.0 and f[17] == 1.0 and f[18] == 1.0  # notes per bar, notes per onset, duration
    assert f[21] == 1.0 and f[22] == 0.0 and f[23] == 0.0  # all onsets on the beat


def test_sample_top_p_and_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = np.array([5.0, 4.0, -2.0, -3.0])
    draws = {sample(logits, rng, 1.0, 0.7) for _ in range(200)}
    assert draws <= {0, 1}
    assert sample(logits, rng, 0.0) == 0


def test_bad_model_files(tmp_path: Path, trained: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        GeneratorModel(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ModelError, match="not ONNX"):
        GeneratorModel(tmp_path / "junk.onnx")
    with pytest.raises(ConfigError, match=r"program must be 0\.\.128"):
        Voice(GeneratorModel(trained), 200, 0)


def _state(latent: np.ndarray | None, t: float, calibrating: bool = False) -> BrainState:
    z = {"theta": 0.5, "alpha": -1.0, "beta": 1.0}
    groups = tuple(GroupState(n, z, z, 4, latent) for n in ("frontal", "temporal"))
    return BrainState(0, t, t, groups, calibrating, latent=latent)


def test_learned_composer_contract(trained: Path) -> None:
    from brainharmonic_rt.brain.latent_map import LatentMap
    from brainharmonic_rt.music.learned import LearnedComposer

    model = GeneratorModel(trained)
    rng = np.random.default_rng(0)
    lmap = LatentMap.fit(rng.normal(size=(200, 5)), rng.normal(size=(300, model.latent_dim)))
    inst = {
        "frontal": InstrumentSettings(program=0, channel=0, low=60, high=84, role="melody"),
        "temporal": InstrumentSettings(program=32, channel=1, low=28, high=50, role="bass"),
    }
    music = MusicSettings(tempo=120, key="D", scale="dorian", max_polyphony=8, seed=5)

    def run() -> list:
        c = LearnedComposer(inst, music, GeneratorSettings(temperature=1.2), model=model, latent_map=lmap)
        notes, t = [], 1.0
        for k in range(40):
            state = _state(rng_latent[k], t)
            notes.append((t, t + 0.25, c.compose(state, t, t + 0.25)))
            t += 0.25
        return notes

    rng_latent = np.random.default_rng(1).normal(size=(40, 5)).astype(np.float32)
    a, b = run(), run()
    assert [n for *_, ns in a for n in ns] == [n for *_, ns in b for n in ns]  # same seed, same notes
    pcs = set(pitch_classes("D", "dorian"))
    total = 0
    for start, end, notes in a:
        for n in notes:
            total += 1
            assert start <= n.time < end
            low, high = (60, 84) if n.channel == 0 else (28, 50)
            assert low <= n.pitch <= high and n.pitch % 12 in pcs
    assert total > 0


def test_composer_uses_band_powers_without_encoder(trained: Path) -> None:
    from brainharmonic_rt.brain.latent_map import LatentMap
    from brainharmonic_rt.music.learned import LearnedComposer

    model = GeneratorModel(trained)
    rng = np.random.default_rng(0)
    lmap = LatentMap.fit(rng.normal(size=(100, 32)), rng.normal(size=(100, model.latent_dim)))
    c = LearnedComposer(
        {"frontal": InstrumentSettings(program=0, channel=0, low=48, high=84)},
        MusicSettings(),
        model=model,
        latent_map=lmap,
    )
    z = c.music_latent(_state(None, 1.0), "frontal")
    assert z is not None and z.shape == (model.latent_dim,)
    assert c.music_latent(_state(None, 1.0, calibrating=True), "frontal") is None


def test_composer_centres_each_latent_source_on_its_calibration(trained: Path) -> None:
    from brainharmonic_rt.brain.latent_map import LatentMap
    from brainharmonic_rt.music.learned import LearnedComposer

    model = GeneratorModel(trained)
    rng = np.random.default_rng(0)
    lmap = LatentMap.fit(rng.normal(size=(300, 5)), rng.normal(size=(300, model.latent_dim)), centred=True)
    c = LearnedComposer(
        {
            "frontal": InstrumentSettings(program=0, channel=0, low=48, high=84),
            "occipital": InstrumentSettings(program=32, channel=1, low=28, high=50, role="bass"),
        },
        MusicSettings(),
        model=model,
        latent_map=lmap,
    )
    # frontal has its own latent; occipital has none and falls back to the global latent
    own, glob = np.full(5, 7.0), np.full(5, -4.0)  # this person's corners of the brain space

    def state(i: int, calibrating: bool, shift: float = 0.0) -> BrainState:
        z = {"alpha": 0.0}
        noise = rng.normal(size=5) * 0.1
        groups = (
            GroupState("frontal", z, z, 4, (own + noise + shift).astype(np.float32)),
            GroupState("occipital", z, z, 4),
        )
        return BrainState(i, 0.25 * i, 0.25 * i, groups, calibrating, latent=(glob - noise + shift).astype(np.float32))

    seen_own, seen_glob = [], []
    for i in range(12):
        s = state(i, True)
        seen_own.append(s.groups[0].latent)
        seen_glob.append(s.latent)
        assert c.music_latent(s, "frontal") is None and c.compose(s, 0.25 * i, 0.25 * i + 0.25) == []
    centres = c.centres.sources
    assert set(centres) == {"frontal", ""} and centres["frontal"].n == 12 and centres[""].n == 12
    assert np.allclose(centres["frontal"].mean, np.mean(seen_own, axis=0))
    assert np.allclose(centres[""].mean, np.mean(seen_glob, axis=0))
    later = state(20, False, shift=1.0)  # one unit above the calibration in every dimension
    c.compose(later, 5.0, 5.25)  # compose feeds the centres (and freezes them after calibration)
    for name, key in (("frontal", "frontal"), ("occipital", "")):
        vec = later.groups[0].latent if name == "frontal" else later.latent
        z = c.music_latent(later, name)
        assert z is not None and np.allclose(z, lmap(vec - centres[key].mean), atol=1e-5)
        assert np.allclose(z, lmap(np.ones(5)), atol=0.3)  # the change, not the person's corner
    assert centres["frontal"].frozen and centres[""].frozen
    assert not np.allclose(lmap(own), lmap(np.zeros(5)), atol=0.3)  # uncentred it would sit elsewhere


def test_generate_and_eval_music(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from brainharmonic_rt.evaluation.generate import add_eval_music_args, add_generate_args, eval_music, generate

    p = argparse.ArgumentParser()
    add_generate_args(p)
    outs = []
    for name in ("a.mid", "b.mid"):
        args = p.parse_args(
            [
                "--bars",
                "4",
                "--latent-seed",
                "2",
                "--out",
                str(tmp_path / name),
                "--model",
                str(trained),
                "--programs",
                "0,128",
                "--temperature",
                "1.5",
            ]
        )
        assert generate(args) == 0
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    np.savez(tmp_path / "lat.npz", latents=np.zeros((3, 8), np.float32))
    args = p.parse_args(
        [
            "--bars",
            "4",
            "--from-latents",
            str(tmp_path / "lat.npz"),
            "--out",
            str(tmp_path / "c.mid"),
            "--model",
            str(trained),
        ]
    )
    assert generate(args) == 0
    np.savez(tmp_path / "bad.npz", latents=np.zeros((3, 5), np.float32))
    args = p.parse_args(
        ["--from-latents", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "d.mid"), "--model", str(trained)]
    )
    with pytest.raises(DataError, match=r"expected \(n, 8\)"):
        generate(args)
    with pytest.raises(ConfigError, match="--programs"):
        generate(p.parse_args(["--programs", "0,300", "--out", str(tmp_path / "e.mid"), "--model", str(trained)]))
    q = argparse.ArgumentParser()
    add_eval_music_args(q)
    capsys.readouterr()
    assert eval_music(q.parse_args([str(tmp_path / "a.mid")])) == 0
    printed = capsys.readouterr().out
    assert "a.mid" in printed and "groove_consistency" in printed
    # the metrics count every note the file holds (counted here independently, from its note_on messages)
    ons = sum(
        m.type == "note_on" and m.velocity > 0 for tr in mido.MidiFile(str(tmp_path / "a.mid")).tracks for m in tr
    )
    assert ons > 0 and evaluate_file(tmp_path / "a.mid").n_notes == ons


def test_unseen_programs_fall_back_and_percussion_maps_to_drums(trained: Path) -> None:
    from brainharmonic_rt.brain.latent_map import LatentMap
    from brainharmonic_rt.music.learned import LearnedComposer

    model = GeneratorModel(trained)
    assert model.programs and model.resolve_program(model.programs[0]) == model.programs[0]
    unseen = next(p for p in range(129) if p not in model.programs)
    assert model.resolve_program(unseen) == model.programs[0]
    assert Voice(model, unseen, 0).model_program == model.programs[0]
    rng = np.random.default_rng(0)
    lmap = LatentMap.fit(rng.normal(size=(100, 5)), rng.normal(size=(100, model.latent_dim)))
    inst = {"occipital": InstrumentSettings(program=0, channel=9, low=35, high=81, role="percussion")}
    c = LearnedComposer(
        inst, MusicSettings(tempo=120), GeneratorSettings(temperature=1.5), model=model, latent_map=lmap
    )
    notes = [n for k in range(80) for n in c.compose(_state(None, 1.0 + k * 0.25), 1.0 + k * 0.25, 1.25 + k * 0.25)]
    assert notes and {n.pitch for n in notes} <= {36, 38, 42} and {n.channel for n in notes} == {9}
