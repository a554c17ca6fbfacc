"""fMRI inputs: CIFTI .ptseries.nii and 4D NIfTI (atlas or data-driven regions), built here with nibabel
from the shipped HCP region signals; replay refuses fMRI with a sentence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainharmonic_rt.errors import DataError
from brainharmonic_rt.networks import hcp_region_names
from brainharmonic_rt.signal.channels import group_channels
from brainharmonic_rt.sources.fmri import fmri_kind, open_fmri
from brainharmonic_rt.sources.player import Replay, load_recording

RUN = Path(__file__).resolve().parents[2] / "shared" / "data" / "fmri" / "100206" / "tfMRI_MOTOR_LR.npy"
N_ATLAS = 12


@pytest.fixture(scope="module")
def signals() -> np.ndarray:
    if not RUN.is_file():
        pytest.fail(f"{RUN} is missing; the shared data folder should be beside the repository.")
    return np.load(RUN)[:80].astype(np.float32)  # (volumes, 379)


def write_ptseries(path: Path, data: np.ndarray, names: list[str], tr: float = 0.72) -> Path:
    """A CIFTI-2 parcellated time series: one voxel per parcel, a SECOND series axis with step ``tr``."""
    n = len(names)
    parcels = nib.cifti2.ParcelsAxis(
        np.asarray(names), [np.array([[i, 0, 0]]) for i in range(n)], [{} for _ in range(n)], np.eye(4), (n, 1, 1), {}
    )
    header = nib.cifti2.Cifti2Header.from_axes((nib.cifti2.SeriesAxis(0.0, tr, data.shape[0]), parcels))
    nib.save(nib.Cifti2Image(data, header), path)
    return path


def write_nifti(folder: Path, signals: np.ndarray, tr: float | None = 0.72) -> tuple[Path, Path]:
    """A small 4D image whose voxels carry the first N_ATLAS region signals (+ 1 % noise), and its label atlas."""
    labels = np.zeros((8, 3, 3), np.int16)
    labels.flat[: 6 * N_ATLAS] = np.repeat(np.arange(1, N_ATLAS + 1), 6)
    rng = np.random.default_rng(0)
    vol = np.zeros((*labels.shape, signals.shape[0]), np.float32)
    for k in range(1, N_ATLAS + 1):
        inside = labels == k
        vol[inside] = signals[:, k - 1] + 0.01 * rng.standard_normal((int(inside.sum()), signals.shape[0]))
    img = nib.Nifti1Image(vol, np.eye(4))
    if tr is not None:
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = tr
    nib.save(img, folder / "run.nii.gz")
    nib.save(nib.Nifti1Image(labels, np.eye(4)), folder / "atlas.nii.gz")
    return folder / "run.nii.gz", folder / "atlas.nii.gz"


def test_kinds() -> None:
    assert [fmri_kind(n) for n in ("a.npy", "a.ptseries.nii", "a.nii", "a.NII.GZ", "a.edf")] == [
        "npy", "cifti", "nifti", "nifti", None
    ]  # fmt: skip


def test_cifti_ptseries_keeps_names_tr_and_values(tmp_path: Path, signals: np.ndarray) -> None:
    names = [f"{n}_ROI" for n in hcp_region_names()]
    src = open_fmri(write_ptseries(tmp_path / "run.ptseries.nii", signals, names))
    assert src.info.stype == "fMRI" and src.info.sfreq == pytest.approx(1 / 0.72)
    assert src.info.ch_names[0] == "L_V1_ROI" and src.info.name == "run"
    np.testing.assert_allclose(src.data, signals.T, atol=1e-6)
    assert len(group_channels(src.info.ch_names)) == 8  # MMP parcel names → the eight network instruments
    assert open_fmri(tmp_path / "run.ptseries.nii", tr=2.0).info.sfreq == pytest.approx(0.5)  # --tr wins


def test_nifti_with_atlas_recovers_the_region_signals(tmp_path: Path, signals: np.ndarray) -> None:
    run, atlas = write_nifti(tmp_path, signals)
    src = open_fmri(run, atlas=atlas)
    assert src.info.ch_names == tuple(f"R{k:03d}" for k in range(1, N_ATLAS + 1))
    assert src.info.sfreq == pytest.approx(1 / 0.72, rel=1e-6)
    np.testing.assert_allclose(src.data, signals[:, :N_ATLAS].T, atol=0.02)


def test_nifti_with_data_driven_regions(tmp_path: Path, signals: np.ndarray) -> None:
    run, _ = write_nifti(tmp_path, signals)
    src = open_fmri(run, regions=4)
    assert src.info.ch_names == ("P001", "P002", "P003", "P004") and src.data.shape == (4, signals.shape[0])
    # each parcel is a mix of whole regions: it follows at least one of them closely
    corr = np.corrcoef(np.vstack([src.data, signals[:, :N_ATLAS].T]))[:4, 4:]
    assert (corr.max(axis=1) > 0.8).all(), corr.max(axis=1)


def test_nifti_errors(tmp_path: Path, signals: np.ndarray) -> None:
    run, atlas = write_nifti(tmp_path, signals, tr=None)
    with pytest.raises(DataError, match=r"pass --atlas LABELS\.nii\.gz .* or --regions N"):
        open_fmri(run)
    with pytest.raises(DataError, match=r"does not say its repetition time; pass it with --tr"):
        open_fmri(run, atlas=atlas)
    assert open_fmri(run, atlas=atlas, tr=1.5).info.sfreq == pytest.approx(1 / 1.5)
    with pytest.raises(DataError, match=r"Atlas .*nope\.nii\.gz does not exist"):
        open_fmri(run, atlas=tmp_path / "nope.nii.gz")
    with pytest.raises(DataError, match=r"--regions 500 cannot be made from 72 voxels"):
        open_fmri(run, regions=500)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "three_d.nii")
    with pytest.raises(DataError, match=r"must be a 4D NIfTI"):
        open_fmri(tmp_path / "three_d.nii", regions=2)
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"Could not read .*junk\.nii\.gz as a NIfTI image"):
        open_fmri(tmp_path / "junk.nii.gz", regions=2)
    with pytest.raises(DataError, match=r"--atlas applies to a 4D NIfTI input"):
        open_fmri(write_ptseries(tmp_path / "p.ptseries.nii", signals[:, :3], ["a", "b", "c"]), atlas=atlas)


def test_replay_refuses_fmri_with_a_sentence(tmp_path: Path, signals: np.ndarray) -> None:
    """An fMRI run is ~1.4 Hz; `run` accepts LSL streams from 125 Hz, so replaying it live is refused."""
    for path in (RUN, write_ptseries(tmp_path / "r.ptseries.nii", signals[:, :3], ["a", "b", "c"])):
        with pytest.raises(DataError, match=r"is fMRI .*must be sampled at 125 Hz or more.*brainharmonic render"):
            load_recording(path)
        with pytest.raises(DataError, match="cannot be replayed live"):
            Replay(path, name="never").start()


def test_render_cli_nifti_with_atlas_and_labels(tmp_path: Path, signals: np.ndarray) -> None:
    """`render RUN.nii.gz --atlas ... --labels ...`: the labelled networks become the instruments."""
    import mido

    long = np.tile(signals, (4, 1))  # 320 volumes (230 s): past the preset's 100 s window and 150 s baseline
    run, atlas = write_nifti(tmp_path, long)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "region,network\n" + "".join(f"R{k:03d},{'Vis' if k <= 6 else 'Default'}\n" for k in range(1, 13))
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = tmp_path / "n.mid"
    cmd = [sys.executable, "-m", "brainharmonic_rt.cli", "render", str(run), "--atlas", str(atlas), "--out", str(out)]
    r = subprocess.run([*cmd, "--labels", str(labels)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "12 channels" in r.stdout
    tracks = {t.name for t in mido.MidiFile(out).tracks}
    assert {"visual", "default"} <= tracks, tracks
    r = subprocess.run([*cmd, "--labels", str(tmp_path / "none.csv")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "none.csv cannot be read" in r.stderr and "Traceback" not in r.stderr
    edf = Path(__file__).resolve().parents[2] / "shared" / "data" / "eeg" / "eegmat" / "Subject00_1.edf"
    r = subprocess.run(
        [*cmd[:4], str(edf), "--regions", "3", "--out", str(out)], capture_output=True, text=True, env=env
    )
    assert r.returncode == 2 and "--regions applies to fMRI inputs" in r.stderr
