"""The learned encoder at run time: the committed ONNX model on real eegmat EEG, via onnxruntime only."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

from brainharmonic_rt.brain.classic import ClassicBrain
from brainharmonic_rt.brain.encoder import DEFAULT_MODEL, EncoderModel, LearnedBrain, region_ids
from brainharmonic_rt.config import BandSettings, EncoderSettings, Settings, SignalSettings, load_settings
from brainharmonic_rt.errors import ConfigError, ModelError
from brainharmonic_rt.evaluation.embed import embed
from brainharmonic_rt.events import SignalInfo, Window
from brainharmonic_rt.onnx_models import choose_providers, open_model
from brainharmonic_rt.signal import SignalChain
from brainharmonic_rt.sources.files import ArraySource, open_recordings


@pytest.fixture(scope="module")
def model() -> EncoderModel:
    return EncoderModel.load(EncoderSettings(threads=1))


@pytest.fixture(scope="module")
def rest30(eegmat_dir: Path) -> ArraySource:
    """30 s of Subject00's rest recording (19 EEG channels at 500 Hz)."""
    return open_recordings([eegmat_dir / "Subject00_1.edf"], seconds=30)


def windows_of(info: SignalInfo, data: np.ndarray, signal: SignalSettings | None = None) -> list[Window]:
    chain = SignalChain(info, signal or SignalSettings())
    stamps = np.arange(data.shape[1]) / info.sfreq
    from brainharmonic_rt.events import Chunk

    out: list[Window] = []
    for a in range(0, data.shape[1], 50):
        out += chain.push(Chunk(np.ascontiguousarray(data[:, a : a + 50]), stamps[a : a + 50]))
    return out


def run_brain(brain: LearnedBrain, windows: list[Window]) -> list:
    return [brain.process(w) for w in windows]


# ----------------------------------------------------------------------------- the committed model


def test_committed_model_loads_with_metadata(model: EncoderModel) -> None:
    spec = model.spec
    assert model.model.path == DEFAULT_MODEL
    assert spec.sfreq == 125 and spec.n_samples == 250 and spec.window_s == 2.0
    assert spec.codebook_size == 64 and spec.latent_dim == 32
    assert model.model.provider == "CPUExecutionProvider" or "CUDA" in model.model.provider
    meta = model.model.meta
    # The shipped model trains on every eegmat subject; its unseen-subject figures come from the
    # cross-validation models of the same recipe, which its card must name.
    assert meta["train_subjects"] and "val_subjects" in meta
    if not meta["val_subjects"]:
        assert "--val-subjects fold:K/4" in (DEFAULT_MODEL.parent / "encoder.md").read_text()
    assert DEFAULT_MODEL.stat().st_size < 5 * 2**20
    assert (DEFAULT_MODEL.parent / "encoder.md").is_file()


def test_learned_brain_fills_latents_and_keeps_classic_fields(model: EncoderModel, rest30: ArraySource) -> None:
    info, sig, bands = rest30.info, SignalSettings(), BandSettings()
    windows = windows_of(info, rest30.data, sig)
    learned = run_brain(LearnedBrain(info, sig, bands, model=model), windows)
    classic_brain = ClassicBrain(info, sig, bands)
    classic = [classic_brain.process(w) for w in windows]
    assert len(learned) == len(windows) == 113  # (30 s - 2 s) / 0.25 s + 1
    for lstate, cstate in zip(learned, classic, strict=True):
        assert lstate.latent is not None and lstate.latent.shape == (32,) and np.isfinite(lstate.latent).all()
        assert lstate.token is not None and 0 <= lstate.token < 64
        assert [g.name for g in lstate.groups] == [g.name for g in cstate.groups]
        for lg, cg in zip(lstate.groups, cstate.groups, strict=True):
            assert lg.power == cg.power and lg.z == cg.z  # the classic composer sees exactly the same
            assert lg.latent is not None and lg.latent.shape == (32,)
    # Latents move with the signal: not the same vector for every window.
    lat = np.stack([s.latent for s in learned])
    assert lat.std(axis=0).mean() > 1e-3
    assert not np.allclose(learned[0].group("frontal").latent, learned[0].group("occipital").latent)


def test_stats_report_the_encoder(model: EncoderModel, rest30: ArraySource) -> None:
    brain = LearnedBrain(rest30.info, SignalSettings(), BandSettings(), model=model)
    run_brain(brain, windows_of(rest30.info, rest30.data[:, :3000]))
    stats = brain.stats()
    assert stats["encoder"]["encoded"] == 17 and stats["encoder"]["resampling"].startswith("decimate by 4")
    assert set(stats["groups"]) == {"frontal", "central", "temporal", "parietal", "occipital"}


def test_same_model_takes_4_19_and_64_channels(model: EncoderModel, rest30: ArraySource) -> None:
    info, data = rest30.info, rest30.data[:, :5000]
    pick = [info.ch_names.index(n) for n in ("EEG Fp1", "EEG C3", "EEG O1", "EEG Pz")]
    four = SignalInfo("four", info.sfreq, tuple(info.ch_names[i] for i in pick))
    st4 = run_brain(LearnedBrain(four, SignalSettings(), BandSettings(), model=model), windows_of(four, data[pick]))
    assert all(s.latent is not None and np.isfinite(s.latent).all() for s in st4)
    assert {g.name for g in st4[0].groups} == {"frontal", "central", "occipital", "parietal"}
    # A 64-channel cap: the real channels tiled under 10-10 names.
    names64 = [
        n
        for row in (
            "Fp1 Fp2 AF3 AF4 AF7 AF8 F1 F2 F3 F4 F5 F6 F7 F8 Fz FC1 FC2 FC3 FC4 FC5 FC6 FCz",
            "C1 C2 C3 C4 C5 C6 Cz CP1 CP2 CP3 CP4 CP5 CP6 CPz T7 T8 FT7 FT8 TP7 TP8",
            "P1 P2 P3 P4 P5 P6 P7 P8 Pz PO3 PO4 PO7 PO8 POz O1 O2 Oz FT9 FT10 TP9 TP10 Iz",
        )
        for n in row.split()
    ]
    assert len(names64) == 64
    big = SignalInfo("cap64", info.sfreq, tuple(names64))
    data64 = data[np.arange(64) % data.shape[0]] * (1 + 0.01 * np.arange(64))[:, None]
    st64 = run_brain(LearnedBrain(big, SignalSettings(), BandSettings(), model=model), windows_of(big, data64))
    assert all(s.latent is not None and np.isfinite(s.latent).all() for s in st64)
    assert len(st64[0].groups) == 5 and all(g.latent is not None for g in st64[0].groups)


def test_bad_channels_are_dropped_not_encoded(model: EncoderModel, rest30: ArraySource) -> None:
    info, data = rest30.info, rest30.data[:, :4000].copy()
    occ = [info.ch_names.index("EEG O1"), info.ch_names.index("EEG O2")]
    data[occ, 1500:] = np.nan  # the occipital group dies after 3 s
    states = run_brain(LearnedBrain(info, SignalSettings(), BandSettings(), model=model), windows_of(info, data))
    first, last = states[0], states[-1]
    assert first.group("occipital").latent is not None
    assert last.group("occipital").latent is None and last.group("occipital").n_good == 0
    assert last.latent is not None and np.isfinite(last.latent).all()
    assert all(g.latent is not None for g in last.groups if g.name != "occipital")
    # Every channel gone: no latent, no token, classic fields still there.
    dead = np.full_like(data, np.nan)
    st = run_brain(LearnedBrain(info, SignalSettings(), BandSettings(), model=model), windows_of(info, dead))
    assert st and all(s.latent is None and s.token is None for s in st)
    assert all(len(s.groups) == 5 for s in st)


def test_other_rates_are_resampled_to_the_same_latents(model: EncoderModel, rest30: ArraySource) -> None:
    """A 256 Hz copy of the same EEG (polyphase path) lands where the 500 Hz original (decimation) does."""
    info, data = rest30.info, rest30.data
    ref = run_brain(LearnedBrain(info, SignalSettings(), BandSettings(), model=model), windows_of(info, data))
    slow = SignalInfo("slow", 256.0, info.ch_names)
    data256 = resample_poly(data, 64, 125, axis=1)
    brain = LearnedBrain(slow, SignalSettings(), BandSettings(), model=model)
    assert brain.input.resampling == "polyphase 125/256"
    got = run_brain(brain, windows_of(slow, data256))
    # Window k ends 2 s + k hops after the start at both rates (to within one sample).
    assert len(got) == len(ref) and abs(got[-1].t_end - ref[-1].t_end) < 0.005
    pairs = [(r.latent, g.latent) for r, g in zip(ref, got, strict=True)][20:]
    a = np.stack([p[0] for p in pairs])
    b = np.stack([p[1] for p in pairs])
    same = np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
    shuffled = np.mean(np.sum(a * b[::-1], 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b[::-1], axis=1))
    assert same > 0.99 > shuffled


@pytest.mark.parametrize(
    ("sfreq", "signal", "pattern"),
    [
        (1.389, {}, r"too slow for the EEG encoder.*--mode classic"),
        (500.0, {"window": 1.0, "hop": 0.25}, r"\[signal\] window = 1 s is shorter than the 2 s"),
        (500.0, {"bandpass": (0.5, 30.0)}, r"bandpass = \[1, 40\]"),
        (500.0, {"bandpass": None}, r"bandpass = None differs"),
    ],
)
def test_streams_the_model_cannot_serve_get_one_clear_error(
    model: EncoderModel, sfreq: float, signal: dict, pattern: str
) -> None:
    info = SignalInfo("s", sfreq, ("Fp1", "Cz", "O1"))
    with pytest.raises(ModelError, match=pattern):
        LearnedBrain(info, SignalSettings(**signal), BandSettings(), model=model)


def test_unnamed_channels_use_fallback_groups(model: EncoderModel, rest30: ArraySource) -> None:
    info = SignalInfo("anon", 500.0, tuple(f"ch{i}" for i in range(19)))
    assert (region_ids(info.ch_names) == 0).all()
    states = run_brain(LearnedBrain(info, SignalSettings(), BandSettings(), model=model),
                       windows_of(info, rest30.data[:, :3000]))  # fmt: skip
    assert [g.name for g in states[0].groups] == ["group1", "group2", "group3", "group4"]
    assert all(g.latent is not None for g in states[-1].groups) and states[-1].token is not None


# ----------------------------------------------------------------------------- loading errors


def test_missing_and_corrupt_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nowhere\.onnx does not exist; train one with `brainharmonic train encoder"):
        EncoderModel.load(EncoderSettings(model=tmp_path / "nowhere.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all" * 10)
    with pytest.raises(ModelError, match=r"Could not load .*junk\.onnx as an ONNX model"):
        EncoderModel.load(EncoderSettings(model=junk))
    with pytest.raises(ConfigError, match="threads must be an integer from 1 to 256"):
        open_model(DEFAULT_MODEL, kind="eeg-encoder", threads=0)


def _rewrite_meta(tmp_path: Path, changes: dict[str, str | None]) -> Path:
    import onnx

    model = onnx.load(str(DEFAULT_MODEL))
    props = {p.key: p.value for p in model.metadata_props}
    for k, v in changes.items():
        if v is None:
            props.pop(k, None)
        else:
            props[k] = v
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    out = tmp_path / "edited.onnx"
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        (
            {"brainharmonic.kind": "music-generator"},
            r"is a 'music-generator' model, not a 'eeg-encoder' model",
        ),
        ({"brainharmonic.kind": None}, r"not a brainharmonic model"),
        ({"brainharmonic.format": "9"}, r"uses model format '9' but this brainharmonic reads format 1"),
        ({"sfreq": None}, r"lacks the metadata sfreq"),
        ({"sfreq": "fast"}, r"malformed encoder metadata"),
        ({"regions": "unknown,left,right"}, r"trained with regions"),
    ],
)
def test_metadata_that_does_not_fit_is_refused(tmp_path: Path, changes: dict, pattern: str) -> None:
    with pytest.raises(ModelError, match=pattern):
        EncoderModel.load(EncoderSettings(model=_rewrite_meta(tmp_path, changes)))


def test_provider_choice() -> None:
    import onnxruntime as ort

    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert choose_providers("auto")[0] == "CUDAExecutionProvider"
    else:
        assert choose_providers("auto") == ["CPUExecutionProvider"]
        with pytest.raises(ModelError, match=r"no CUDA provider.*install onnxruntime-gpu"):
            choose_providers("cuda")


def test_encoder_settings_are_validated() -> None:
    assert load_settings(encoder={"threads": 2}).encoder.threads == 2
    with pytest.raises(ConfigError, match=r"encoder\.threads"):
        load_settings(encoder={"threads": 0})


# ----------------------------------------------------------------------------- embed


def test_embed_writes_times_latents_groups_tokens(eegmat_dir: Path, tmp_path: Path) -> None:
    source = open_recordings([eegmat_dir / "Subject01_1.edf"], seconds=30)
    out = tmp_path / "lat.npz"
    res = embed(source, Settings(), out)
    z = np.load(out)
    n = 113  # (30 - 2) / 0.25 + 1
    assert z["times"].shape == (n,) and np.allclose(z["times"], 2.0 - 1 / 500 + 0.25 * np.arange(n))
    assert z["global_latent"].shape == (n, 32) and np.isfinite(z["global_latent"]).all()
    assert z["group_latents"].shape == (n, 5, 32)
    assert list(z["group_names"]) == ["frontal", "central", "temporal", "parietal", "occipital"]
    assert z["tokens"].dtype == np.int64 and ((z["tokens"] >= 0) & (z["tokens"] < 64)).all()
    assert str(z["model_version"]) == res.model_version and z["calibrating"][0] and not z["calibrating"][-1]


def test_embed_matches_the_live_brain(eegmat_dir: Path, tmp_path: Path, model: EncoderModel) -> None:
    """embed goes through the same chain and brain as a live run: identical latents."""
    source = open_recordings([eegmat_dir / "Subject01_1.edf"], seconds=6)
    info, data = source.info, source.data.copy()
    res = embed(source, Settings(), tmp_path / "x.npz", model=model)
    direct = run_brain(LearnedBrain(info, SignalSettings(), BandSettings(), model=model), windows_of(info, data))
    assert np.allclose(res.global_latent, np.stack([s.latent for s in direct]), atol=1e-6)


def test_embed_input_shorter_than_a_window(eegmat_dir: Path, tmp_path: Path) -> None:
    from brainharmonic_rt.errors import DataError

    source = open_recordings([eegmat_dir / "Subject01_1.edf"], seconds=1)
    with pytest.raises(DataError, match="shorter than one 2 s window"):
        embed(source, Settings(), tmp_path / "x.npz")


def test_runtime_never_imports_torch() -> None:
    code = (
        "import sys, brainharmonic_rt.brain.encoder, brainharmonic_rt.evaluation.embed, "
        "brainharmonic_rt.evaluation.encoder, brainharmonic_rt.onnx_models, brainharmonic_rt.training; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_async_embed_source_is_reusable_in_a_running_loop(eegmat_dir: Path, model: EncoderModel) -> None:
    from brainharmonic_rt.evaluation.embed import embed_source

    source = open_recordings([eegmat_dir / "Subject02_1.edf"], seconds=4)
    res = asyncio.run(embed_source(source, Settings(), model=model))
    assert res.times.size == 9 and res.group_latents.shape == (9, 5, 32)
