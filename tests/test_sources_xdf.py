"""XDF recordings: files written here (tests/xdfwriter.py) from real eegmat data, read back through pyxdf."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import mne
import numpy as np
import pytest
from mne_lsl.lsl import StreamInlet, resolve_streams

from brainharmonic_rt.cli import main
from brainharmonic_rt.errors import ConfigError, DataError
from brainharmonic_rt.sources.channel_map import ChannelMap
from brainharmonic_rt.sources.files import open_recordings, read_raw
from brainharmonic_rt.sources.player import Replay

from .xdfwriter import XdfStream, write_xdf

pytestmark = pytest.mark.timeout(120)
T0 = 1000.0  # LSL clock of the first EEG sample
MARKER_OFFSET = 0.25  # the marker computer's clock runs this far behind: the file's clock offsets say so


def _eegmat_xdf(eegmat_dir: Path, tmp_path: Path, *, seconds: float = 40.0, jitter: float = 2e-4) -> Path:
    """Subject00_1 (all 21 channels, µV, double precision, typed) + a marker stream on another clock."""
    raw = mne.io.read_raw_edf(eegmat_dir / "Subject00_1.edf", preload=True, verbose="error")
    sf = raw.info["sfreq"]
    data = raw.get_data(stop=round(seconds * sf)).T * 1e6  # (n, 21) in µV
    rng = np.random.default_rng(0)
    stamps = T0 + np.arange(data.shape[0]) / sf + rng.uniform(-jitter, jitter, data.shape[0])
    types = ["ECG" if "ECG" in n else "EEG" for n in raw.ch_names]
    eeg = XdfStream(
        "eegmat-amp", "EEG", sf, "double64", data, stamps, raw.ch_names, ["microvolts"] * 21, types,
        clock_offsets=[(T0 + k, 0.0) for k in range(0, int(seconds), 5)],
    )  # fmt: skip
    true_times = np.array([5.0, 20.0])
    markers = XdfStream(
        "task-markers", "Markers", 0.0, "string", ["rest", "task"], T0 + true_times - MARKER_OFFSET,
        clock_offsets=[(T0 + k, MARKER_OFFSET) for k in range(0, int(seconds), 5)],
    )  # fmt: skip
    return write_xdf(tmp_path / "session.xdf", [markers, eeg])


def test_xdf_reads_samples_units_labels_and_synchronised_markers(eegmat_dir: Path, tmp_path: Path) -> None:
    path = _eegmat_xdf(eegmat_dir, tmp_path)
    raw = read_raw(path)
    edf = mne.io.read_raw_edf(eegmat_dir / "Subject00_1.edf", preload=True, verbose="error")
    assert raw.ch_names == edf.ch_names
    assert raw.get_channel_types()[-1] == "ecg"
    np.testing.assert_allclose(raw.get_data(), edf.get_data(stop=raw.n_times), rtol=1e-12, atol=1e-15)
    onsets = [(a["description"], a["onset"]) for a in raw.annotations]
    assert [d for d, _ in onsets] == ["rest", "task"]
    # pyxdf moved the markers onto the EEG computer's clock with the file's clock offsets.
    np.testing.assert_allclose([o for _, o in onsets], [5.0, 20.0], atol=0.01)
    src = open_recordings([path])
    assert src.info.n_channels == 19  # A2-A1 and the ECG are not scalp EEG
    assert [m[1] for m in src.markers] == ["session", "rest", "task"]


def _render(inputs: list[str], out: Path, *extra: str) -> list[dict]:
    events = out.with_suffix(".jsonl")
    assert main(["render", *inputs, "--out", str(out), "--events", str(events), "--seed", "4", *extra]) == 0
    return [json.loads(line) for line in events.read_text().splitlines()]


def test_render_xdf_gives_the_same_notes_as_the_edf(eegmat_dir: Path, tmp_path: Path) -> None:
    path = _eegmat_xdf(eegmat_dir, tmp_path)
    from_xdf = _render([str(path)], tmp_path / "xdf.mid")
    from_edf = _render([str(eegmat_dir / "Subject00_1.edf")], tmp_path / "edf.mid", "--seconds", "40")
    assert len(from_xdf) > 50
    assert from_xdf == from_edf


def test_stream_choice_and_its_errors(eegmat_dir: Path, tmp_path: Path) -> None:
    sf = 250.0
    n = 1000
    rng = np.random.default_rng(1)
    stamps = np.arange(n) / sf
    a = XdfStream("amp-a", "Data", sf, "float32", rng.standard_normal((n, 4)) * 20, stamps)
    b = XdfStream("amp-b", "Data", sf, "float32", rng.standard_normal((n, 8)) * 20, stamps)
    m = XdfStream("marks", "Markers", 0.0, "string", ["x"], np.array([1.0]))
    path = write_xdf(tmp_path / "two.xdf", [m, a, b])
    with pytest.raises(DataError, match=r"2 candidate signal streams.*'amp-a'.*'amp-b'.*--xdf-stream"):
        read_raw(path)
    assert len(read_raw(path, xdf_stream="amp-b").ch_names) == 8
    with pytest.raises(DataError, match=r"no stream named or typed 'nope'.*'amp-a'"):
        read_raw(path, xdf_stream="nope")
    with pytest.raises(DataError, match="not regularly sampled numeric data"):
        read_raw(path, xdf_stream="marks")
    # Without units, values of tens of units are µV, not volts.
    raw = read_raw(path, xdf_stream="amp-a")
    assert 5e-6 < np.std(raw.get_data()) < 5e-5
    (tmp_path / "junk.xdf").write_bytes(b"XDF:garbage")
    with pytest.raises(DataError, match="as XDF"):
        read_raw(tmp_path / "junk.xdf")


def _unicorn_xdf(eegmat_dir: Path, tmp_path: Path) -> Path:
    """Like a LabRecorder file from a g.tec Unicorn: type 'Data', Unknown1..17, no units; 8 EEG channels
    (here eegmat's Fz C3 Cz C4 Pz P3 O1 P4, µV), then accelerometer, gyroscope, battery, counter and
    validation indicator."""
    raw = mne.io.read_raw_edf(eegmat_dir / "Subject00_1.edf", preload=True, verbose="error")
    names = ["EEG Fz", "EEG C3", "EEG Cz", "EEG C4", "EEG Pz", "EEG P3", "EEG O1", "EEG P4"]
    eeg = raw.get_data(picks=names, stop=30 * 500).T * 1e6
    n = eeg.shape[0]
    rng = np.random.default_rng(2)
    acc = 1.0 + 0.01 * rng.standard_normal((n, 3))  # g
    gyro = 0.5 * rng.standard_normal((n, 3))  # deg/s
    battery = np.full((n, 1), 87.0)  # %
    counter = np.arange(n, dtype=float)[:, None]
    valid = np.ones((n, 1))
    data = np.hstack([eeg, acc, gyro, battery, counter, valid]).astype(np.float32)
    stream = XdfStream(
        "UnicornRecorder", "Data", 500.0, "float32", data, 50 + np.arange(n) / 500.0,
        [f"Unknown{i}" for i in range(1, 18)],
    )  # fmt: skip
    return write_xdf(tmp_path / "unicorn.xdf", [stream])


def test_unicorn_like_xdf_with_channels_names_and_picks(
    eegmat_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _unicorn_xdf(eegmat_dir, tmp_path)
    mapping = ChannelMap.parse("1=Fz,2=C3,3=Cz,4=C4,5=Pz,6=P3,7=O1,8=P4")
    src = open_recordings([path], channels=mapping)
    assert src.info.ch_names == ("Fz", "C3", "Cz", "C4", "Pz", "P3", "O1", "P4")
    edf = mne.io.read_raw_edf(eegmat_dir / "Subject00_1.edf", preload=True, verbose="error")
    ref = edf.get_data(picks=["EEG Fz", "EEG P4"], stop=src.data.shape[1])
    np.testing.assert_allclose(src.data[[0, 7]], ref, rtol=1e-6, atol=1e-12)  # float32 in the file
    out = tmp_path / "named.mid"
    with caplog.at_level("WARNING"):
        notes = _render([str(path)], out, "--channels", "1=Fz,2=C3,3=Cz,4=C4,5=Pz,6=P3,7=O1,8=P4")
    assert {n["instrument"] for n in notes} >= {"frontal", "central", "parietal"}
    assert not any("generic" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING"):
        notes = _render([str(path)], tmp_path / "generic.mid")
    assert {n["instrument"] for n in notes} <= {"group1", "group2", "group3", "group4"}
    said = [r.getMessage() for r in caplog.records if "generic" in r.getMessage()]
    assert len(said) == 1 and "--channels" in said[0] and "Unknown1" in said[0]
    with pytest.raises(ConfigError, match=r"names channel 18, but .* has only 17 channels"):
        open_recordings([path], channels=ChannelMap.parse("18=Fz"))
    assert main(["render", str(path), "--out", str(tmp_path / "x.mid"), "--channels", "1=Fz,1=Cz"]) == 2


async def test_replay_xdf_serves_markers_on_the_marker_stream(eegmat_dir: Path, tmp_path: Path, source_id: str) -> None:
    path = _eegmat_xdf(eegmat_dir, tmp_path, seconds=8.0)
    # markers at 5 s and 20 s: only the first lies inside 8 s
    async with Replay(path, name="bh-xdf", source_id=source_id) as replay:
        assert replay.markers_name == "bh-xdf-annotations"
        assert replay.ch_names[0] == "EEG Fp1" and len(replay.ch_names) == 19
        info = resolve_streams(timeout=5, name=replay.markers_name)[0]
        inlet = StreamInlet(info)
        inlet.open_stream(timeout=5)
        try:
            got: list[str] = []
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                sample, stamp = await asyncio.to_thread(inlet.pull_sample, 0.5)
                if stamp is not None:
                    got.append(sample[0])
        finally:
            inlet._del()
    assert got == ["rest"]
