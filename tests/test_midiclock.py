"""MIDI clock: ticks from the composer's beat timeline, transport, and following an incoming clock.

Pure tick generation runs against a real ClassicComposer timeline and a virtual Scheduler; the rest
on a real JACK server (dummy driver): our clock read back from a JACK port, a clock we drive from a
thread on a virtual rtmidi port, and the live pipeline on a real LSL stream.

Note on timing: JACK hands MIDI over once per process cycle (256 frames = 5.3 ms in the tests'
server), so single tick intervals read back are multiples of the period; the median interval is off
by up to one period and the mean (or fitted slope) over many ticks is the sharp measure.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import mido
import numpy as np
import pytest
import rtmidi

from brainharmonic_rt.config import MusicSettings, load_settings
from brainharmonic_rt.errors import ConfigError, SinkError
from brainharmonic_rt.midiports import PPQN
from brainharmonic_rt.music.classic import ClassicComposer
from brainharmonic_rt.music.ensemble import resolve_instruments
from brainharmonic_rt.pipeline import LivePipeline
from brainharmonic_rt.sinks.base import MemorySink
from brainharmonic_rt.sinks.midiclock import ClockTrack, tick_times
from brainharmonic_rt.sinks.midifile import MidiFileSink
from brainharmonic_rt.sinks.rtmidi_port import RtMidiSink
from brainharmonic_rt.sinks.scheduler import Scheduler
from brainharmonic_rt.sources.lsl import LSLSource
from brainharmonic_rt.sources.midiclock import ClockFollower, TempoEstimator

from .lslutil import SyntheticOutlet
from .midiutil import MidiReader, note_ons, unmatched_notes

NAMES = ["frontal", "central", "parietal", "occipital"]
CLOCK, START, CONTINUE, STOP = 0xF8, 0xFA, 0xFB, 0xFC


def _composer(tempo: float = 120.0) -> ClassicComposer:
    music = MusicSettings(tempo=tempo)
    return ClassicComposer(resolve_instruments(NAMES, music), music)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _expected(c: ClassicComposer, first: int, end: float) -> list[float]:
    """Tick times from tick ``first`` up to ``end`` on the composer's final timeline."""
    out, k = [], first
    while (t := c.time_of_beat(k / PPQN)) < end - 1e-9:
        out.append(t)
        k += 1
    return out


def _spans(track: ClockTrack, c: ClassicComposer, edges: list[float]) -> list[tuple[float, mido.Message]]:
    out: list[tuple[float, mido.Message]] = []
    for a, b in itertools.pairwise(edges):
        out += track.span(c, a, b)
    return out


# ----------------------------------------------------------------------------- pure tick generation


def test_ticks_are_24_per_beat_start_first_and_spans_split_them_exactly() -> None:
    c = _composer(120.0)
    rng = np.random.default_rng(1)
    edges = [0.0, *np.sort(rng.uniform(0.0, 4.0, 37)).tolist(), 4.0]
    msgs = _spans(ClockTrack(), c, edges)
    assert [m.type for _, m in msgs[:2]] == ["start", "clock"]
    assert sum(m.type == "start" for _, m in msgs) == 1
    ticks = [t for t, m in msgs if m.type == "clock"]
    assert len(ticks) == 4.0 * 2 * PPQN  # 8 beats at 120 BPM
    assert np.allclose(ticks, _expected(c, 0, 4.0))
    assert np.allclose(np.diff(ticks), 60.0 / 120.0 / PPQN)
    # one span gives the same ticks as 38 spans
    assert [t for t, m in ClockTrack().span(c, 0.0, 4.0) if m.type == "clock"] == ticks


def test_start_waits_for_the_first_bar_line() -> None:
    c = _composer(120.0)
    track = ClockTrack()
    assert track.span(c, 0.3, 0.55) == []  # beats 0.6-1.1: no bar line yet
    msgs = _spans(track, c, [0.55, 1.3, 2.4, 3.0])
    start = [t for t, m in msgs if m.type == "start"]
    assert start == [pytest.approx(2.0)]  # beat 4 = bar 2
    assert msgs[0][1].type == "start" and msgs[1][0] == pytest.approx(2.0)
    assert len([m for _, m in msgs if m.type == "clock"]) == 2 * PPQN  # beats 4..6


def test_ticks_follow_a_tempo_change() -> None:
    c = _composer(120.0)
    track = ClockTrack()
    before = _spans(track, c, [0.0, 0.5, 1.0])
    c.retime(1.0, 60.0)  # at the frontier, as a harmonic plan does at a bar line
    after = _spans(track, c, [1.0, 1.7, 3.0])
    ticks = [t for t, m in before + after if m.type == "clock"]
    gaps = np.diff(ticks)
    assert np.allclose(gaps[: 2 * PPQN - 1], 0.5 / PPQN)
    assert np.allclose(gaps[2 * PPQN :], 1.0 / PPQN)
    assert np.allclose(ticks, _expected(c, 0, 3.0))


@pytest.mark.parametrize("at", [1.0, 1.0 + 1e-13, 1.0 - 1e-13, 1.2345, 1.5 + 0.5 / PPQN])
def test_recompose_replaces_ticks_after_the_cut_without_doubles_or_gaps(at: float) -> None:
    """Ticks scheduled up to 3 s, then a tempo change at ``at`` with cancel + rewind + regenerate."""
    c = _composer(120.0)
    track = ClockTrack()
    sink = MemorySink(wants_clock=True)
    s = Scheduler([sink], realtime=False)
    s.open()
    try:
        edges = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0]
        s.advance(0.9)
        for a, b in itertools.pairwise(edges):
            s.schedule_messages(track.span(c, a, b))
        c.retime(at, 90.0)
        s.cancel(after=at)
        track.rewind(at)
        s.schedule_messages(track.span(c, at, 3.0))
        s.schedule_messages(track.span(c, 3.0, 4.0))
        s.advance(4.0)
    finally:
        s.close()
    got = [(t, m.type) for t, m in sink.messages]
    assert got[0] == (0.0, "start") and got[-1][1] == "stop"
    ticks = [t for t, kind in got if kind == "clock"]
    want = _expected(c, 0, 4.0)
    assert len(ticks) == len(want), "no tick doubled or missing across the cut"
    assert np.allclose(ticks, want)
    assert min(np.diff(ticks)) > 0.5 / PPQN * 0.99


def test_a_leaders_beat_jump_keeps_ticks_in_time_order() -> None:
    c = _composer(120.0)
    track = ClockTrack()
    first = _spans(track, c, [0.0, 1.0, 2.0])
    c.retime(2.0, 120.0, beat=c.beat_at(2.0) - 0.3)  # renumbered at the frontier (a follower snapping)
    later = _spans(track, c, [2.0, 2.5, 3.0])
    ticks = [t for t, m in first + later if m.type == "clock"]
    assert np.all(np.diff(ticks) > 0)
    assert max(np.diff(ticks)) < 2 * 0.5 / PPQN  # a phase jump: one interval changes, no tick is lost
    assert tick_times(c, 2.0, 2.5)[0][1] >= 2.0


def test_clock_goes_only_to_clock_sinks_and_transport_is_consistent(tmp_path: Path) -> None:
    """Start once, Stop on panic, Continue on the next tick, Stop on close; files get no clock."""
    c = _composer(120.0)
    track = ClockTrack()
    live, memory = MemorySink(wants_clock=True), MemorySink()
    midfile = MidiFileSink(tmp_path / "clock.mid")
    insts = resolve_instruments(NAMES, MusicSettings())
    for sink in (live, memory, midfile):
        sink.open(insts, 120.0)
    s = Scheduler([live, memory, midfile], realtime=False)
    s.open()
    try:
        s.schedule_messages(track.span(c, 0.0, 1.0))
        s.schedule_messages([(0.5, mido.Message("start"))])  # a second Start is never sent
        s.advance(0.6)
        s.panic()
        s.schedule_messages(track.span(c, 1.0, 2.0))
        s.advance(2.0)
        assert s.transport == "running"
    finally:
        s.close()
    for sink in (live, memory, midfile):
        sink.close()
    kinds = [m.type for _, m in live.messages if m.type in ("clock", "start", "stop", "continue")]
    assert live.messages[0][1].type == "start" and kinds.count("start") == 1
    assert kinds.count("stop") == 2 and kinds[-1] == "stop"
    i_stop = kinds.index("stop")
    assert kinds[i_stop + 1] == "continue" and kinds[i_stop + 2] == "clock"
    assert kinds.count("clock") == 29 + 48  # ticks 0..28 (up to 0.6 s), then all of the second span
    assert not [m for _, m in memory.messages if m.type in ("clock", "start", "stop", "continue")]
    mid = mido.MidiFile(tmp_path / "clock.mid")
    assert not [m for tr in mid.tracks for m in tr if m.type in ("clock", "start", "stop", "continue")]


async def test_an_error_inside_the_run_still_sends_stop() -> None:
    c, track = _composer(120.0), ClockTrack()
    sink = MemorySink(wants_clock=True)
    with pytest.raises(RuntimeError, match="composer broke"):
        async with Scheduler([sink], realtime=True) as s:
            s.schedule_messages(track.span(c, 0.0, 2.0))
            while s.transport != "running":
                await asyncio.sleep(0.01)
            raise RuntimeError("composer broke")
    kinds = [m.type for _, m in sink.messages]
    assert kinds[0] == "start" and kinds[-1] == "stop" and kinds.count("stop") == 1
    assert 0 < kinds.count("clock") < 96, "pending ticks are dropped, not played out"


# ----------------------------------------------------------------------------- tempo estimate


def _jack_like(bpm: float, n: int, period: float = 256 / 48000, seed: int = 0) -> list[float]:
    """Delta times of ``n`` ticks at ``bpm`` as JACK stamps them: at the end of the cycle they fall in."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 60.0 / bpm / PPQN + rng.uniform(0, period)
    stamps = np.ceil(t / period) * period + rng.normal(0, 2e-4, n)  # plus wake-up jitter
    return np.diff(np.concatenate([[stamps[0]], stamps])).tolist()


@pytest.mark.parametrize("bpm", [60.0, 96.0, 120.0, 174.0])
def test_tempo_estimate_is_sharp_despite_period_quantisation(bpm: float) -> None:
    est = TempoEstimator()
    got = [e for d in _jack_like(bpm, 200, seed=int(bpm)) if (e := est.feed(CLOCK, d)) is not None]
    assert got, "an estimate after one beat"
    assert abs(got[-1] - bpm) < 0.25
    assert all(abs(g - bpm) < 1.0 for g in got)


def test_tempo_estimate_resets_on_transport_and_gaps_and_follows_changes() -> None:
    est = TempoEstimator()
    for d in _jack_like(120.0, 100):
        est.feed(CLOCK, d)
    assert est.tempo == pytest.approx(120.0, abs=0.3)
    est.feed(STOP, 0.01)
    assert est.running is False
    est.feed(START, 3.0)  # the pause between Stop and Start is no tick interval
    assert est.running is True
    deltas = _jack_like(90.0, 30)
    for d in deltas[:20]:
        assert est.feed(CLOCK, d) is None  # not a beat of ticks yet
    for d in deltas[20:]:
        est.feed(CLOCK, d)
    assert est.tempo == pytest.approx(90.0, abs=0.5)
    est.feed(CLOCK, 2.0)  # a pause without Stop starts a new run of ticks
    assert all(est.feed(CLOCK, d) is None for d in _jack_like(140.0, 20))
    for d in _jack_like(140.0, 60):
        est.feed(CLOCK, d)
    assert est.tempo == pytest.approx(140.0, abs=0.5)


# ----------------------------------------------------------------------------- on a real JACK port


class ClockDriver:
    """A virtual JACK MIDI output sending Start and 24 ticks per beat from a thread (absolute targets)."""

    def __init__(self, name: str, bpm: float) -> None:
        self.name, self.bpm = name, bpm
        self._out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "bh-test-clock")
        self._out.open_virtual_port(name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0

    def start(self) -> ClockDriver:
        self._thread.start()
        return self

    def _run(self) -> None:
        self._out.send_message([START])
        target = time.monotonic()
        while not self._stop.is_set():
            target += 60.0 / self.bpm / PPQN
            while (delay := target - time.monotonic()) > 0:
                time.sleep(min(delay, 0.002))
            self._out.send_message([CLOCK])
            self.sent += 1
        self._out.send_message([STOP])

    def close(self) -> None:
        """Stop (sending Stop), then close and delete the client explicitly; idempotent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._out.is_deleted:
            return
        time.sleep(0.05)  # let JACK hand the Stop over before the port goes
        self._out.close_port()
        self._out.delete()


def _sync(msgs: list[tuple[float, list[int]]]) -> list[tuple[float, int]]:
    return [(t, m[0]) for t, m in msgs if m and m[0] in (CLOCK, START, CONTINUE, STOP)]


def _interval_stats(times: list[float]) -> tuple[float, float, float]:
    """(median, mean, p99 of |interval - mean|) in seconds."""
    d = np.diff(times)
    return float(np.median(d)), float(d.mean()), float(np.percentile(np.abs(d - d.mean()), 99))


@pytest.mark.usefixtures("jack_server")
async def test_clock_on_a_jack_port_follows_a_retime_and_stops() -> None:
    """Realtime Scheduler + RtMidiSink, spans scheduled ahead like the pipeline does; a retime halfway."""
    port = _name("bh-clk")
    sink = RtMidiSink(virtual_name=port, api="jack", client_name="bh-test-clock-out")
    sink.open({}, 120.0)
    reader = await asyncio.to_thread(MidiReader, port)
    c, track = _composer(120.0), ClockTrack()
    change: float | None = None
    try:
        async with Scheduler([sink], realtime=True) as s:
            frontier = 0.2
            while (now := s.music_now()) < 7.0:
                while frontier < now + 0.35:  # lookahead + hop, as in the pipeline
                    s.schedule_messages(track.span(c, frontier, frontier + 0.25))
                    frontier += 0.25
                if change is None and now > 3.5:
                    change = now + 0.01  # the same cut as set_tempo
                    c.retime(change, 90.0)
                    s.cancel(after=change)
                    track.rewind(change)
                    s.schedule_messages(track.span(c, change, frontier))
                await asyncio.sleep(0.05)
            origin = s.origin
        await asyncio.sleep(0.2)
    finally:
        reader.close()
        sink.close()
    assert origin is not None and change is not None
    sync = _sync(reader.snapshot())
    kinds = [k for _, k in sync]
    assert kinds[0] == START and kinds.count(START) == 1
    assert kinds[-1] == STOP and kinds.count(STOP) == 1
    assert CONTINUE not in kinds
    ticks = [t - origin for t, k in sync if k == CLOCK]
    assert len(ticks) == len(_expected(c, PPQN * 4, ticks[-1] + 0.01)), "every tick from bar 2 on, once"
    first = [t for t in ticks if 2.0 + 0.03 < t < change - 0.03]
    second = [t for t in ticks if change + 0.03 < t]
    for seg, bpm in ((first, 120.0), (second, 90.0)):
        want = 60.0 / bpm / PPQN
        median, mean, p99 = _interval_stats(seg)
        print(
            f"{bpm:g} BPM: {len(seg)} ticks, interval want {want * 1e3:.3f} ms, median {median * 1e3:.3f} ms, "
            f"mean {mean * 1e3:.3f} ms, p99 |jitter| {p99 * 1e3:.2f} ms"
        )
        assert mean == pytest.approx(want, rel=0.01)
        assert median == pytest.approx(want, rel=0.06)  # within one 5.3 ms JACK period of quantisation


@pytest.mark.usefixtures("jack_server")
def test_follower_estimates_a_driven_clock_and_its_transport() -> None:
    name = _name("bh-clkin")
    driver = ClockDriver(name, 120.0)
    follower = ClockFollower(name, api="jack")
    try:
        follower.open()
        assert follower.port_name is not None and name in follower.port_name
        driver.start()
        deadline = time.monotonic() + 10
        while (follower.tempo is None or follower.estimator.ticks < 96) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert follower.running is True
        assert follower.tempo == pytest.approx(120.0, abs=1.0)
        driver.bpm = 87.0
        time.sleep(2.5)
        assert follower.tempo == pytest.approx(87.0, abs=1.0)
        driver.close()
        time.sleep(0.1)
        assert follower.running is False
    finally:
        driver.close()
        follower.close()
    follower.close()  # idempotent


@pytest.mark.usefixtures("jack_server")
def test_missing_clock_input_names_the_available_ones() -> None:
    name = _name("bh-clkin")
    driver = ClockDriver(name, 120.0)
    try:
        with pytest.raises(SinkError, match=rf"MIDI clock input port 'no-such-clock' does not exist .*{name}"):
            ClockFollower("no-such-clock", api="jack").open()
    finally:
        driver.close()


# ----------------------------------------------------------------------------- the live pipeline


async def _until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.usefixtures("jack_server")
async def test_pipeline_sends_clock_and_follows_an_incoming_clock(source_id: str, tmp_path: Path) -> None:
    """LSL in, our clock out on a JACK port, tempo from a clock we drive (120 then 90 BPM); file gets none."""
    port, clk = _name("bh-out"), _name("bh-clkin")
    settings = load_settings(
        stream={"source_id": source_id, "timeout": 5.0},
        signal={"window": 1.0, "hop": 0.25, "baseline": 2.0},
        music={"tempo": 96.0, "seed": 3},
        output={"virtual_port": port, "midi_api": "jack", "midi_clock": True, "clock_in": clk},
    )
    driver = ClockDriver(clk, 120.0).start()
    sink = RtMidiSink(virtual_name=port, api="jack")
    mid = tmp_path / "run.mid"
    pipe = LivePipeline(settings, LSLSource(settings.stream), [sink, MidiFileSink(mid)])
    with SyntheticOutlet(source_id, n_channels=19, sfreq=250.0):
        task = asyncio.create_task(pipe.run())
        reader = await asyncio.to_thread(MidiReader, port)
        try:

            def tempo() -> float:
                return math.nan if pipe.engine is None else float(pipe.engine.composer.tempo)

            await _until(lambda: abs(tempo() - 120.0) <= 1.0, 20, "tempo 120")
            assert pipe.clock_in is not None and pipe.clock_in.tempo == pytest.approx(120.0, abs=1.0)
            await _until(lambda: sum(k == CLOCK for _, k in _sync(reader.snapshot())) > 3 * PPQN, 20, "ticks")
            driver.bpm = 90.0
            switched = time.monotonic()
            await _until(lambda: abs(tempo() - 90.0) <= 1.0, 10, "tempo 90")
            followed = time.monotonic()
            assert pipe.clock_in.tempo == pytest.approx(90.0, abs=1.0)
            await asyncio.sleep(2.5)
            pipe.stop("test over")
            await asyncio.wait_for(task, 10)
            await asyncio.sleep(0.2)
        finally:
            reader.close()
            driver.close()
    assert pipe.clock_in is not None and pipe.clock_in._in is None, "the clock input is closed after the run"
    print(f"followed 120 → 90 BPM {followed - switched:.2f} s after the sender changed")
    msgs = reader.snapshot()
    sync = _sync(msgs)
    kinds = [k for _, k in sync]
    assert kinds[0] == START and kinds.count(START) == 1 and kinds[-1] == STOP
    ticks = [t for t, k in sync if k == CLOCK]
    fast = [t for t in ticks if t < switched]
    slow = [t for t in ticks if t > followed + 0.5]  # after the cut and the lookahead
    for seg, bpm in ((fast[PPQN:], 120.0), (slow, 90.0)):
        median, mean, p99 = _interval_stats(seg)
        print(f"pipeline {bpm:g} BPM: median {median * 1e3:.3f} ms, mean {mean * 1e3:.3f} ms, p99 {p99 * 1e3:.2f} ms")
        assert mean == pytest.approx(60.0 / bpm / PPQN, rel=0.02)
    assert note_ons(msgs) and unmatched_notes(msgs) == {}
    assert math.isclose(pipe.engine.composer.tempo, 90.0, abs_tol=1.0)  # type: ignore[union-attr]
    played = [m for tr in mido.MidiFile(mid).tracks for m in tr]
    assert any(m.type == "note_on" for m in played)
    assert not [m for m in played if m.type in ("clock", "start", "stop", "continue")]


@pytest.mark.usefixtures("jack_server")
async def test_pipeline_with_a_missing_clock_input_stops_with_one_sentence(source_id: str) -> None:
    settings = load_settings(
        stream={"source_id": source_id, "timeout": 1.0},
        output={"virtual_port": None, "midi_api": "jack", "clock_in": "no-such-clock"},
    )
    pipe = LivePipeline(settings, LSLSource(settings.stream), [])
    with pytest.raises(SinkError, match="MIDI clock input port 'no-such-clock' does not exist"):
        await pipe.run()


@pytest.mark.usefixtures("jack_server")
def test_cli_run_with_a_missing_clock_input_prints_one_sentence() -> None:
    args = ["run", "--source-id", "none", "--no-midi", "--midi-clock", "--clock-in", "no-such-clock"]
    proc = subprocess.run(
        [sys.executable, "-m", "brainharmonic_rt.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 5
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "MIDI clock input port 'no-such-clock' does not exist" in lines[0], proc.stderr
    assert "--clock-in" in lines[0]


async def test_clock_input_and_a_sync_leader_cannot_both_set_the_tempo(source_id: str) -> None:
    settings = load_settings(
        stream={"source_id": source_id, "timeout": 1.0},
        output={"virtual_port": None, "midi_api": "jack", "clock_in": "some-clock"},
        control={"follow": "lead"},
    )
    pipe = LivePipeline(settings, LSLSource(settings.stream), [])
    with pytest.raises(ConfigError, match=r"output.clock_in \('some-clock'\) and control.follow \('lead'\) would both"):
        await pipe.run()
