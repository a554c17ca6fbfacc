"""The Scheduler: ordering, note pairing, panic, late notes, errors; virtual and wall clock.

The real MIDI port (JACK) timing test lives in test_sinks_rtmidi.py; here sinks are the
in-memory MemorySink and a sink that stamps arrival with time.monotonic().
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import mido
import pytest

from brainharmonic_rt.config import InstrumentSettings
from brainharmonic_rt.errors import SinkError
from brainharmonic_rt.events import Note
from brainharmonic_rt.music.clock import Scheduler, events_from_notes
from brainharmonic_rt.sinks.base import MemorySink


class StampSink(MemorySink):
    """MemorySink that also records the wall-clock arrival of each message."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []
        self.got = threading.Event()

    def send(self, msg: mido.Message, music_time: float) -> None:
        self.arrivals.append(time.monotonic())
        super().send(msg, music_time)
        self.got.set()


class BrokenSink(MemorySink):
    def send(self, msg: mido.Message, music_time: float) -> None:
        if msg.type == "note_on":
            raise OSError("device unplugged")
        super().send(msg, music_time)


def _kinds(sink: MemorySink) -> list[tuple[float, str, int, int]]:
    return [
        (round(t, 6), m.type, getattr(m, "channel", -1), getattr(m, "note", getattr(m, "control", -1)))
        for t, m in sink.messages
    ]


def _unpaired(msgs: list[tuple[float, mido.Message]]) -> dict[tuple[int, int], int]:
    count: dict[tuple[int, int], int] = {}
    for _, m in msgs:
        if m.type == "note_on" and m.velocity > 0:
            count[(m.channel, m.note)] = count.get((m.channel, m.note), 0) + 1
        elif m.type == "note_off":
            count[(m.channel, m.note)] = count.get((m.channel, m.note), 0) - 1
    return {k: v for k, v in count.items() if v != 0}


async def test_virtual_delivers_in_time_order_with_program_changes_first() -> None:
    sink = MemorySink()
    inst = {"a": InstrumentSettings(channel=2, program=11), "b": InstrumentSettings(channel=0, program=32)}
    async with Scheduler([sink], realtime=False, instruments=inst) as s:
        s.schedule([Note(1.0, 0.5, 64, 90, 2), Note(0.5, 1.0, 40, 80, 0)])
        s.advance(0.75)
        assert _kinds(sink)[-1] == (0.5, "note_on", 0, 40), "only what is due has been delivered"
        s.advance(10.0)
    assert _kinds(sink)[:6] == [
        (0.0, "program_change", 0, -1),
        (0.0, "program_change", 2, -1),
        (0.5, "note_on", 0, 40),
        (1.0, "note_on", 2, 64),
        (1.5, "note_off", 2, 64),  # equal times keep scheduling order
        (1.5, "note_off", 0, 40),
    ]
    assert [m.program for _, m in sink.messages[:2]] == [32, 11]
    assert _unpaired(sink.messages) == {}


async def test_note_off_precedes_note_on_at_the_same_time() -> None:
    sink = MemorySink()
    async with Scheduler([sink], realtime=False) as s:
        s.schedule([Note(1.0, 0.5, 60, 90, 0), Note(0.5, 0.5, 60, 90, 0)])  # back to back, same pitch
        s.advance(5.0)
    notes = [(t, m.type) for t, m in sink.messages if m.type.startswith("note")]
    assert notes == [(0.5, "note_on"), (1.0, "note_off"), (1.0, "note_on"), (1.5, "note_off")]


async def test_note_offs_leave_before_note_ons_when_float_noise_puts_the_end_a_hair_later() -> None:
    """Robustness fault 9: a learned run showed 8 notes sounding on the port under a cap of 6. A note's end
    ``time + duration`` (0.1 + 0.2 = 0.30000000000000004) and the next onset on the grid (0.3) are one
    instant: the note_off must leave first, so the port never holds more notes than the composer allowed."""
    sink = MemorySink()
    async with Scheduler([sink], realtime=False) as s:
        s.schedule([Note(0.1, 0.2, 60, 90, 0), Note(0.3, 0.5, 64, 90, 1)])
        s.advance(5.0)
    kinds = [m.type for _, m in sink.messages if m.type.startswith("note")]
    assert kinds == ["note_on", "note_off", "note_on", "note_off"]
    assert s.stats()["played"] == 2 and [n.pitch for n in s.take_played()] == [60, 64]


async def test_retrigger_ends_the_sounding_note_first_and_skips_its_late_off() -> None:
    sink = MemorySink()
    async with Scheduler([sink], realtime=False) as s:
        s.schedule([Note(0.0, 2.0, 60, 90, 0), Note(1.0, 0.5, 60, 70, 0)])
        s.advance(5.0)
    notes = [(t, m.type, m.velocity) for t, m in sink.messages if m.type.startswith("note")]
    assert notes == [(0.0, "note_on", 90), (1.0, "note_off", 0), (1.0, "note_on", 70), (1.5, "note_off", 0)]
    assert s.stats()["sounding"] == 0


async def test_panic_on_exit_silences_sounding_notes_and_every_used_channel() -> None:
    sink = MemorySink()
    async with Scheduler([sink], realtime=False, instruments={"x": InstrumentSettings(channel=5)}) as s:
        s.schedule([Note(0.0, 10.0, 50, 90, 1), Note(0.0, 10.0, 55, 90, 3), Note(20.0, 1.0, 70, 90, 4)])
        s.advance(1.0)
        assert s.stats()["sounding"] == 2
    tail = _kinds(sink)[-10:]
    assert tail[:2] == [(1.0, "note_off", 1, 50), (1.0, "note_off", 3, 55)]
    cc = {(ch, ctl) for _, kind, ch, ctl in tail if kind == "control_change"}
    assert cc == {(ch, ctl) for ch in (1, 3, 4, 5) for ctl in (123, 64)}
    assert all(m.value == 0 for _, m in sink.messages if m.type == "control_change")
    assert not any(m.type == "note_on" and m.note == 70 for _, m in sink.messages), "pending notes are dropped"
    assert _unpaired(sink.messages) == {}


async def test_a_note_in_the_past_is_sent_at_once_and_counted_late() -> None:
    sink = MemorySink()
    async with Scheduler([sink], realtime=False) as s:
        s.advance(3.0)
        s.schedule([Note(1.0, 0.5, 60, 90, 0)])
        assert [m.type for _, m in sink.messages] == ["note_on", "note_off"]
        assert s.stats()["late"] == 1 and s.stats()["scheduled"] == 1


async def test_drain_in_virtual_mode_delivers_everything() -> None:
    sink = MemorySink()
    async with Scheduler([sink], realtime=False) as s:
        s.schedule([Note(100.0, 5.0, 60, 90, 0)])
        await s.drain()
        assert [(t, m.type) for t, m in sink.messages] == [(100.0, "note_on"), (105.0, "note_off")]
        assert s.stats()["pending"] == 0


async def test_lifecycle_errors_are_clear() -> None:
    s = Scheduler([MemorySink()], realtime=False)
    with pytest.raises(RuntimeError, match="not running"):
        s.schedule([Note(0.0, 1.0, 60, 90, 0)])
    async with s:
        with pytest.raises(RuntimeError, match="cannot be entered twice"):
            await s.__aenter__()
    rt = Scheduler([MemorySink()], realtime=True)
    async with rt:
        with pytest.raises(RuntimeError, match="advance\\(\\) is for virtual mode"):
            rt.advance(1.0)


async def test_a_failing_sink_becomes_a_sink_error_on_the_next_call() -> None:
    async with Scheduler([BrokenSink()], realtime=False) as s:
        s.schedule([Note(0.0, 1.0, 60, 90, 0)])
        with pytest.raises(SinkError, match=r"BrokenSink failed while sending note_on .*device unplugged"):
            s.advance(1.0)


def test_events_from_notes_matches_the_scheduler_and_ends_silent() -> None:
    notes = [Note(0.25, 0.5, 62, 80, 1, "a"), Note(0.0, 1.0, 50, 70, 0, "b")]
    ev = events_from_notes(notes, {"b": InstrumentSettings(channel=0, program=4)})
    assert ev[0][1].type == "program_change"
    assert [(t, m.type, m.note) for t, m in ev if m.type.startswith("note")] == [
        (0.0, "note_on", 50),
        (0.25, "note_on", 62),
        (0.75, "note_off", 62),
        (1.0, "note_off", 50),
    ]
    assert {m.control for _, m in ev if m.type == "control_change"} == {123, 64}


async def test_realtime_hits_absolute_targets_without_drift() -> None:
    sink = StampSink()
    before = sys.getswitchinterval()
    async with Scheduler([sink], realtime=True) as s:
        assert sys.getswitchinterval() == pytest.approx(0.0002)
        now = s.music_now()
        notes = [Note(now + 0.05 + 0.01 * i, 0.02, 40 + i, 90, 0) for i in range(30)]
        s.schedule(list(reversed(notes)))  # order of scheduling does not matter
        await s.drain()
        origin = s.origin
        assert origin is not None
        stats = s.stats()
    assert sys.getswitchinterval() == before, "the switch interval is restored on exit"
    ons = [(a, m) for a, (_, m) in zip(sink.arrivals, sink.messages, strict=True) if m.type == "note_on"]
    assert [m.note for _, m in ons] == [n.pitch for n in notes]
    lateness = [a - (origin + n.time) for (a, _), n in zip(ons, notes, strict=True)]
    assert all(-0.001 < x < 0.02 for x in lateness), lateness  # loose: precise numbers are in the benchmark
    assert stats["scheduled"] == 30 and stats["pending"] == 0 and stats["late"] == 0
    assert _unpaired(sink.messages) == {}


async def test_realtime_set_origin_and_panic_mid_run() -> None:
    sink = StampSink()
    async with Scheduler([sink], realtime=True) as s:
        s.set_origin(time.monotonic() + 0.1)  # music time 0 is 100 ms from now
        t_set = time.monotonic()
        s.schedule([Note(0.0, 5.0, 60, 90, 0), Note(0.0, 5.0, 64, 90, 0)])
        assert await asyncio.to_thread(sink.got.wait, 2.0)
        assert sink.arrivals[0] - t_set > 0.09
        await asyncio.sleep(0.01)
        s.panic()
        assert s.stats()["sounding"] == 0
        s.schedule([Note(s.music_now() + 0.02, 0.02, 67, 90, 0)])  # scheduling continues after a panic
        await s.drain()
    kinds = [(m.type, getattr(m, "note", getattr(m, "control", None))) for _, m in sink.messages]
    assert kinds[:6] == [
        ("note_on", 60),
        ("note_on", 64),
        ("note_off", 60),
        ("note_off", 64),
        ("control_change", 123),
        ("control_change", 64),
    ]
    assert ("note_on", 67) in kinds and _unpaired(sink.messages) == {}
