"""The live pipeline end to end: a real LSL outlet → LSLSource → stages → a real JACK MIDI port."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from brainharmonic_rt.config import load_settings
from brainharmonic_rt.errors import StreamError
from brainharmonic_rt.pipeline import LivePipeline
from brainharmonic_rt.recording import read_jsonl, read_session
from brainharmonic_rt.sinks.rtmidi_port import RtMidiSink
from brainharmonic_rt.sources.lsl import LSLSource

from .lslutil import SyntheticOutlet
from .midiutil import MidiReader, all_notes_off, note_ons, unmatched_notes

pytestmark = pytest.mark.usefixtures("jack_server")


def _settings(source_id: str, port: str):
    return load_settings(
        stream={"source_id": source_id, "timeout": 5.0, "lost_after": 0.5},
        signal={"window": 1.0, "hop": 0.25, "baseline": 2.0},
        music={"tempo": 150.0, "seed": 3},
        output={"virtual_port": port},
    )


async def _until(pred, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def _start(settings, tmp_path: Path, port: str):
    sink = RtMidiSink(port=None, virtual_name=port)
    pipe = LivePipeline(settings, LSLSource(settings.stream), [sink], record_root=tmp_path)
    task = asyncio.create_task(pipe.run())
    reader = await asyncio.to_thread(MidiReader, port)
    return pipe, task, reader


async def test_live_run_plays_records_and_silences_on_stop(source_id: str, tmp_path: Path) -> None:
    port = f"bh-{uuid.uuid4().hex[:6]}"
    settings = _settings(source_id, port)
    with SyntheticOutlet(source_id, n_channels=19, sfreq=250.0) as outlet:
        pipe, task, reader = await _start(settings, tmp_path, port)
        try:
            await _until(lambda: len(note_ons(reader.snapshot())) >= 8, 20, "notes on the MIDI port")
            pipe.stop("test over")
            await asyncio.wait_for(task, 10)
            await asyncio.sleep(0.2)
            msgs = reader.snapshot()
        finally:
            reader.close()
        sent = outlet.sent
    used = {m[0] & 0x0F for _, m in note_ons(msgs)}
    assert used <= all_notes_off(msgs), "every channel that played must get all-notes-off on stop"
    assert unmatched_notes(msgs) == {}
    assert pipe.stats.windows > 4
    lat = pipe.stats.latency_summary()
    assert lat["p50_ms"] < 100

    sess = read_session(pipe.recorder.folder)  # type: ignore[union-attr]
    counter = sess.data[0].astype(np.int64)
    assert counter[0] == 0 or counter[0] > 0
    assert np.all(np.diff(counter) == 1), "recorded samples arrive in order, without gaps"
    assert 0 < counter.size <= sent
    states = read_jsonl(sess.folder / "states.jsonl")
    assert len(states) == pipe.stats.windows
    notes = read_jsonl(sess.folder / "notes.jsonl")
    assert len(notes) == pipe.stats.notes > 0
    assert (sess.folder / "notes.mid").stat().st_size > 100
    assert "source_id" in (sess.folder / "config.toml").read_text()


async def test_stream_loss_silences_then_reconnects(source_id: str, tmp_path: Path) -> None:
    port = f"bh-{uuid.uuid4().hex[:6]}"
    settings = _settings(source_id, port)
    outlet = SyntheticOutlet(source_id, n_channels=8, sfreq=250.0).start()
    pipe, task, reader = await _start(settings, tmp_path, port)
    try:
        await _until(lambda: len(note_ons(reader.snapshot())) >= 3, 20, "first notes")
        outlet.stop()
        await _until(lambda: pipe.stats.stream_losses == 1, 5, "the stream loss to be noticed")
        await asyncio.sleep(0.2)
        n_before = len(note_ons(reader.snapshot()))
        assert all_notes_off(reader.snapshot()), "stream loss sends all-notes-off"
        outlet = SyntheticOutlet(source_id, n_channels=8, sfreq=250.0).start()
        await _until(lambda: pipe.stats.reconnects == 1, 15, "the reconnect")
        await _until(lambda: len(note_ons(reader.snapshot())) > n_before + 2, 20, "notes after the reconnect")
        pipe.stop("test over")
        await asyncio.wait_for(task, 10)
    finally:
        outlet.stop()
        reader.close()
    events = [e["event"] for e in read_jsonl(pipe.recorder.folder / "events.jsonl")]  # type: ignore[union-attr]
    assert "stream_lost" in events and "stream_back" in events
    assert unmatched_notes(reader.snapshot()) == {}


async def test_stream_returning_with_other_channel_count_stops_clearly(source_id: str, tmp_path: Path) -> None:
    port = f"bh-{uuid.uuid4().hex[:6]}"
    settings = _settings(source_id, port)
    outlet = SyntheticOutlet(source_id, n_channels=8, sfreq=250.0).start()
    pipe, task, reader = await _start(settings, tmp_path, port)
    try:
        await _until(lambda: pipe.stats.windows >= 2, 20, "windows")
        outlet.stop()
        await _until(lambda: pipe.stats.stream_losses == 1, 5, "the stream loss")
        outlet = SyntheticOutlet(source_id, n_channels=4, sfreq=250.0).start()
        with pytest.raises(StreamError, match="4 channels"):
            await asyncio.wait_for(task, 15)
    finally:
        outlet.stop()
        reader.close()
    assert unmatched_notes(reader.snapshot()) == {}


async def test_nan_channel_is_excluded_and_reported_not_fatal(source_id: str, tmp_path: Path) -> None:
    port = f"bh-{uuid.uuid4().hex[:6]}"
    settings = _settings(source_id, port)
    with SyntheticOutlet(source_id, n_channels=19, sfreq=250.0) as outlet:
        pipe, task, reader = await _start(settings, tmp_path, port)
        try:
            await _until(lambda: pipe.stats.windows >= 4, 20, "windows")
            outlet.nan_channels.add(5)
            w = pipe.stats.windows
            await _until(lambda: pipe.stats.windows >= w + 8, 20, "windows after the NaNs")
            n = len(note_ons(reader.snapshot()))
            await _until(lambda: len(note_ons(reader.snapshot())) > n, 20, "notes after the NaNs")
            pipe.stop("test over")
            await asyncio.wait_for(task, 10)
        finally:
            reader.close()
    states = read_jsonl(pipe.recorder.folder / "states.jsonl")  # type: ignore[union-attr]
    flagged = [s for s in states if any(b[0] == outlet.ch_names[5] and b[1] == "nan" for b in s.get("bad", []))]
    assert flagged, "the NaN channel is reported as bad"
    for s in states:
        for g in s["groups"].values():
            assert all(np.isfinite(v) for v in g["z"].values())
    json.dumps(states)


async def test_processing_latency_is_measured_on_this_machines_clock_for_a_replay(
    source_id: str, tmp_path: Path, eegmat_dir: Path
) -> None:
    """Robustness fault 4: with `replay` as the source the summary reported a negative latency (p50 -6.6 ms):
    it trusted the LSL timestamps. Latency now runs from a window's arrival (time.monotonic()) to its notes."""
    from brainharmonic_rt.sources.player import Replay

    port = f"bh-{uuid.uuid4().hex[:6]}"
    settings = _settings(source_id, port)
    async with Replay(eegmat_dir / "Subject00_2.edf", name="bh-lat", source_id=source_id, seconds=8):
        sink = RtMidiSink(port=None, virtual_name=port)
        pipe = LivePipeline(settings, LSLSource(settings.stream), [sink], duration=5.0)
        await asyncio.wait_for(pipe.run(), 30)
    lat = pipe.stats.latency_summary()
    assert lat["n"] >= 10
    assert 0.0 < lat["p50_ms"] < 50.0 and lat["p99_ms"] < 200.0, lat
