"""Live MIDI on a real JACK server (dummy driver): RtMidiSink + realtime Scheduler, read back on a port."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import rtmidi

from brainharmonic_rt.config import InstrumentSettings
from brainharmonic_rt.errors import ConfigError, SinkError
from brainharmonic_rt.events import Note
from brainharmonic_rt.midiports import callback_refs, close_midi_in, compiled_apis, format_ports, list_ports
from brainharmonic_rt.sinks.rtmidi_port import RtMidiSink
from brainharmonic_rt.sinks.scheduler import Scheduler

from .midiutil import MidiReader, all_notes_off, note_offs, note_ons, unmatched_notes

pytestmark = pytest.mark.usefixtures("jack_server")

INSTRUMENTS = {
    "frontal": InstrumentSettings(channel=0, program=11),
    "temporal": InstrumentSettings(channel=2, program=32),
}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def live() -> Iterator[tuple[RtMidiSink, MidiReader]]:
    """A virtual output port opened by RtMidiSink and a reader connected to it."""
    port = _name("bh-out")
    sink = RtMidiSink(virtual_name=port, api="jack", client_name="bh-test-sink")
    sink.open(INSTRUMENTS, 120.0)
    reader = MidiReader(port)
    try:
        yield sink, reader
    finally:
        reader.close()
        sink.close()


@pytest.fixture
def destination() -> Iterator[tuple[str, list[list[int]]]]:
    """A virtual MIDI input (what a synth offers), so it shows up as an output port for us."""
    name = _name("bh-dest")
    got: list[list[int]] = []
    mi = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "bh-test-synth")
    mi.set_callback(lambda event, data=None: got.append(list(event[0])))
    mi.open_virtual_port(name)
    try:
        yield name, got
    finally:
        close_midi_in(mi)


def _wait(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


async def test_scheduled_notes_arrive_in_order_on_time_and_paired(
    live: tuple[RtMidiSink, MidiReader],
) -> None:
    sink, reader = live
    rng = np.random.default_rng(0)
    async with Scheduler([sink], realtime=True, instruments=INSTRUMENTS) as s:
        origin = s.origin
        assert origin is not None
        now = s.music_now()
        times = np.sort(now + rng.uniform(0.05, 0.3, size=40))
        notes = [Note(float(t), 0.03, 48 + i, 90, 0 if i % 2 else 2) for i, t in enumerate(times)]
        s.schedule(notes)
        await s.drain()
        assert reader.wait_for(lambda m: len(note_offs(m)) >= 40, 5.0)
    msgs = reader.snapshot()
    first_note = next(i for i, (_, m) in enumerate(msgs) if m[0] & 0xF0 == 0x90)
    programs = [m for _, m in msgs[:first_note] if m[0] & 0xF0 == 0xC0]
    assert sorted(programs) == [[0xC0, 11], [0xC2, 32]], "program changes come before the first note"
    ons = note_ons(msgs)
    assert [m[1] for _, m in ons] == [n.pitch for n in notes], "note_ons arrive in time order"
    lateness = np.array([t - (origin + n.time) for (t, _), n in zip(ons, notes, strict=True)])
    assert np.all(lateness > -0.002) and np.all(lateness < 0.02), lateness  # loose; see the benchmark
    assert unmatched_notes(msgs) == {}


async def test_leaving_the_scheduler_while_notes_sound_sends_offs_and_all_notes_off(
    live: tuple[RtMidiSink, MidiReader],
) -> None:
    sink, reader = live
    async with Scheduler([sink], realtime=True) as s:
        now = s.music_now()
        s.schedule([Note(now + 0.02, 30.0, 60, 100, 0), Note(now + 0.02, 30.0, 43, 100, 2)])
        assert reader.wait_for(lambda m: len(note_ons(m)) == 2, 5.0)
    assert reader.wait_for(lambda m: all_notes_off(m) >= {0, 2}, 5.0)
    msgs = reader.snapshot()
    assert sorted(m[1] for _, m in note_offs(msgs)) == [43, 60]
    assert unmatched_notes(msgs) == {}
    sustain_off = {m[0] & 0x0F for _, m in msgs if m[0] & 0xF0 == 0xB0 and m[1] == 64 and m[2] == 0}
    assert sustain_off >= {0, 2}


def test_close_silences_used_channels_and_is_idempotent(live: tuple[RtMidiSink, MidiReader]) -> None:
    import mido

    sink, reader = live
    sink.send(mido.Message("note_on", channel=5, note=70, velocity=90), 0.0)
    assert reader.wait_for(lambda m: len(note_ons(m)) == 1, 5.0)
    sink.close()
    sink.close()
    assert reader.wait_for(lambda m: all_notes_off(m) >= {0, 2, 5}, 5.0)
    assert unmatched_notes(reader.snapshot()) == {}
    with pytest.raises(SinkError, match="not open"):
        sink.send(mido.Message("note_on", channel=5, note=70, velocity=90), 0.0)


def test_existing_port_by_unique_substring(destination: tuple[str, list[list[int]]]) -> None:
    import mido

    name, got = destination
    sink = RtMidiSink(port=name.removeprefix("bh-").upper(), api="auto")  # case-insensitive substring
    sink.open({"x": InstrumentSettings(channel=3, program=5)}, 100.0)
    try:
        assert sink.port_name is not None and name in sink.port_name and sink.api_used == "jack"
        sink.send(mido.Message("note_on", channel=3, note=64, velocity=80), 0.0)
        assert _wait(lambda: [0x93, 64, 80] in got)
        assert got[0] == [0xC3, 5], "open() sends the program change first"
    finally:
        sink.close()
    assert _wait(lambda: [0xB3, 123, 0] in got)


def test_missing_port_lists_the_outputs_and_suggests_a_virtual_port(
    destination: tuple[str, list[list[int]]],
) -> None:
    name, _ = destination
    with pytest.raises(
        SinkError,
        match=rf"'no-such-synth' does not exist \(available outputs — jack: .*{name}.*--virtual-port",
    ):
        RtMidiSink(port="no-such-synth").open({}, 120.0)


def test_ambiguous_port_names_the_matches() -> None:
    base = _name("bh-amb")
    ins = []
    for i in range(2):
        mi = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "bh-test-amb")
        mi.open_virtual_port(f"{base}-{i}")
        ins.append(mi)
    try:
        with pytest.raises(SinkError, match=rf"'{base}' is ambiguous; it matches .*{base}-0.*{base}-1"):
            RtMidiSink(port=base, api="jack").open({}, 120.0)
    finally:
        for mi in ins:
            mi.close_port()
            mi.delete()


def test_list_ports_shows_what_exists(destination: tuple[str, list[list[int]]]) -> None:
    name, _ = destination
    ports = list_ports()
    assert any(name in p for p in ports["outputs"]["jack"])
    text = format_ports(ports)
    assert "MIDI outputs (jack):" in text and name in text and "MIDI inputs (jack):" in text


def test_no_jack_server_is_one_clear_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JACK_DEFAULT_SERVER", _name("bh-absent"))  # a server that is not running
    with pytest.raises(SinkError, match=r"JACK server is not running; start one with `jackd -d dummy"):
        RtMidiSink(api="jack").open({}, 120.0)
    if not os.path.exists("/dev/snd/seq"):  # no ALSA either: nothing works
        with pytest.raises(SinkError, match=r"No MIDI system is running \(tried .*jack\): start one with `jackd"):
            RtMidiSink(api="auto").open({}, 120.0)
        with pytest.raises(SinkError, match="No MIDI system is running"):
            list_ports()


def test_bad_api_and_no_port_choice() -> None:
    with pytest.raises(ConfigError, match="Unknown MIDI API 'pipewire'"):
        RtMidiSink(api="pipewire").open({}, 120.0)
    missing = next(a for a in ("winmm", "coremidi", "alsa", "jack") if a not in compiled_apis())
    with pytest.raises(SinkError, match=rf"MIDI API '{missing}' is not in this python-rtmidi build \(it has: "):
        RtMidiSink(api=missing).open({}, 120.0)
    with pytest.raises(SinkError, match="No MIDI output chosen; pass --midi-port NAME or --virtual-port NAME"):
        RtMidiSink(port=None, virtual_name=None).open({}, 120.0)


_CLOSE_RACE = """
import sys, threading, time, rtmidi
from brainharmonic_rt.midiports import close_midi_in
out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "bh-test-flood")
out.open_virtual_port(sys.argv[1])
stop = threading.Event()
def flood():
    while not stop.is_set():
        out.send_message([0x90, 60, 100]); out.send_message([0x80, 60, 0]); time.sleep(0.0005)
threading.Thread(target=flood, daemon=True).start()
got = [0]
def on(event, data=None):
    got[0] += 1
    sum(range(2000))  # a callback that holds the GIL a little, like a real one
for _ in range(int(sys.argv[2])):
    mi = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "bh-test-closer")
    mi.open_port([i for i, p in enumerate(mi.get_ports()) if sys.argv[1] in p][0])
    mi.set_callback(on)
    t = time.monotonic() + 0.03
    while time.monotonic() < t:  # the main thread busy in Python while messages arrive
        sum(range(1000))
    close_midi_in(mi)
stop.set(); time.sleep(0.01)
close_midi_in(None)
out.close_port(); out.delete()
print("received", got[0])
"""


def test_closing_an_input_while_messages_flow_neither_hangs_nor_crashes() -> None:
    """Open and close a MIDI input 60 times under a flood of messages, in a child process: a hang (thread
    killed holding the GIL) or a crash at exit (freed callback tuple) shows as a timeout or a bad exit code."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", _CLOSE_RACE, _name("bh-flood"), "60"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert int(run.stdout.split()[-1]) > 60  # messages really flowed into the callbacks


def test_the_callback_tuple_is_found_so_close_can_keep_it_alive() -> None:
    """close_midi_in finds python-rtmidi's (func, data) tuple through the garbage collector; if a new
    python-rtmidi stopped exposing it, the protection would vanish silently: this catches that."""
    mi = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "bh-test-refs")

    def on(event: object, data: object = None) -> None:
        pass

    try:
        assert callback_refs(mi) == []
        mi.set_callback(on, "payload")
        assert callback_refs(mi) == [(on, "payload")]
    finally:
        close_midi_in(mi)
    assert mi.is_deleted
