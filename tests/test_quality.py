"""Per-channel signal quality: on real eegmat EEG with real faults added, and live through LSL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pytest

from brainharmonic_rt.config import load_settings
from brainharmonic_rt.control.messages import HealthTelemetry
from brainharmonic_rt.events import ChannelQuality, Chunk, SignalInfo
from brainharmonic_rt.pipeline import LivePipeline
from brainharmonic_rt.recording import read_jsonl
from brainharmonic_rt.signal import SignalChain
from brainharmonic_rt.signal.quality import microvolts_per_unit
from brainharmonic_rt.sinks.rtmidi_port import RtMidiSink
from brainharmonic_rt.sources.channel_map import ChannelMap, MappedSource
from brainharmonic_rt.sources.files import open_recordings
from brainharmonic_rt.sources.lsl import LSLSource

from .lslutil import SyntheticOutlet
from .midiutil import MidiReader, note_ons


def _reports(info: SignalInfo, data: np.ndarray, **quality) -> list[tuple[ChannelQuality, ...]]:
    settings = load_settings(quality=quality) if quality else load_settings()
    chain = SignalChain(info, settings.signal, settings.quality, settings.artifacts)
    out = []
    ts = np.arange(data.shape[1]) / info.sfreq
    for a in range(0, data.shape[1], 40):
        out += [w.quality for w in chain.push(Chunk(data[:, a : a + 40], ts[a : a + 40])) if w.quality is not None]
    return out


def test_quality_flags_mains_pickup_a_flat_lead_and_keeps_clean_channels_good(eegmat_dir: Path) -> None:
    src = open_recordings([eegmat_dir / "Subject02_1.edf"], seconds=20)
    info, data = src.info, np.asarray(src.data).copy()
    t = np.arange(data.shape[1]) / info.sfreq
    data[3] += 80e-6 * np.sin(2 * np.pi * 50 * t)  # a loose electrode picking up the mains
    data[7] = 12e-6  # a lead that came off: constant
    reports = _reports(info, data)
    assert 16 <= len(reports) <= 19  # once a second after the first window
    last = {q.name: q for q in reports[-1]}
    assert last[info.ch_names[3]].verdict == "noisy" and last[info.ch_names[3]].line_noise > 1.0
    assert last[info.ch_names[7]].verdict == "flat"
    good = [q for i, q in enumerate(reports[-1]) if i not in (3, 7)]
    assert all(q.verdict == "good" for q in good), [q for q in good if q.verdict != "good"]
    assert all(q.line_noise < 0.1 for q in good)  # eegmat is notched at 50 Hz by its authors
    ranges = [q.range_uv for q in good]
    assert all(r is not None and 5 < r < 400 for r in ranges), ranges  # µV, whatever the file's unit


def test_units_and_the_interval_setting(eegmat_dir: Path) -> None:
    src = open_recordings([eegmat_dir / "Subject02_1.edf"], seconds=12)
    data = np.asarray(src.data)
    in_volts = _reports(src.info, data)[-1]
    as_uv = SignalInfo(src.info.name, src.info.sfreq, src.info.ch_names, units="uV")
    in_uv = _reports(as_uv, data * 1e6)[-1]
    np.testing.assert_allclose([q.range_uv for q in in_uv], [q.range_uv for q in in_volts], rtol=1e-6)
    unknown = SignalInfo(src.info.name, src.info.sfreq, src.info.ch_names, units="a.u.")
    assert all(q.range_uv is None for q in _reports(unknown, data)[-1])
    mislabelled = SignalInfo(src.info.name, src.info.sfreq, src.info.ch_names, units="V")  # really µV
    assert all(q.range_uv is None for q in _reports(mislabelled, data * 1e6)[-1])
    assert len(_reports(src.info, data, interval=2.0)) == pytest.approx(len(_reports(src.info, data)) / 2, abs=1)
    assert _reports(src.info, data, enabled=False) == []
    assert microvolts_per_unit("microvolts") == 1.0 and microvolts_per_unit("mV") == 1e3


@pytest.mark.usefixtures("jack_server")
async def test_live_lsl_with_generic_labels_named_by_channels_reports_quality(source_id: str, tmp_path: Path) -> None:
    """An LSL stream labelled ch1..ch8, named with --channels: scalp groups play, quality reaches the
    snapshot (telemetry) and quality.jsonl under the new names, and nothing about generic labels is said."""
    port = f"bh-q-{uuid.uuid4().hex[:6]}"
    settings = load_settings(
        stream={"source_id": source_id, "timeout": 5.0},
        signal={"window": 1.0, "baseline": 2.0, "channels": "1=Fz,2=C3,3=Cz,4=C4,5=Pz,6=O1,8=O2"},
        music={"tempo": 150.0},
    )
    names = tuple(f"ch{i}" for i in range(1, 9))
    with SyntheticOutlet(source_id, n_channels=8, sfreq=250.0, ch_names=names):
        source = MappedSource(LSLSource(settings.stream), ChannelMap.parse(settings.signal.channels or ""))
        pipe = LivePipeline(settings, source, [RtMidiSink(port=None, virtual_name=port)], record_root=tmp_path)
        task = asyncio.create_task(pipe.run())
        reader = await asyncio.to_thread(MidiReader, port)
        try:
            async with asyncio.timeout(30):
                while len(note_ons(reader.snapshot())) < 4 or not pipe.quality:
                    await asyncio.sleep(0.05)
            snap = pipe.snapshot()
            pipe.stop("test over")
            await asyncio.wait_for(task, 10)
        finally:
            reader.close()
    assert set(snap["quality"]) == {"Fz", "C3", "Cz", "C4", "Pz", "O1", "O2"}
    assert snap["notices"] == []
    health = HealthTelemetry(connected=True, rate_hz=250.0, quality=snap["quality"], notices=snap["notices"])
    assert health.quality["Fz"]["verdict"] in ("good", "noisy")
    folder = pipe.recorder.folder  # type: ignore[union-attr]
    lines = read_jsonl(folder / "quality.jsonl")
    assert lines and set(lines[0]["channels"]) == set(snap["quality"])
    assert {"frontal", "central", "parietal", "occipital"} <= set(read_jsonl(folder / "states.jsonl")[-1]["groups"])
