"""Reading recordings from disk: real eegmat EDF, formats written from it, BIDS, fMRI, bad files."""

from __future__ import annotations

import asyncio
import importlib.util
import warnings
from pathlib import Path

import mne
import numpy as np
import pytest

from brainharmonic_rt.errors import DataError
from brainharmonic_rt.events import SignalInfo
from brainharmonic_rt.sources.base import Source
from brainharmonic_rt.sources.files import ArraySource, BIDSSelector, open_recordings, pick_signal, read_raw
from brainharmonic_rt.sources.fmri import read_fmri

FMRI = Path(__file__).resolve().parents[2] / "shared" / "data" / "fmri" / "100206" / "rfMRI_REST1_LR.npy"
EEG_NAMES = ["Fp1", "Fp2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4"]
EEG_NAMES += ["T5", "T6", "P3", "P4", "O1", "O2", "Fz", "Cz", "Pz"]


@pytest.fixture(scope="module")
def rest(eegmat_dir: Path) -> Path:
    return eegmat_dir / "Subject00_1.edf"


@pytest.fixture(scope="module")
def task(eegmat_dir: Path) -> Path:
    return eegmat_dir / "Subject00_2.edf"


@pytest.fixture(scope="module")
def segment(rest: Path) -> mne.io.BaseRaw:
    """The first 5 s of a real eegmat recording, EEG only."""
    return pick_signal(read_raw(rest)).crop(0, 5, include_tmax=False)


# -- EDF and the formats written from it ----------------------------------------------------
def test_read_eegmat_edf_and_pick_eeg(rest: Path) -> None:
    raw = read_raw(rest)
    assert raw.info["sfreq"] == 500.0 and len(raw.ch_names) == 21
    assert raw.times[-1] > 170
    picked = pick_signal(raw)
    assert picked.ch_names == [f"EEG {n}" for n in EEG_NAMES]
    data = picked.get_data()
    assert np.isfinite(data).all() and 1e-7 < np.median(np.std(data, axis=1)) < 1e-3  # volts


def test_pick_signal_when_everything_is_typed_eeg() -> None:
    names = ["Fp1", "Cz", "EOG1", "ECG", "A1", "M2", "Status", "EMG chin", "TRIGGER", "Oz"]
    raw = mne.io.RawArray(np.zeros((len(names), 10)), mne.create_info(names, 100.0, "eeg"), verbose="error")
    assert pick_signal(raw).ch_names == ["Fp1", "Cz", "Oz"]


def test_pick_signal_keeps_eeg_typed_channels_only() -> None:
    info = mne.create_info(["C3", "C4", "STI 014", "ECG1"], 100.0, ["eeg", "eeg", "stim", "ecg"])
    raw = mne.io.RawArray(np.zeros((4, 10)), info, verbose="error")
    assert pick_signal(raw).ch_names == ["C3", "C4"]


def test_pick_signal_without_eeg_is_a_data_error() -> None:
    raw = mne.io.RawArray(np.zeros((2, 10)), mne.create_info(["ECG", "Status"], 100.0, "eeg"), verbose="error")
    with pytest.raises(DataError, match="No EEG channels left"):
        pick_signal(raw)


def _write(raw: mne.io.BaseRaw, fmt: str, folder: Path) -> Path:
    if fmt == "fif":
        path = folder / "segment_raw.fif"
        raw.save(path, fmt="double", verbose="error")
        return path
    backend = {"vhdr": "pybv", "set": "eeglabio"}[fmt]
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"mne.export needs the '{backend}' package to write .{fmt}; pip install {backend}")
    path = folder / f"segment.{fmt}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mne.export.export_raw(path, raw, verbose="error")
    return path


@pytest.mark.parametrize("fmt", ["fif", "vhdr", "set"])
def test_formats_written_from_eegmat_read_back(segment: mne.io.BaseRaw, tmp_path: Path, fmt: str) -> None:
    path = _write(segment, fmt, tmp_path)
    raw = read_raw(path)
    assert raw.ch_names == segment.ch_names and raw.info["sfreq"] == 500.0
    if fmt == "fif":  # saved as double: bit-exact
        np.testing.assert_array_equal(raw.get_data(), segment.get_data())
    else:  # BrainVision and EEGLAB store float32
        np.testing.assert_allclose(raw.get_data(), segment.get_data(), rtol=1e-6, atol=1e-12)


# -- BIDS -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bids_root(tmp_path_factory: pytest.TempPathFactory, rest: Path, task: Path) -> Path:
    from mne_bids import BIDSPath, write_raw_bids

    root = tmp_path_factory.mktemp("bids")
    for path, label in ((rest, "rest"), (task, "arithmetic")):
        raw = mne.io.read_raw_edf(path, verbose="error")
        raw.info["line_freq"] = 50
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_raw_bids(
                raw,
                BIDSPath(subject="00", task=label, root=root, datatype="eeg"),
                overwrite=True,
                verbose="error",
            )
    return root


def test_bids_recording_read_by_entities(bids_root: Path, task: Path) -> None:
    raw = read_raw(bids_root, bids=BIDSSelector(subject="00", task="arithmetic"))
    original = read_raw(task)
    assert raw.ch_names == original.ch_names
    np.testing.assert_allclose(raw.get_data(), original.get_data(), rtol=1e-6, atol=1e-12)
    # The selector may carry the root itself (the path argument is then not used).
    by_root = read_raw("unused", bids=BIDSSelector(root=bids_root, subject="00", task="rest"))
    assert by_root.n_times == read_raw(task.with_name("Subject00_1.edf")).n_times


def test_bids_ambiguous_selection_lists_what_matches(bids_root: Path) -> None:
    with pytest.raises(
        DataError, match=r"2 recordings in BIDS dataset .* match any entities .*task-arithmetic.*--task"
    ):
        read_raw(bids_root)


def test_bids_missing_selection_lists_what_exists(bids_root: Path) -> None:
    with pytest.raises(DataError, match=r"matches subject 07; it holds subjects 00; tasks arithmetic, rest"):
        read_raw(bids_root, bids=BIDSSelector(subject="07"))


def test_bids_root_without_description_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a BIDS dataset"):
        read_raw(tmp_path, bids=BIDSSelector(subject="01"))


# -- bad files ---------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothere\.edf does not exist; check the path"):
        read_raw(tmp_path / "nothere.edf")


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "rec.xyz"
    path.write_bytes(b"hello")
    with pytest.raises(DataError, match=r"unknown file type '\.xyz'; use one of .*\.edf"):
        read_raw(path)


def test_folder_that_is_not_bids(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a folder, not a recording"):
        read_raw(tmp_path)


@pytest.mark.parametrize("suffix", [".edf", ".bdf", ".fif", ".vhdr", ".set"])
def test_garbage_file_is_a_data_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError, match=rf"Could not read .*garbage\{suffix} as .*corrupt"):
        read_raw(path)


def test_truncated_edf_is_a_data_error(rest: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.edf"
    path.write_bytes(rest.read_bytes()[:200])  # header cut in the middle
    with pytest.raises(DataError, match=r"Could not read .*cut\.edf as EDF"):
        read_raw(path)


# -- concatenation ------------------------------------------------------------------------------
async def test_open_recordings_plays_rest_then_task(rest: Path, task: Path) -> None:
    src = open_recordings([rest, task], seconds=2.0, start=1.0, chunk_size=64)
    assert isinstance(src, Source) and src.info.sfreq == 500.0
    assert src.info.ch_names == tuple(f"EEG {n}" for n in EEG_NAMES)
    assert src.markers == [(0.0, "Subject00_1"), (2.0, "Subject00_2")]
    expected = np.concatenate([pick_signal(read_raw(p)).get_data(start=500, stop=1500) for p in (rest, task)], axis=1)
    async with src:
        chunks = [c async for c in src.chunks()]
    assert [c.n_samples for c in chunks[:-1]] == [64] * (len(chunks) - 1)
    np.testing.assert_array_equal(np.concatenate([c.data for c in chunks], axis=1), expected)
    ts = np.concatenate([c.timestamps for c in chunks])
    np.testing.assert_allclose(ts, np.arange(2000) / 500.0)
    np.testing.assert_array_equal(src.timestamps, ts)
    assert not src.data.flags.writeable and src.duration == pytest.approx(4.0)
    assert src.stats()["samples"] == 2000


def test_open_recordings_reorders_channels_by_name(segment: mne.io.BaseRaw, rest: Path, tmp_path: Path) -> None:
    shuffled = segment.copy().reorder_channels(segment.ch_names[::-1])
    path = tmp_path / "shuffled_raw.fif"
    shuffled.save(path, fmt="double", verbose="error")
    src = open_recordings([rest, path], seconds=1.0)
    second = src.data[:, 500:]
    np.testing.assert_array_equal(second, segment.get_data(stop=500))


def test_open_recordings_channel_mismatch(segment: mne.io.BaseRaw, rest: Path, tmp_path: Path) -> None:
    fewer = segment.copy().drop_channels(["EEG Fp1", "EEG O2"])
    path = tmp_path / "fewer_raw.fif"
    fewer.save(path, verbose="error")
    with pytest.raises(DataError, match=r"fewer_raw\.fif lacks EEG Fp1, EEG O2 compared with Subject00_1\.edf"):
        open_recordings([rest, path], seconds=1.0)


def test_open_recordings_rate_mismatch(segment: mne.io.BaseRaw, rest: Path, tmp_path: Path) -> None:
    path = tmp_path / "slow_raw.fif"
    segment.copy().resample(250, verbose="error").save(path, verbose="error")
    with pytest.raises(DataError, match=r"slow_raw\.fif is sampled at 250 Hz but the first recording at 500 Hz"):
        open_recordings([rest, path], seconds=1.0)


def test_open_recordings_bad_crop(rest: Path) -> None:
    with pytest.raises(DataError, match="past the end"):
        open_recordings([rest], start=10_000.0)
    with pytest.raises(DataError, match="No recording given"):
        open_recordings([])


async def test_array_source_lets_other_tasks_run() -> None:
    info = SignalInfo("x", 100.0, ("a", "b"))
    src = ArraySource(info, np.zeros((2, 4000)), chunk_size=1)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    async with src:
        n = sum([c.n_samples async for c in src.chunks()])
    t.cancel()
    assert n == 4000 and ticks >= 4000 // 8 - 1
    with pytest.raises(RuntimeError, match="only once"):
        async with src:
            pass


def test_array_source_checks_shapes() -> None:
    info = SignalInfo("x", 100.0, ("a", "b"))
    with pytest.raises(ValueError, match=r"shape \(2, n_samples\)"):
        ArraySource(info, np.zeros((3, 10)))
    with pytest.raises(ValueError, match=r"timestamps must have shape \(10,\)"):
        ArraySource(info, np.zeros((2, 10)), np.zeros(9))


# -- fMRI -----------------------------------------------------------------------------------------
async def test_read_fmri_real_run() -> None:
    if not FMRI.is_file():
        pytest.fail(f"{FMRI} is missing; the shared data folder should be beside the repository.")
    src = read_fmri(FMRI)
    expected = np.load(FMRI)
    assert src.info.stype == "fMRI" and src.info.sfreq == pytest.approx(1 / 0.72)
    # 379 columns are the HCP-MMP1 layout: channels carry the MMP labels, so they group by network
    assert src.info.n_channels == 379 and src.info.ch_names[0] == "L_V1" and src.info.ch_names[180] == "R_V1"
    assert src.info.ch_names[-1] == "brainStem"
    assert src.markers == [(0.0, "rfMRI_REST1_LR")]
    async with src:
        chunks = [c async for c in src.chunks()]
    assert len(chunks) == expected.shape[0] == 1200
    np.testing.assert_array_equal(chunks[10].data[:, 0], expected[10].astype(np.float64))
    assert chunks[10].timestamps[0] == pytest.approx(10 * 0.72)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros(10), r"shape \(10,\); it must be 2-D"),
        (np.zeros((4, 3, 2)), r"shape \(4, 3, 2\); it must be 2-D"),
        (
            np.array([[1.0, np.nan], [0.0, 1.0]]),
            r"1 non-finite values \(first at volume 1, region 2, both counted from 1\)",
        ),
        (np.array([["a", "b"], ["c", "d"]]), "it must hold real numbers"),
        (np.zeros((1, 5)), "only 1 volume"),
    ],
    ids=["1d", "3d", "nan", "strings", "one-volume"],
)
def test_read_fmri_bad_arrays(tmp_path: Path, array: np.ndarray, match: str) -> None:
    path = tmp_path / "run.npy"
    np.save(path, array)
    with pytest.raises(DataError, match=match):
        read_fmri(path)


def test_read_fmri_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_fmri(tmp_path / "missing.npy")
    (tmp_path / "run.txt").write_text("1 2 3")
    with pytest.raises(DataError, match=r"not a \.npy file"):
        read_fmri(tmp_path / "run.txt")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match=r"Could not read .*bad\.npy as a NumPy array"):
        read_fmri(tmp_path / "bad.npy")
    np.save(tmp_path / "ok.npy", np.zeros((3, 2)))
    with pytest.raises(DataError, match="TR -1 s"):
        read_fmri(tmp_path / "ok.npy", tr=-1)
