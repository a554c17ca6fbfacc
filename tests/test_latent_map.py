"""Brain → music latent map: distance preservation, ranges, persistence, errors, real encoder latents."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from brainharmonic_rt.brain.latent_map import (
    LatentMap,
    SessionCentre,
    Space,
    bandpower_features,
    distance_spearman,
)
from brainharmonic_rt.errors import DataError, ModelError
from brainharmonic_rt.events import BrainState, GroupState

MODELS = Path(__file__).resolve().parents[1] / "models"


def _clouds(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    brain = (
        rng.normal(size=(500, 6)) * np.array([3.0, 2.0, 1.5, 1.0, 0.5, 0.2]) @ np.linalg.qr(rng.normal(size=(6, 6)))[0]
    )
    music = rng.normal(size=(800, 10)) * np.linspace(2.0, 0.3, 10) + 1.0
    return brain + 5.0, music


def test_similarity_preserves_distance_ranking_exactly() -> None:
    brain, music = _clouds()
    m = LatentMap.fit(brain, music, "similarity", clip=1e9)
    y = m(brain)
    assert y.shape == (500, 10) and y.dtype == np.float32
    assert distance_spearman(brain, y) > 0.999
    # same total variance as the music space over the aligned axes
    sm = Space.of(music).std[:6]
    assert np.isclose(y.var(0, ddof=1).sum(), (sm**2).sum(), rtol=1e-3)


def test_whiten_matches_music_ranges_axis_by_axis() -> None:
    brain, music = _clouds(1)
    m = LatentMap.fit(brain, music, "whiten", clip=1e9)
    y = m(brain)
    ms = Space.of(music)
    coords = (y - ms.mean) @ ms.axes[:6].T
    assert np.allclose(coords.std(0, ddof=1), ms.std[:6], rtol=1e-3)
    assert np.allclose(y.mean(0), ms.mean, atol=1e-3)
    assert distance_spearman(brain, y) > 0.5  # whitening distorts distances when the spectra differ a lot


def test_clip_bounds_outliers() -> None:
    brain, music = _clouds(2)
    m = LatentMap.fit(brain, music, "whiten", clip=2.0)
    far = m(brain.mean(0) + 1e3 * Space.of(brain).axes[0])
    ms = Space.of(music)
    assert np.all(np.abs((far - ms.mean) @ ms.axes[:6].T) <= 2.0 * ms.std[:6] + 1e-4)


def test_save_load_roundtrip(tmp_path: Path) -> None:
    brain, music = _clouds(3)
    m = LatentMap.fit(brain, music, "similarity")
    loaded = LatentMap.load(m.save(tmp_path / "map.npz"))
    assert loaded.scaling == "similarity"
    assert np.allclose(loaded(brain[:5]), m(brain[:5]))


def test_centred_flag_round_trips_and_old_files_read_as_raw(tmp_path: Path) -> None:
    brain, music = _clouds(5)
    m = LatentMap.fit(brain, music, centred=True)
    assert LatentMap.load(m.save(tmp_path / "c.npz")).centred
    raw = LatentMap.fit(brain, music)
    raw.save(tmp_path / "r.npz")
    d = dict(np.load(tmp_path / "r.npz"))
    d.pop("centred")
    np.savez(tmp_path / "old.npz", **d)  # a map saved before the flag existed
    assert not LatentMap.load(tmp_path / "old.npz").centred


def test_session_centre_uses_calibration_then_freezes() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)) + np.array([5.0, -3.0, 0.0, 1.0])  # one person's offset
    cal = np.zeros(300, bool)
    cal[:40] = True
    out = SessionCentre.apply_to(x, cal)
    assert np.allclose(out[40:], x[40:] - x[:40].mean(0))  # the calibration mean, frozen afterwards
    assert np.abs(out[40:].mean(0)).max() < 0.5
    # no calibration windows: the mean of the first `warmup` windows, growing until then
    out = SessionCentre.apply_to(x, np.zeros(300, bool), warmup=50)
    assert np.allclose(out[0], 0.0)
    assert np.allclose(out[49], x[49] - x[:50].mean(0))
    assert np.allclose(out[200:], x[200:] - x[:50].mean(0))
    c = SessionCentre()
    c.observe(np.full(4, np.nan), True)  # NaN windows are ignored
    c.observe(np.ones(4), True, index=7)
    c.observe(np.ones(4) * 3, True, index=7)  # the same window again (another voice): counted once
    assert c.n == 1 and np.allclose(c(np.ones(4)), 0.0)


def test_centred_map_removes_a_session_offset() -> None:
    """Two people whose latents differ by a constant land in the same music region once centred."""
    rng = np.random.default_rng(1)
    state = rng.normal(size=(400, 6))
    cal = np.zeros(400, bool)
    cal[:60] = True
    a, b = state + 4.0, state - 4.0
    fit = np.concatenate([SessionCentre.apply_to(s, cal)[~cal] for s in (a, b)])
    m = LatentMap.fit(fit, rng.normal(size=(500, 8)), centred=True)
    ya, yb = (m(SessionCentre.apply_to(s, cal)[~cal]) for s in (a, b))
    assert np.allclose(ya, yb, atol=1e-5)
    raw = LatentMap.fit(np.concatenate([a, b]), rng.normal(size=(500, 8)))
    assert not np.allclose(raw(a[~cal]), raw(b[~cal]), atol=0.5)


def test_errors(tmp_path: Path) -> None:
    brain, music = _clouds(4)
    m = LatentMap.fit(brain, music)
    with pytest.raises(DataError, match="expects 6"):
        m(np.zeros(5))
    with pytest.raises(DataError, match="at least two finite"):
        LatentMap.fit(np.full((3, 4), np.nan), music)
    with pytest.raises(ModelError, match="does not exist"):
        LatentMap.load(tmp_path / "none.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ModelError, match="not a latent map"):
        LatentMap.load(tmp_path / "other.npz")


def test_bandpower_features_are_the_bands_the_brain_computes() -> None:
    """House-issue defect: the features listed five bands (delta..gamma) while the brain computes three, so two
    inputs were always 0 and the music latent's largest-variance axes never moved."""
    g = GroupState("frontal", {}, {"theta": 0.5, "alpha": 1.0, "beta": -2.0}, 3)
    assert bandpower_features(g).tolist() == [0.5, 1.0, -2.0]
    s = BrainState(0, 1.0, 1.0, (g, GroupState("x", {}, {"theta": 0.0, "alpha": 3.0, "beta": 0.0}, 2)), False)
    assert bandpower_features(s, ("alpha", "beta")).tolist() == [2.0, -1.0]


@pytest.mark.skipif(not (MODELS / "encoder.onnx").is_file(), reason="no committed encoder")
def test_real_encoder_latents_keep_distances(eegmat_dir: Path) -> None:
    """Encoder latents of one real session, map fitted on its first half, checked on the second."""
    from brainharmonic_rt.config import Settings
    from brainharmonic_rt.evaluation.embed import embed_source
    from brainharmonic_rt.evaluation.sessions import discover_sessions, open_session

    session = discover_sessions(eegmat_dir, ["Subject00"])[0]
    e = asyncio.run(embed_source(open_session(session, seconds=120).source, Settings()))
    x = e.global_latent[~e.calibrating]
    half = x.shape[0] // 2
    music = np.random.default_rng(0).normal(size=(2000, x.shape[1])) * np.linspace(1.5, 0.5, x.shape[1])
    m = LatentMap.fit(x[:half], music, "similarity")
    assert distance_spearman(x[half:], m(x[half:])) > 0.9
