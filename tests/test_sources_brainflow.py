"""BrainFlow boards, real ones without hardware: the synthetic board and the playback-file board."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import mne
import numpy as np
import pytest

from brainharmonic_rt.config import BoardSettings, StreamSettings, load_settings
from brainharmonic_rt.errors import ConfigError, StreamLostError
from brainharmonic_rt.events import Chunk
from brainharmonic_rt.pipeline import LivePipeline
from brainharmonic_rt.recording import read_jsonl
from brainharmonic_rt.sinks.rtmidi_port import RtMidiSink
from brainharmonic_rt.sources.brainflow import BrainFlowSource, board_id, describe
from brainharmonic_rt.sources.channel_map import ChannelMap, MappedSource

from .midiutil import MidiReader, all_notes_off, note_ons, unmatched_notes

pytestmark = pytest.mark.timeout(120)
BIN = [sys.executable, "-m", "brainharmonic_rt.cli"]
SYNTHETIC_NAMES = ("Fz", "C3", "Cz", "C4", "Pz", "PO7", "Oz", "PO8", "F5", "F7", "F3", "F1", "F2", "F4", "F6", "F8")


def _shim():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brainflow.board_shim import BoardIds, BoardShim
        from brainflow.data_filter import DataFilter

    return BoardShim, BoardIds, DataFilter


def _playback_file(eegmat_dir: Path, path: Path, seconds: float) -> np.ndarray:
    """A BrainFlow recording in the synthetic board's layout (32 rows at 250 Hz), its 16 EEG rows holding
    real eegmat EEG in µV (resampled to 250 Hz); written with BrainFlow's own DataFilter.write_file."""
    BoardShim, BoardIds, DataFilter = _shim()
    descr = BoardShim.get_board_descr(BoardIds.SYNTHETIC_BOARD.value)
    raw = mne.io.read_raw_edf(eegmat_dir / "Subject00_1.edf", preload=True, verbose="error")
    raw.pick([f"EEG {n}" for n in ("Fz", "C3", "Cz", "C4", "Pz", "T5", "O1", "T6", "Fp1", "F7", "F3", "Fp2", "F4")])
    raw.resample(250.0, verbose="error")
    eeg = raw.get_data(stop=round(seconds * 250)) * 1e6
    n = eeg.shape[1]
    table = np.zeros((descr["num_rows"], n))
    rows = descr["eeg_channels"]
    table[rows[:13]] = eeg
    table[rows[13:]] = eeg[:3]
    table[descr["timestamp_channel"]] = time.time() + np.arange(n) / 250.0
    DataFilter.write_file(table, str(path), "w")
    return np.asarray(DataFilter.read_file(str(path))[rows])


def test_board_names_and_errors() -> None:
    _, BoardIds, _ = _shim()
    assert board_id("synthetic") == board_id("SYNTHETIC_BOARD") == board_id("-1") == BoardIds.SYNTHETIC_BOARD.value
    assert board_id("muse-s") == BoardIds.MUSE_S_BOARD.value
    with pytest.raises(ConfigError, match="no board 'synthetc'; did you mean synthetic"):
        board_id("synthetc")
    with pytest.raises(ConfigError, match="--master-board"):
        describe(BoardSettings(name="playback_file"))
    with pytest.raises(ConfigError, match="--file"):
        describe(BoardSettings(name="playback_file", master_board="synthetic"))
    _, _, muse = describe(BoardSettings(name="muse_s"))
    assert muse["eeg_names"] == "TP9,AF7,AF8,TP10" and muse["sampling_rate"] == 256


@pytest.mark.parametrize(
    ("args", "code", "pattern"),
    [
        (["--board", "synthetc"], 2, "did you mean synthetic"),
        (["--board", "cyton"], 4, "needs a connection parameter.*--serial-port"),
        (["--board", "cyton", "--serial-port", "/dev/ttyBH404"], 4, r"serial port /dev/ttyBH404\) could not open"),
        (["--board", "playback_file", "--master-board", "synthetic"], 2, "needs the recording.*--file"),
    ],
)
def test_bad_boards_are_one_sentence(args: list[str], code: int, pattern: str) -> None:
    r = subprocess.run([*BIN, "run", *args, "--no-midi", "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("brainharmonic: error:"), r.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.usefixtures("jack_server")
def test_run_synthetic_board_plays_notes_on_a_jack_port(tmp_path: Path) -> None:
    port = f"bh-bf-{uuid.uuid4().hex[:6]}"
    config = tmp_path / "c.toml"
    config.write_text("[signal]\nwindow = 1.0\nbaseline = 2.0\n\n[music]\ntempo = 150.0\n")
    proc = subprocess.Popen(
        [*BIN, "run", "--board", "synthetic", "--virtual-port", port, "--record", str(tmp_path),
         "--config", str(config), "--duration", "14"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    try:
        with MidiReader(port, timeout=30) as reader:
            assert reader.wait_for(lambda m: len(note_ons(m)) >= 10, 25), "no notes from the synthetic board"
            out, err = proc.communicate(timeout=30)
            time.sleep(0.2)
            msgs = reader.snapshot()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "duration 14 s reached" in out
    used = {m[0] & 0x0F for _, m in note_ons(msgs)}
    assert used <= all_notes_off(msgs) and unmatched_notes(msgs) == {}
    folder = next(tmp_path.glob("session-*"))
    assert '"units": "uV"' in (folder / "eeg.json").read_text()
    assert '"Fz"' in (folder / "eeg.json").read_text()
    quality = read_jsonl(folder / "quality.jsonl")
    assert len(quality) >= 8  # one per second
    assert set(quality[-1]["channels"]) == set(SYNTHETIC_NAMES)
    assert all(q["verdict"] in ("good", "noisy") for q in quality[-1]["channels"].values())
    states = read_jsonl(folder / "states.jsonl")
    assert {"frontal", "central", "parietal", "occipital"} <= set(states[-1]["groups"])


async def _read(source, n: int, timeout: float = 20.0) -> np.ndarray:
    got: list[Chunk] = []
    async with asyncio.timeout(timeout):
        async for chunk in source.chunks():
            assert np.all(np.diff(chunk.timestamps) > 0)
            assert abs(chunk.timestamps[-1] - time.monotonic()) < 1.0, "stamps are on time.monotonic()'s clock"
            assert chunk.received is not None and chunk.received <= time.monotonic()
            got.append(chunk)
            if sum(c.n_samples for c in got) >= n:
                break
    return np.concatenate([c.data for c in got], axis=1)


async def test_playback_board_replays_its_file_then_is_lost_and_comes_back(eegmat_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "rec.csv"
    rows = _playback_file(eegmat_dir, path, seconds=3.0)
    board = BoardSettings(name="playback_file", file=path, master_board="synthetic")
    source = MappedSource(BrainFlowSource(board, StreamSettings(lost_after=0.5)), ChannelMap.parse("1=Fz,3=Cz,9=Fp1"))
    async with source:
        assert source.info.ch_names == ("Fz", "Cz", "Fp1") and source.info.sfreq == 250.0
        assert source.info.units == "uV"
        data = await _read(source, rows.shape[1])
        np.testing.assert_allclose(data[:, : rows.shape[1]], rows[[0, 2, 8]], rtol=1e-6, atol=1e-6)
        with pytest.raises(StreamLostError, match=r"sent no samples for 0\.5 s"):
            await _read(source, 10)
        # The board is gone for a while (its file is away): reconnect keeps trying until it is back.
        away = path.rename(tmp_path / "away.csv")
        task = asyncio.create_task(source.reconnect())
        await asyncio.sleep(2.5)
        assert not task.done(), "reconnect waits while the board cannot be opened"
        away.rename(path)
        await asyncio.wait_for(task, 10)
        again = await _read(source, 250)
        np.testing.assert_allclose(again[:, :250], rows[[0, 2, 8], :250], rtol=1e-6, atol=1e-6)
        assert source.stats()["reconnects"] == 1


@pytest.mark.usefixtures("jack_server")
async def test_pipeline_survives_a_board_that_stops_sending(eegmat_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "rec.csv"
    _playback_file(eegmat_dir, path, seconds=8.0)
    port = f"bh-bf-{uuid.uuid4().hex[:6]}"
    settings = load_settings(
        stream={"lost_after": 0.5},
        board={"name": "playback_file", "file": str(path), "master_board": "synthetic"},
        signal={"window": 1.0, "baseline": 2.0},
        music={"tempo": 150.0, "seed": 3},
    )
    pipe = LivePipeline(
        settings,
        BrainFlowSource(settings.board, settings.stream),
        [RtMidiSink(port=None, virtual_name=port)],
        record_root=tmp_path,
    )
    task = asyncio.create_task(pipe.run())
    reader = await asyncio.to_thread(MidiReader, port)
    try:
        async with asyncio.timeout(40):
            while pipe.stats.stream_losses < 1:  # the file ends after 8 s: the board stops sending
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            assert all_notes_off(reader.snapshot()), "a lost board silences the synth"
            before = len(note_ons(reader.snapshot()))
            while pipe.stats.reconnects < 1 or len(note_ons(reader.snapshot())) <= before + 2:
                await asyncio.sleep(0.05)
        pipe.stop("test over")
        await asyncio.wait_for(task, 10)
    finally:
        reader.close()
    assert before > 0
    events = [e["event"] for e in read_jsonl(pipe.recorder.folder / "events.jsonl")]  # type: ignore[union-attr]
    assert "stream_lost" in events and "stream_back" in events
    assert unmatched_notes(reader.snapshot()) == {}
