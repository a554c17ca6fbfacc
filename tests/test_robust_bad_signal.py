"""Bad electrodes never end a show and never reach the music as NaN (robustness issue, faults 1 and 6).

Live tests run a real LSL outlet into the pipeline with a session recording and a real JACK MIDI port;
the property test drives the brain (classic and learned, real onnxruntime), the recorder, the telemetry
schema and both composers with random bad-channel patterns and NaN bursts.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brainharmonic_rt.brain.classic import ClassicBrain
from brainharmonic_rt.brain.encoder import EncoderModel, LearnedBrain
from brainharmonic_rt.config import load_settings
from brainharmonic_rt.control.messages import BrainTelemetry
from brainharmonic_rt.events import Chunk, SignalInfo
from brainharmonic_rt.music.classic import ClassicComposer
from brainharmonic_rt.music.ensemble import resolve_instruments
from brainharmonic_rt.music.generator import GeneratorModel
from brainharmonic_rt.music.learned import LearnedComposer
from brainharmonic_rt.pipeline import LivePipeline
from brainharmonic_rt.recording import SessionRecorder, read_jsonl
from brainharmonic_rt.signal import SignalChain
from brainharmonic_rt.sinks.rtmidi_port import RtMidiSink
from brainharmonic_rt.sources.lsl import LSLSource

from .lslutil import TEN_TWENTY, SyntheticOutlet
from .midiutil import MidiReader, note_ons, unmatched_notes

GENERIC = tuple(f"E{i + 1}" for i in range(8))  # no 10-20 names: 4 fallback groups of 2 channels


def _live_settings(source_id: str, port: str):
    return load_settings(
        stream={"source_id": source_id, "timeout": 5.0, "lost_after": 1.0},
        signal={"window": 1.0, "hop": 0.25, "baseline": 1.5},
        music={"tempo": 150.0, "seed": 3},
        output={"virtual_port": port},
    )


async def _until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def _ons_on(reader: MidiReader, channel: int, after: float) -> int:
    return sum(1 for t, m in note_ons(reader.snapshot()) if (m[0] & 0x0F) == channel and t > after)


@pytest.mark.usefixtures("jack_server")
async def test_flat_group_fades_its_instrument_and_the_recorded_run_goes_on(source_id: str, tmp_path: Path) -> None:
    """Fault 1: two flat channels out of 8 (one whole fallback group) with --record ended the run with a
    traceback (NaN band power → json.dumps(allow_nan=False)). Now the run goes on, the group is flagged,
    its instrument falls silent within a bar and comes back when the electrodes do."""
    port = f"bh-{uuid.uuid4().hex[:6]}"
    settings = _live_settings(source_id, port)
    with SyntheticOutlet(source_id, n_channels=8, sfreq=250.0, ch_names=GENERIC) as outlet:
        sink = RtMidiSink(port=None, virtual_name=port)
        pipe = LivePipeline(settings, LSLSource(settings.stream), [sink], record_root=tmp_path)
        task = asyncio.create_task(pipe.run())
        reader = await asyncio.to_thread(MidiReader, port)
        try:
            await _until(lambda: pipe.engine is not None and pipe.stats.windows >= 12, 20, "calibration")
            assert pipe.engine is not None
            channel = pipe.engine.instruments["group2"].channel
            await _until(lambda: _ons_on(reader, channel, 0.0) > 0, 20, "group2's first notes")
            outlet.flat_channels.update({2, 3})  # E3, E4: the whole of group2
            went_flat = time.monotonic()
            await asyncio.sleep(6.0)
            assert not task.done(), "the run must go on with a flat electrode group"
            late = _ons_on(reader, channel, went_flat + 4.0)
            others = sum(
                _ons_on(reader, pipe.engine.instruments[g].channel, went_flat + 4.0) for g in ("group1", "group4")
            )
            outlet.flat_channels.clear()
            back = time.monotonic()
            await _until(lambda: _ons_on(reader, channel, back) > 0, 15, "group2's notes after the electrodes return")
            pipe.stop("test over")
            await asyncio.wait_for(task, 10)
            await asyncio.sleep(0.2)
        finally:
            reader.close()
    assert late == 0, "the flat group's instrument falls silent within a bar (+ window + lookahead)"
    assert others > 0, "the other instruments play on"
    assert unmatched_notes(reader.snapshot()) == {}
    folder = pipe.recorder.folder  # type: ignore[union-attr]
    lines = (folder / "states.jsonl").read_text().splitlines()
    states = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in states.jsonl")) for line in lines]
    assert len(states) == pipe.stats.windows
    assert any(s["groups"]["group2"]["n_good"] == 0 for s in states), "the flat group is flagged"
    for s in states:
        for g in s["groups"].values():
            assert all(math.isfinite(v) for v in (*g["power"].values(), *g["z"].values()))
    events = read_jsonl(folder / "events.jsonl")
    silent = [e for e in events if e["event"] == "groups_silent"]
    assert silent and silent[0]["groups"] == ["group2"] and silent[-1]["groups"] == []


@pytest.mark.usefixtures("jack_server")
async def test_every_channel_nan_holds_silence_and_says_so_then_recovers(source_id: str, tmp_path: Path) -> None:
    """Fault 6 (and 1): an all-NaN stream played 65 ordinary notes in 30 s and said nothing (and ended a
    recorded run). Now: one line, an event, silence within a bar; music again when the signal returns."""
    port = f"bh-{uuid.uuid4().hex[:6]}"
    settings = _live_settings(source_id, port)
    with SyntheticOutlet(source_id, n_channels=19, sfreq=250.0) as outlet:
        sink = RtMidiSink(port=None, virtual_name=port)
        pipe = LivePipeline(settings, LSLSource(settings.stream), [sink], record_root=tmp_path)
        task = asyncio.create_task(pipe.run())
        reader = await asyncio.to_thread(MidiReader, port)
        try:
            await _until(lambda: len(note_ons(reader.snapshot())) >= 5, 20, "first notes")
            outlet.nan_channels.update(range(19))
            went_bad = time.monotonic()
            await asyncio.sleep(5.0)
            assert not task.done()
            late = [t for t, _ in note_ons(reader.snapshot()) if t > went_bad + 3.5]
            assert pipe.snapshot()["signal"]["ok"] is False
            outlet.nan_channels.clear()
            back = time.monotonic()
            await _until(lambda: any(t > back for t, _ in note_ons(reader.snapshot())), 15, "notes after recovery")
            pipe.stop("test over")
            await asyncio.wait_for(task, 10)
            await asyncio.sleep(0.2)
        finally:
            reader.close()
    assert late == [], "no notes while every channel is bad"
    assert unmatched_notes(reader.snapshot()) == {}
    events = [e["event"] for e in read_jsonl(pipe.recorder.folder / "events.jsonl")]  # type: ignore[union-attr]
    assert events.count("no_signal") == 1 and events.count("signal_back") == 1


# --------------------------------------------------------------------------- property test

SFREQ = 128.0
SECONDS = 9.0
N = int(SFREQ * SECONDS)


@pytest.fixture(scope="module")
def encoder() -> EncoderModel:
    return EncoderModel.load()


@pytest.fixture(scope="module")
def generator() -> GeneratorModel:
    return GeneratorModel()


_event = st.tuples(
    st.sampled_from(["nan", "flat", "zero", "rail", "huge", "inf"]),
    st.floats(0.0, SECONDS - 0.1),  # start (s)
    st.floats(0.05, SECONDS),  # length (s)
)


def _signal(n_channels: int, events: list[tuple[int, tuple[str, float, float]]], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(N) / SFREQ
    x = 20e-6 * np.sin(2 * np.pi * 10 * t)[None, :] + 5e-6 * rng.standard_normal((n_channels, N))
    for ch, (kind, start, length) in events:
        a, b = int(start * SFREQ), min(N, int((start + length) * SFREQ) + 1)
        seg = {"nan": np.nan, "flat": 4e-6, "zero": 0.0, "inf": np.inf, "huge": 1e30}.get(kind)
        if kind == "rail":
            x[ch, a:b] = np.clip(x[ch, a:b] * 50, -100e-6, 100e-6)
        else:
            x[ch, a:b] = seg
    return x


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_channels=st.sampled_from([4, 8, 19]),
    named=st.booleans(),
    events=st.lists(st.tuples(st.integers(0, 18), _event), max_size=8),
    all_nan_burst=st.one_of(st.none(), st.tuples(st.floats(0.0, SECONDS - 1.0), st.floats(0.2, 3.0))),
    seed=st.integers(0, 2**16),
)
def test_random_bad_channels_and_nan_bursts_never_reach_music_as_nan(
    tmp_path: Path, encoder, generator, n_channels, named, events, all_nan_burst, seed
) -> None:
    names = TEN_TWENTY[:n_channels] if named else tuple(f"X{i}" for i in range(n_channels))
    info = SignalInfo("bad-electrodes", SFREQ, names)
    ev = [(ch % n_channels, e) for ch, e in events]
    if all_nan_burst is not None:
        ev += [(c, ("nan", all_nan_burst[0], all_nan_burst[1])) for c in range(n_channels)]
    data = _signal(n_channels, ev, seed)
    s = load_settings(signal={"window": 2.0, "hop": 0.5, "baseline": 2.0, "notch": 0.0}, music={"seed": seed})
    chain = SignalChain(info, s.signal)
    classic_brain = ClassicBrain(info, s.signal, s.bands)
    learned_brain = LearnedBrain(info, s.signal, s.bands, model=encoder)
    instruments = resolve_instruments(list(classic_brain.groups), s.music)
    composers = [
        ClassicComposer(instruments, s.music, s.harmony),
        LearnedComposer(instruments, s.music, s.generator, s.harmony, model=generator),
    ]
    folder = tmp_path / f"p{uuid.uuid4().hex[:6]}"
    with SessionRecorder(folder, s, info, name="s") as rec:
        for a in range(0, N, 32):
            chunk = Chunk(data[:, a : a + 32], np.arange(a, min(a + 32, N)) / SFREQ)
            rec.write_chunk(chunk)
            for window in chain.push(chunk):
                for brain in (classic_brain, learned_brain):
                    state = brain.process(window)  # GroupState/BrainState refuse non-finite numbers
                    rec.write_state(state)
                    json.loads(BrainTelemetry.from_state(state).model_dump_json())
                start = window.t_end + 0.1
                for composer in composers:
                    notes = composer.compose(state, start, start + s.signal.hop)
                    for note in notes:
                        assert math.isfinite(note.time) and math.isfinite(note.duration)
                        group = state.group(note.instrument)
                        assert group.ok or composer.presence(note.instrument, note.time) > 0
                    rec.write_notes(notes)
    for line in (rec.folder / "states.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} written to states.jsonl"))
