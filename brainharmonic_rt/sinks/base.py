"""What a sink is, how one is chosen by name, and the messages that silence a synth.

Backends are imported lazily (like mido's ``MIDO_BACKEND``) so ``import
brainharmonic_rt.sinks`` never pulls in rtmidi or FluidSynth.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import mido

from ..config import InstrumentSettings


@runtime_checkable
class Sink(Protocol):
    """Where MIDI messages go. ``send`` may be called from the scheduler's thread.

    A sink that wants MIDI clock and transport messages (a live port a DAW follows) has a class
    attribute ``wants_clock = True``; the Scheduler sends those to no other sink.
    """

    def open(self, instruments: dict[str, InstrumentSettings], tempo: float) -> None:
        """Get ready for a session with these instruments at ``tempo`` BPM."""

    def send(self, msg: mido.Message, music_time: float) -> None:
        """Deliver one message; ``music_time`` is its scheduled time in session seconds."""

    def close(self) -> None:
        """Leave the synth silent (all notes off on used channels) and free resources; idempotent."""


@runtime_checkable
class RecordsAudio(Protocol):
    """A sink that can keep what it plays as audio in the session folder (the live synth)."""

    def record_to(self, folder: Path) -> None:
        """Start keeping the audio in ``folder`` (if the sink was asked to record)."""


def silence_messages(channels: Iterable[int]) -> list[mido.Message]:
    """All-notes-off (CC 123) and sustain-off (CC 64 = 0) on each channel, in channel order."""
    out: list[mido.Message] = []
    for ch in sorted(set(channels)):
        out.append(mido.Message("control_change", channel=ch, control=123, value=0))
        out.append(mido.Message("control_change", channel=ch, control=64, value=0))
    return out


def program_changes(instruments: Mapping[str, InstrumentSettings]) -> list[mido.Message]:
    """One program change per used channel (first instrument on a channel wins), in channel order."""
    programs: dict[int, int] = {}
    for inst in instruments.values():
        programs.setdefault(inst.channel, inst.program)
    return [mido.Message("program_change", channel=ch, program=p) for ch, p in sorted(programs.items())]


def is_note_on(msg: mido.Message) -> bool:
    return bool(msg.type == "note_on" and msg.velocity > 0)


def is_note_off(msg: mido.Message) -> bool:
    return bool(msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0))


class NoteTracker:
    """Which (channel, pitch) pairs are sounding, so a sink can silence exactly those on close."""

    def __init__(self) -> None:
        self.sounding: set[tuple[int, int]] = set()
        self.channels: set[int] = set()

    def update(self, msg: mido.Message) -> None:
        if hasattr(msg, "channel"):
            self.channels.add(msg.channel)
        if is_note_on(msg):
            self.sounding.add((msg.channel, msg.note))
        elif is_note_off(msg):
            self.sounding.discard((msg.channel, msg.note))

    def silence(self) -> list[mido.Message]:
        """note_off for every sounding note, then :func:`silence_messages` on every used channel."""
        offs = [mido.Message("note_off", channel=c, note=p, velocity=0) for c, p in sorted(self.sounding)]
        self.sounding.clear()
        return offs + silence_messages(self.channels)


class MemorySink:
    """Keeps every message with its music time: for telemetry, recording and tests.

    ``wants_clock``: also keep MIDI clock and transport messages (off by default, like a file).
    """

    def __init__(self, *, wants_clock: bool = False) -> None:
        self.wants_clock = wants_clock
        self.messages: list[tuple[float, mido.Message]] = []
        self.instruments: dict[str, InstrumentSettings] = {}
        self.tempo: float | None = None
        self.closed = False
        self._tracker = NoteTracker()
        self._lock = threading.Lock()

    def open(self, instruments: dict[str, InstrumentSettings], tempo: float) -> None:
        self.instruments, self.tempo, self.closed = dict(instruments), tempo, False
        self._tracker.channels.update(i.channel for i in instruments.values())

    def send(self, msg: mido.Message, music_time: float) -> None:
        with self._lock:
            self._tracker.update(msg)
            self.messages.append((music_time, msg))

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            t = self.messages[-1][0] if self.messages else 0.0
            self.messages.extend((t, m) for m in self._tracker.silence())
            self.closed = True
