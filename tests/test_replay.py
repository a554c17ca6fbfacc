"""`brainharmonic replay`: real eegmat recordings served as real LSL streams, read back by LSLSource."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path

import mne
import numpy as np
import pytest
from mne_lsl.lsl import StreamInlet, local_clock, resolve_streams

from brainharmonic_rt.config import StreamSettings
from brainharmonic_rt.errors import DataError, StreamLostError
from brainharmonic_rt.events import Chunk
from brainharmonic_rt.sources.files import open_recordings, pick_signal, read_raw
from brainharmonic_rt.sources.lsl import LSLSource, list_streams
from brainharmonic_rt.sources.player import Replay, default_chunk_size

pytestmark = pytest.mark.timeout(60)


def offset_of(first: np.ndarray, reference: np.ndarray) -> int:
    """Index of the sample of ``reference`` (n_channels, n) equal to ``first`` (n_channels,)."""
    hits = np.flatnonzero((reference == first[:, None]).all(axis=0))
    assert hits.size == 1, f"first received sample found {hits.size} times in the recording"
    return int(hits[0])


async def read_for(source: LSLSource, n_samples: int, timeout: float = 10.0) -> np.ndarray:
    chunks: list[Chunk] = []
    async with asyncio.timeout(timeout):
        async for chunk in source.chunks():
            chunks.append(chunk)
            if sum(c.n_samples for c in chunks) >= n_samples:
                break
    return np.concatenate([c.data for c in chunks], axis=1)


async def test_replay_file_serves_its_eeg_bit_exact(eegmat_dir: Path, source_id: str) -> None:
    path = eegmat_dir / "Subject00_2.edf"
    expected = pick_signal(read_raw(path))
    async with Replay(path, name="bh-replay-file", source_id=source_id) as replay:
        assert replay.player.chunk_size == default_chunk_size(500.0) == 5  # 10 ms pushes
        async with LSLSource(StreamSettings(source_id=source_id, timeout=5)) as src:
            assert src.info.ch_names == tuple(expected.ch_names)  # A2-A1 and ECG not served
            assert src.info.sfreq == 500.0
            data = await read_for(src, 400)
    reference = expected.get_data()
    i0 = offset_of(data[:, 0], reference)
    np.testing.assert_array_equal(data, reference[:, i0 : i0 + data.shape[1]])


async def test_replay_rest_then_task_loops_with_markers(eegmat_dir: Path, source_id: str) -> None:
    files = [eegmat_dir / "Subject00_1.edf", eegmat_dir / "Subject00_2.edf"]
    one_pass = open_recordings(files, seconds=1.0).data  # 1 s rest + 1 s task = 1000 samples
    async with Replay(files, name="bh-replay-loop", source_id=source_id, seconds=1.0, loop=True) as replay:
        assert replay.markers_name == "bh-replay-loop-annotations"
        assert replay.duration == pytest.approx(2.0)
        marker_info = resolve_streams(timeout=5, name=replay.markers_name)[0]
        assert marker_info.source_id == source_id and marker_info.sfreq == 0
        markers = StreamInlet(marker_info, processing_flags=["clocksync"])
        markers.open_stream(timeout=5)
        try:
            # The data stream shares the source_id with the marker stream; LSLSource picks the data.
            async with LSLSource(StreamSettings(source_id=source_id, timeout=5)) as src:
                assert src.info.n_channels == 19
                data_task = asyncio.create_task(read_for(src, 1200))  # more than one pass: wraps
                received: list[tuple[str, float]] = []
                deadline = time.monotonic() + 10
                while len(received) < 2 and time.monotonic() < deadline:
                    sample, stamp = await asyncio.to_thread(markers.pull_sample, 0.5)
                    if stamp is not None:
                        received.append((sample[0], stamp))
                data = await data_task
        finally:
            markers._del()
    names = [r[0] for r in received]
    assert names in (["Subject00_2", "Subject00_1"], ["Subject00_1", "Subject00_2"]), names
    assert received[1][1] - received[0][1] == pytest.approx(1.0, abs=0.03)  # the boundary is 1 s apart
    i0 = offset_of(data[:, 0], one_pass)
    assert i0 + data.shape[1] > one_pass.shape[1], "the read did not cross the loop point"
    idx = (i0 + np.arange(data.shape[1])) % one_pass.shape[1]
    np.testing.assert_array_equal(data, one_pass[:, idx])  # loops back seamlessly, sample for sample


async def test_replay_without_loop_ends_and_the_stream_is_lost(source_id: str) -> None:
    n = 1000  # 2 s, a multiple of the 5-sample chunks
    info = mne.create_info(["counter", "Cz"], 500.0, "eeg")
    raw = mne.io.RawArray(np.vstack([np.arange(n), np.zeros(n)]), info, verbose="error")
    async with Replay(raw, name="bh-replay-once", source_id=source_id) as replay:
        async with LSLSource(StreamSettings(source_id=source_id, timeout=5, lost_after=1.0)) as src:
            counts: list[np.ndarray] = []
            with pytest.raises(StreamLostError, match="bh-replay-once"):
                async with asyncio.timeout(10):
                    async for chunk in src.chunks():
                        counts.append(chunk.data[0])
        assert await asyncio.to_thread(replay.wait, None, 5.0)
        assert not replay.running
    counter = np.concatenate(counts).astype(int)
    # Everything up to the end arrives in order; the player closes its outlet right after the last
    # push, so that final chunk (5 samples) may be cut off with the connection.
    assert n - 1 - 5 <= counter[-1] <= n - 1 and np.all(np.diff(counter) == 1)


def test_serve_forever_stops_on_request(eegmat_dir: Path, source_id: str) -> None:
    replay = Replay(eegmat_dir / "Subject01_2.edf", name="bh-replay-serve", source_id=source_id, loop=True)
    stop = threading.Event()
    server = threading.Thread(target=replay.serve_forever, args=(stop,), daemon=True)
    server.start()
    deadline = time.monotonic() + 10
    while not any(s["source_id"] == source_id for s in list_streams(0.3)):
        assert time.monotonic() < deadline, "the replayed stream never became visible"
    assert replay.running
    stop.set()
    server.join(5)
    assert not server.is_alive() and not replay.running


async def test_replay_bad_inputs(tmp_path: Path, eegmat_dir: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.edf does not exist"):
        async with Replay(tmp_path / "missing.edf"):
            pass
    with pytest.raises(DataError, match="Cannot crop the recording to start 500 s"):
        async with Replay(eegmat_dir / "Subject00_2.edf", start=500.0):
            pass


def _read_inlet(inlet: StreamInlet, seconds: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pull for ``seconds``: data (n_channels, n), timestamps (n,), arrival on local_clock (n,)."""
    blocks, stamps, arrivals = [], [], []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data, ts = inlet.pull_chunk(timeout=0.02)
        if len(ts):
            now = local_clock()
            blocks.append(np.array(data).T)  # copies: the inlet reuses its buffers
            stamps.append(np.array(ts))
            arrivals.append(np.full(len(ts), now))
    return np.concatenate(blocks, axis=1), np.concatenate(stamps), np.concatenate(arrivals)


def test_looped_replay_is_real_time_and_monotonic_across_wraps(eegmat_dir: Path, source_id: str) -> None:
    """An independent inlet (no clock processing) on a 1 s looped recording for 4.5 passes."""
    path = eegmat_dir / "Subject00_1.edf"
    one_pass = pick_signal(read_raw(path)).get_data(stop=500)  # 1 s = 100 pushes of 5: a multiple, as eegmat files
    with Replay(path, name="bh-replay-wraps", source_id=source_id, seconds=1.0, loop=True):
        inlet = StreamInlet(resolve_streams(timeout=5, source_id=source_id, name="bh-replay-wraps")[0])
        inlet.open_stream(timeout=5)
        try:
            _read_inlet(inlet, 0.3)  # the samples queued while subscribing
            data, ts, arrival = _read_inlet(inlet, 4.5)
        finally:
            inlet._del()
    steps = np.diff(ts)
    assert steps.min() > 0, f"timestamps go back by {-steps.min():.3f} s at a wrap"
    assert steps.max() < 3 / 500, f"timestamps jump forward by {steps.max():.3f} s"
    rate = (ts.size - 1) / (ts[-1] - ts[0])
    assert rate == pytest.approx(500.0, rel=0.01)
    in_time = ts.size / (arrival[-1] - arrival[0] + 0.02)  # samples per second of arrival
    assert in_time == pytest.approx(500.0, rel=0.03), f"{in_time:.0f} samples a second arrived for a 500 Hz stream"
    assert np.abs(arrival - ts).max() < 0.2, "timestamps stay on the local clock"
    i0 = offset_of(data[:, 0], one_pass)
    idx = (i0 + np.arange(data.shape[1])) % one_pass.shape[1]
    np.testing.assert_array_equal(data, one_pass[:, idx])  # every pass, sample for sample


def test_looped_markers_keep_their_time_on_every_pass(eegmat_dir: Path, source_id: str) -> None:
    """Rest and task boundaries 0.502 s apart, pass after pass: no marker stamped a pass early or missing."""
    files = [eegmat_dir / "Subject00_1.edf", eegmat_dir / "Subject00_2.edf"]
    # 251 + 251 samples a pass: not a multiple of the 5-sample pushes, so most wraps fall inside a push.
    with Replay(files, name="bh-replay-marks", source_id=source_id, seconds=0.502, loop=True) as replay:
        assert replay.markers_name == "bh-replay-marks-annotations"
        assert replay.duration == pytest.approx(1.004)
        inlet = StreamInlet(resolve_streams(timeout=5, name=replay.markers_name)[0])
        inlet.open_stream(timeout=5)
        received: list[tuple[str, float]] = []
        try:
            deadline = time.monotonic() + 3.4
            while time.monotonic() < deadline:
                sample, stamp = inlet.pull_sample(timeout=0.1)
                if stamp is not None:
                    received.append((str(sample[0]), stamp))
        finally:
            inlet._del()
    names = [r[0] for r in received]
    assert len(names) >= 5
    assert all(a != b for a, b in itertools.pairwise(names)), names  # rest and task alternate
    gaps = np.diff([r[1] for r in received])
    np.testing.assert_allclose(gaps, 0.502, atol=0.005)


def test_markers_of_a_cropped_recording_are_stamped_with_their_sample(source_id: str) -> None:
    """A marker 2 s into the file, replayed from 1 s: stamped exactly as the sample it marks."""
    n = 2000
    raw = mne.io.RawArray(np.arange(n, dtype=float)[None, :], mne.create_info(["counter"], 500.0, "eeg"))
    raw.set_annotations(mne.Annotations([2.0], [0.0], ["mark"]))
    with Replay(raw, name="bh-replay-crop", source_id=source_id, start=1.0, pick=False) as replay:
        assert replay.markers_name is not None
        data_in = StreamInlet(resolve_streams(timeout=5, name="bh-replay-crop")[0])
        marks_in = StreamInlet(resolve_streams(timeout=5, name=replay.markers_name)[0])
        data_in.open_stream(timeout=5)
        marks_in.open_stream(timeout=5)
        try:
            data, ts, _ = _read_inlet(data_in, 1.5)  # starts about 0.5 s in: the marker at 1 s comes later
            mark, stamp = marks_in.pull_sample(timeout=2.0)
        finally:
            data_in._del()
            marks_in._del()
    assert mark == ["mark"]
    assert ts[np.flatnonzero(data[0] == 1000)[0]] == pytest.approx(stamp, abs=1e-6)
