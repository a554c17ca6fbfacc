"""The learned fMRI encoder: a tiny real training run (repo command), the committed ONNX model in the
runtime (onnxruntime), `embed` and `render --mode learned` on a real HCP run, and clear refusals."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainharmonic_rt.brain.fmri_encoder import DEFAULT_MODEL, FmriEncoderModel, FmriLearnedBrain
from brainharmonic_rt.brain.latent_map import LatentMap
from brainharmonic_rt.config import EncoderSettings
from brainharmonic_rt.errors import ModelError
from brainharmonic_rt.events import SignalInfo
from brainharmonic_rt.networks import hcp_region_names
from brainharmonic_rt.pipeline import Engine
from brainharmonic_rt.sources.fmri import fmri_settings, open_fmri

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "fmri"
RUN = DATA / "100206" / "tfMRI_MOTOR_LR.npy"


def bh(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "brainharmonic_rt.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def model() -> FmriEncoderModel:
    if not RUN.is_file():
        pytest.fail(f"{RUN} is missing; the shared data folder should be beside the repository.")
    return FmriEncoderModel.load()


def test_committed_model_and_its_latent_map(model: FmriEncoderModel) -> None:
    spec = model.spec
    assert spec.n_regions == 379 and spec.latent_dim == 32 and spec.tr == pytest.approx(0.72)
    assert model.model.meta["test_subjects"]  # held-out subjects are recorded for `eval fmri-encoder`
    lmap = LatentMap.load(model.latent_map_path)
    assert lmap.brain_dim == 32 and lmap.centred
    assert DEFAULT_MODEL.stat().st_size < 5 * 2**20


def test_engine_learned_mode_plays_fmri_with_latents_tokens_and_its_map(model: FmriEncoderModel) -> None:
    settings = fmri_settings(music={"mode": "learned", "seed": 1})
    source = open_fmri(RUN)
    engine = Engine(source.info, settings)
    assert isinstance(engine.brain, FmriLearnedBrain)
    assert engine.composer.latent_map is not None and engine.composer.latent_map.brain_dim == 32
    assert list(engine.instruments) == list(engine.brain.groups) and len(engine.instruments) == 8

    async def play() -> tuple[list, list]:
        states, notes = [], []
        async with source:
            async for chunk in source.chunks():
                for window in engine.windows(chunk):
                    state, new = engine.step(window)
                    states.append(state)
                    notes += new
        return states, notes

    states, notes = asyncio.run(play())
    assert len(states) > 50 and all(s.latent is not None and np.isfinite(s.latent).all() for s in states)
    assert all(g.latent is not None for g in states[-1].groups)
    assert all(s.token is not None and 0 <= s.token < model.spec.codebook_size for s in states)
    assert len(notes) > 50 and len({n.channel for n in notes}) >= 4


def test_other_layouts_are_refused_in_learned_mode(model: FmriEncoderModel) -> None:
    info = SignalInfo("schaefer", 1 / 0.72, tuple(f"R{i:03d}" for i in range(1, 101)), stype="fMRI")
    s = fmri_settings()
    with pytest.raises(ModelError, match=r"reads the 379 HCP-MMP1 regions .* has 100 regions; use --mode classic"):
        FmriLearnedBrain(info, s.signal, s.bands, model=model)
    names = hcp_region_names()
    slow = SignalInfo("slow", 0.5, names, stype="fMRI")
    with pytest.raises(ModelError, match=r"TR 2 s but the fMRI encoder was trained at TR 0.72 s"):
        FmriLearnedBrain(slow, s.signal, s.bands, model=model)
    with pytest.raises(ModelError, match=r"bandpass = \[0.008, 0.25\]"):
        other = s.signal.model_copy(update={"bandpass": (0.01, 0.1)})
        FmriLearnedBrain(SignalInfo("x", 1 / 0.72, names, stype="fMRI"), other, s.bands, model=model)
    with pytest.raises(ModelError, match=r"missing\.onnx does not exist; train one with `brainharmonic train fmri-enc"):
        FmriEncoderModel.load(EncoderSettings(fmri_model=Path("fmri_encoder_missing.onnx")))


def test_embed_cli_writes_latents_for_an_fmri_run(tmp_path: Path) -> None:
    out = tmp_path / "x.npz"
    r = bh("embed", str(RUN), "--tr", "0.72", "--out", str(out))
    assert r.returncode == 0, r.stderr
    z = np.load(out)
    n = z["times"].size
    assert n == (284 - 139) // 2 + 1 and z["global_latent"].shape == (n, 32) and z["tokens"].shape == (n,)
    assert z["group_latents"].shape == (n, 8, 32) and str(z["group_names"][0]) == "visual"
    assert np.isfinite(z["global_latent"]).all() and (z["tokens"] >= 0).all()


def test_tiny_training_run_then_eval(tmp_path: Path) -> None:
    """`train fmri-encoder` for a few steps on 3 subjects (one held out), then `eval fmri-encoder` on it."""
    data = tmp_path / "data"
    data.mkdir()
    for subject in ("100206", "100307", "100408"):
        (data / subject).symlink_to(DATA / subject)
    out = tmp_path / "m" / "fmri_encoder.onnx"
    r = bh("train", "fmri-encoder", "--data", str(data), "--out", str(out), "--steps", "3", "--per-run", "2",
           "--test-subjects", "100408", "--codebook-size", "8")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out.is_file() and (out.parent / "fmri_encoder_latent_map.npz").is_file()
    card = (out.parent / "fmri_encoder.md").read_text()
    assert "Held out of all training (1): 100408" in card and "100206, 100307" in card
    r = bh(
        "eval", "fmri-encoder", "--data", str(data), "--model", str(out), "--card", str(out.parent / "fmri_encoder.md")
    )
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("| 100408"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert all(0.0 <= float(v) <= 1.0 for v in cells[3:7]), row
    assert "## Metrics" in (out.parent / "fmri_encoder.md").read_text()
