"""Training the encoder (torch, the [train] extra): a tiny real run, ONNX export, parity, runtime load."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from brainharmonic_rt.brain.encoder import EncoderModel, EncoderSpec, LearnedBrain
from brainharmonic_rt.config import BandSettings, EncoderSettings, SignalSettings
from brainharmonic_rt.errors import ConfigError, DataError, ModelError
from brainharmonic_rt.evaluation.modelcard import read_section
from brainharmonic_rt.evaluation.sessions import discover_sessions, open_session, prepare_arrays
from brainharmonic_rt.training.cli_train import (
    add_export_arguments,
    add_train_arguments,
    export_encoder,
    split_subjects,
    train_encoder,
)
from brainharmonic_rt.training.data import AugmentConfig, PairSampler
from brainharmonic_rt.training.export import PARITY_ATOL, parity
from brainharmonic_rt.training.loop import contrastive, load_encoder
from brainharmonic_rt.training.model import Codebook, EEGEncoder, ExportWrapper, ModelConfig, perplexity

SUBJECTS = "Subject00,Subject01,Subject02"


def train_args(data: Path, out: Path, *extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    return p.parse_args(["--data", str(data), "--out", str(out), "--subjects", SUBJECTS, "--seconds", "30",
                         "--steps", "6", "--pairs", "16", "--no-progress", *extra])  # fmt: skip


@pytest.fixture(scope="module")
def tiny(eegmat_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few steps of real training on 3 subjects x 30 s; returns the ONNX path."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("enc") / "encoder.onnx"
    assert train_encoder(train_args(eegmat_dir, out)) == 0
    return out


@pytest.fixture(scope="module")
def rest_arrays(eegmat_dir: Path):
    files = discover_sessions(eegmat_dir, ["Subject00"])[0]
    spec = EncoderSpec(125.0, 250, 32, 64, (1.0, 40.0), 20.0, "test")
    return prepare_arrays(open_session(files, seconds=40), SignalSettings(hop=0.5), spec)


def test_tiny_training_writes_model_checkpoint_and_card(tiny: Path) -> None:
    assert tiny.is_file() and tiny.with_suffix(".pt").is_file()
    model = EncoderModel.load(EncoderSettings(model=tiny))
    meta = model.model.meta
    assert meta["train_subjects"] == "Subject00,Subject01" and meta["val_subjects"] == "Subject02"
    assert meta["seed"] == "0" and meta["steps"] == "6" and model.spec.version.startswith("0.")
    card = read_section(tiny.with_suffix(".md"), "training")
    assert card is not None and "Train subjects (2): Subject00, Subject01" in card
    assert "validation perplexity" in card and "training" in card


def test_exported_model_matches_torch_within_1e4(tiny: Path, rest_arrays) -> None:
    ckpt = torch.load(tiny.with_suffix(".pt"), weights_only=True)
    encoder = load_encoder(ckpt)
    spec = EncoderModel.load(EncoderSettings(model=tiny)).spec
    assert parity(encoder, tiny, spec) <= PARITY_ATOL
    # And on real prepared windows (19 channels, 5 groups, batch 8).
    x = torch.from_numpy(rest_arrays.x[:8])
    region = torch.from_numpy(rest_arrays.region)
    mask = torch.from_numpy(np.stack([rest_arrays.region == g for g in range(1, 6)]).astype(np.float32))
    with torch.no_grad():
        ref = [t.numpy() for t in ExportWrapper(encoder)(x, region, mask)]
    got = EncoderModel.load(EncoderSettings(model=tiny)).encode(x.numpy(), region.numpy(), mask.numpy())
    assert np.max(np.abs(ref[0] - got[0])) <= PARITY_ATOL and np.max(np.abs(ref[1] - got[1])) <= PARITY_ATOL
    assert np.array_equal(ref[2], got[2])


def test_runtime_serves_the_freshly_trained_model(tiny: Path, eegmat_dir: Path) -> None:
    from brainharmonic_rt.evaluation.sessions import session_windows

    files = discover_sessions(eegmat_dir, ["Subject03"])[0]
    session = open_session(files, seconds=8)
    brain = LearnedBrain(session.info, SignalSettings(), BandSettings(), EncoderSettings(model=tiny))
    states = [brain.process(w) for w in session_windows(session, SignalSettings())]
    assert len(states) > 20 and all(s.latent is not None and s.token is not None for s in states)


def test_training_is_reproducible_for_a_seed(tiny: Path, eegmat_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.onnx"
    other = tmp_path / "other.onnx"
    train_encoder(train_args(eegmat_dir, again))
    train_encoder(train_args(eegmat_dir, other, "--seed", "1"))
    version = {p: EncoderModel.load(EncoderSettings(model=p)).spec.version for p in (tiny, again, other)}
    assert version[tiny] == version[again]  # the version suffix hashes the weights
    assert version[tiny] != version[other]


def test_export_command_rebuilds_the_same_model(tiny: Path, tmp_path: Path, rest_arrays) -> None:
    p = argparse.ArgumentParser()
    add_export_arguments(p)
    out = tmp_path / "re.onnx"
    assert export_encoder(p.parse_args(["--checkpoint", str(tiny.with_suffix(".pt")), "--out", str(out)])) == 0
    a, b = (EncoderModel.load(EncoderSettings(model=m)) for m in (tiny, out))
    assert a.model.meta == b.model.meta
    x, region = rest_arrays.x[:2], rest_arrays.region
    mask = np.ones((1, x.shape[1]), dtype=np.float32)
    ra, rb = a.encode(x, region, mask), b.encode(x, region, mask)
    assert all(np.array_equal(u, v) for u, v in zip(ra, rb, strict=True))
    with pytest.raises(ModelError, match=r"Checkpoint .*missing\.pt does not exist"):
        export_encoder(p.parse_args(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(out)]))


def test_pairs_are_temporal_neighbours_of_one_recording(rest_arrays) -> None:
    aug = AugmentConfig()
    sampler = PairSampler([rest_arrays], aug)
    batch = sampler.sample(np.random.default_rng(0), 64)
    lag = (batch.t_a - batch.t_b).abs()
    assert ((lag >= aug.min_lag - 1e-9) & (lag <= aug.max_lag + 1e-9)).all()
    assert torch.equal(batch.segment_a, batch.segment_b)
    assert 2 <= batch.a.x.shape[1] <= 19 and batch.a.x.shape[2] == 250
    assert batch.a.group_mask.shape == (64, 5, batch.a.x.shape[1])
    # Every channel sits in exactly one region group (eegmat names are all 10-20).
    assert torch.all(batch.a.group_mask.sum(1) == 1)


def test_contrastive_loss_rewards_matching_neighbours() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 32
    seg = torch.arange(n).repeat(2)
    t = torch.zeros(2 * n, dtype=torch.float64)
    base = torch.randn(n, 16, generator=gen)
    matched = contrastive(torch.cat([base, base + 0.01 * torch.randn(n, 16, generator=gen)]), seg, t, 8.0, 0.1)
    random = contrastive(torch.randn(2 * n, 16, generator=gen), seg, t, 8.0, 0.1)
    assert matched < 0.2 < random


def test_codebook_restarts_dead_codes() -> None:
    torch.manual_seed(0)
    enc = EEGEncoder(ModelConfig(codebook_size=16))
    cb = Codebook(enc)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(256, 32, generator=gen)
    enc.codebook[:] = torch.nn.functional.normalize(torch.ones(16, 32), dim=-1)  # collapsed: all codes equal
    cb.count.fill_(0.0)
    cb.count[0] = 1.0
    assert perplexity(enc.tokens(z), 16) == 1.0
    assert cb.restart_dead(z, gen) == 15
    assert perplexity(enc.tokens(z), 16) > 8.0


def test_subject_split_and_bad_options(eegmat_dir: Path, tmp_path: Path) -> None:
    sessions = discover_sessions(eegmat_dir)
    train, val = split_subjects(sessions, "auto")
    assert val == ["Subject03", "Subject07", "Subject11", "Subject15", "Subject19", "Subject23"]
    assert len(train) == 18 and not set(train) & set(val)
    with pytest.raises(DataError, match=r"Validation subject.*Subject99.*fix --val-subjects"):
        split_subjects(sessions, "Subject99")
    with pytest.raises(DataError, match="does not exist; pass --data"):
        train_encoder(train_args(tmp_path / "nowhere", tmp_path / "x.onnx"))
    with pytest.raises(ConfigError, match="--steps must be >= 1"):
        train_encoder(train_args(eegmat_dir, tmp_path / "x.onnx", "--steps", "0"))


# ----------------------------------------------------------------------------- several headsets, supervision, CV
FOLD_SUBJECTS = "Subject00,Subject01,Subject02,Subject03"


@pytest.fixture(scope="module")
def muse_dir(eegmat_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-channel Muse-like recording (TP9 AF7 AF8 TP10 at 256 Hz) made from 40 s of real eegmat EEG."""
    import mne
    from scipy.signal import resample_poly

    raw = mne.io.read_raw_edf(eegmat_dir / "Subject05_1.edf", preload=True, verbose="error")
    data = raw.get_data(picks=["EEG T3", "EEG F7", "EEG F8", "EEG T4"])[:, : 40 * 500]
    info = mne.create_info(["TP9", "AF7", "AF8", "TP10"], 256.0, "eeg")
    folder = tmp_path_factory.mktemp("muse")
    mne.io.RawArray(resample_poly(data, 64, 125, axis=1), info, verbose="error").save(
        folder / "sub-901_ses-1_task-cueing_raw.fif", verbose="error"
    )
    return folder


@pytest.fixture(scope="module")
def fold_models(eegmat_dir: Path, muse_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny cross-validation models over Subject00..03 (+ the Muse recording for self-supervision).

    Fold 0 also uses the supervised rest/task term on its training subjects, fold 1 the fixed spectral features.
    """
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("cv")
    out = []
    for k, extra in enumerate((["--supervised-weight", "1"], ["--spectral-bins", "8"])):
        path = folder / f"f{k}.onnx"
        p = argparse.ArgumentParser()
        add_train_arguments(p)
        args = p.parse_args(["--data", str(eegmat_dir), str(muse_dir), "--out", str(path),
                             "--subjects", f"{FOLD_SUBJECTS},sub-901", "--seconds", "30", "--steps", "6",
                             "--pairs", "16", "--eval-every", "3", "--val-subjects", f"fold:{k}/2",
                             "--no-progress", *extra])  # fmt: skip
        assert train_encoder(args) == 0
        out.append(path)
    return out


def test_fold_models_hold_out_their_fold_and_say_what_supervised_them(fold_models: list[Path]) -> None:
    metas = [EncoderModel.load(EncoderSettings(model=p)).model.meta for p in fold_models]
    assert metas[0]["val_subjects"] == "Subject00,Subject02" and metas[1]["val_subjects"] == "Subject01,Subject03"
    assert metas[0]["train_subjects"] == "Subject01,Subject03,sub-901"
    assert metas[0]["supervision"] == "rest/task labels of the training subjects"
    assert "rest/task" in metas[0]["objective"]
    assert metas[1]["supervision"] == "none" and "rest/task" not in metas[1]["objective"]
    card = read_section(fold_models[0].with_suffix(".md"), "training")
    assert card is not None and "rest/task labels of the 2 training subjects" in card
    assert "validation rest/task (state head)" in card and "--supervised-weight 1" in card
    assert "none (no labels used" in str(read_section(fold_models[1].with_suffix(".md"), "training"))
    assert '"spectral_bins": 8' in str(read_section(fold_models[1].with_suffix(".md"), "training"))
    # The codebook travels in the metadata, so token distances can be measured from the ONNX file alone.
    model = EncoderModel.load(EncoderSettings(model=fold_models[0]))
    ckpt = torch.load(fold_models[0].with_suffix(".pt"), weights_only=True)
    assert np.array_equal(model.codebook, ckpt["state_dict"]["codebook"].numpy())


def test_cross_validated_eval_tests_every_subject_once(
    fold_models: list[Path], eegmat_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from brainharmonic_rt.evaluation.encoder import FEATURES, add_eval_arguments, eval_encoder, format_report

    p = argparse.ArgumentParser()
    add_eval_arguments(p)
    out, card = tmp_path / "m.json", tmp_path / "card.md"
    args = p.parse_args(["--data", str(eegmat_dir), "--cv", *map(str, fold_models), "--subjects", FOLD_SUBJECTS,
                         "--json", str(out), "--card", str(card), "--no-progress"])  # fmt: skip
    assert eval_encoder(args) == 0
    r = json.loads(out.read_text())
    assert r["subjects"] == FOLD_SUBJECTS.split(",")
    assert {s: r["per_subject"][s]["fold"] for s in r["subjects"]} == {
        "Subject00": 0, "Subject01": 1, "Subject02": 0, "Subject03": 1,
    }  # fmt: skip
    assert [m["trained_on"] for m in r["models"]] == [2, 2]
    for f in FEATURES:
        per = [r["per_subject"][s][f] for s in r["subjects"]]
        assert r["probe"][f]["mean"] == pytest.approx(np.mean(per), abs=1e-3) and min(per) >= 0.0
    best = max(("bp", "bp_c", "bp_z", "classic"), key=lambda f: r["probe"][f]["mean"])
    assert r["strongest_baseline"] == best
    assert r["targets"]["margin_over_strongest"] == pytest.approx(
        r["probe"]["latent_c"]["mean"] - r["probe"][best]["mean"], abs=1e-3
    )
    assert len(r["codebook"]["perplexity_per_fold"]) == 2
    td = r["token_distance"]
    assert td["subjects"] == 4 and 0.0 <= td["same_state"] <= 2.0 and 0.0 <= td["other_state"] <= 2.0
    assert all("token_same" in r["per_subject"][s] for s in r["subjects"])
    printed = capsys.readouterr().out
    assert "never-seen subjects" in printed and "Subject03 | 1 |" in printed
    assert read_section(card, "metrics") == format_report(r).strip()
    # The same model twice holds out the same subjects twice: not a cross-validation.
    args = p.parse_args(["--data", str(eegmat_dir), "--cv", str(fold_models[0]), str(fold_models[0]),
                         "--subjects", FOLD_SUBJECTS, "--no-progress"])  # fmt: skip
    with pytest.raises(DataError, match="held out by both"):
        eval_encoder(args)


def test_batches_hold_one_headset_and_both_are_drawn(rest_arrays, muse_dir: Path) -> None:
    from brainharmonic_rt.config import SignalSettings as Sig

    files = discover_sessions(muse_dir)[0]
    spec = EncoderSpec(125.0, 250, 32, 64, (1.0, 40.0), 20.0, "test")
    muse = prepare_arrays(open_session(files), Sig(hop=0.5), spec)
    assert muse.x.shape[1:] == (4, 250) and list(muse.region) == [3, 1, 1, 3]  # temporal, frontal
    sampler = PairSampler([rest_arrays, muse], AugmentConfig(p_all_channels=1.0))
    rng = np.random.default_rng(0)
    widths = {sampler.sample(rng, 8).a.x.shape[1] for _ in range(20)}
    assert widths == {4, 19}  # never a 19-channel cap cut down to 4 because one Muse window was drawn


def test_supervised_batches_centre_each_subject_on_its_calibration(eegmat_dir: Path) -> None:
    from brainharmonic_rt.training.supervised import LabelledSampler, SupervisedConfig, centred

    spec = EncoderSpec(125.0, 250, 32, 64, (1.0, 40.0), 20.0, "test")
    sessions = [
        prepare_arrays(open_session(f, seconds=40), SignalSettings(hop=0.5), spec)
        for f in discover_sessions(eegmat_dir, ["Subject00", "Subject01", "Subject02"])
    ]
    cfg = SupervisedConfig(weight=1.0, subjects=2, calibration=3, per_state=4)
    sampler = LabelledSampler(sessions, cfg, AugmentConfig())
    batch = sampler.sample(np.random.default_rng(0))
    assert batch.view.x.shape[0] == 2 * (3 + 2 * 4)
    assert batch.subject.tolist() == [0] * 11 + [1] * 11
    assert batch.state.tolist()[:11] == [-1] * 3 + [0] * 4 + [1] * 4
    z = torch.arange(22, dtype=torch.float32)[:, None].repeat(1, 2)
    u = centred(z, batch.subject, batch.calibration)
    assert u[0, 0] == pytest.approx(-1.0) and u[11, 0] == pytest.approx(-1.0)  # 0 - mean(0, 1, 2); 11 - mean(11..13)
    with pytest.raises(ValueError, match="supervision needs rest\\+task sessions"):
        LabelledSampler([s for s in sessions if False], cfg, AugmentConfig())


def test_spectral_features_are_log_band_powers_of_the_window() -> None:
    """The fixed DFT branch measures a sine's power in the bin holding its frequency, nowhere else."""
    from brainharmonic_rt.training.model import spectral_matrices

    cfg = ModelConfig(spectral_bins=8)
    dft, bins = spectral_matrices(cfg)
    t = torch.arange(cfg.n_samples) / cfg.sfreq
    x = torch.sin(2 * torch.pi * 8.0 * t)[None]  # inside the 6.3-10 Hz bin (10 Hz sits on an edge)
    coef = x @ dft
    n = coef.shape[1] // 2
    power = (coef[:, :n] ** 2 + coef[:, n:] ** 2) @ bins
    edges = np.logspace(0, np.log10(40), 9)
    assert int(power.argmax()) == int(np.searchsorted(edges, 8.0) - 1)
    assert float(power.max()) > 100 * float(power.sort(descending=True).values[0, 1])
