"""Reads a real JACK MIDI port back, with arrival times, for end-to-end tests."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable

import rtmidi

from brainharmonic_rt.midiports import close_midi_in


class MidiReader:
    """Connects an rtmidi input to the first output port whose name contains ``needle``."""

    def __init__(self, needle: str, *, timeout: float = 10.0) -> None:
        self.messages: list[tuple[float, list[int]]] = []
        self._lock = threading.Lock()
        self._in = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name="bh-test-reader")
        self._in.ignore_types(sysex=True, timing=False, active_sense=True)
        deadline = time.monotonic() + timeout
        while True:
            ports = self._in.get_ports()
            hits = [i for i, p in enumerate(ports) if needle in p]
            if hits:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no MIDI port containing {needle!r} appeared; ports: {ports}")
            time.sleep(0.05)
        self._in.open_port(hits[0])
        # A plain function, not the bound method: a MidiIn whose callback refers back to its owner forms a
        # cycle, and the garbage collector may free the callback while JACK's thread still calls it.
        on_message = weakref.WeakMethod(self._on_message)
        self._in.set_callback(lambda event, data=None: (m := on_message()) is not None and m(event, data))

    def _on_message(self, event: tuple[list[int], float], data: object = None) -> None:
        with self._lock:
            self.messages.append((time.monotonic(), list(event[0])))

    def snapshot(self) -> list[tuple[float, list[int]]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, pred: Callable[[list[tuple[float, list[int]]]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.snapshot()):
                return True
            time.sleep(0.02)
        return pred(self.snapshot())

    def close(self) -> None:
        """Stop the callback, close the port, then delete the JACK client explicitly (idempotent; see
        :func:`close_midi_in` for why the order and the grace period matter)."""
        close_midi_in(self._in)

    def __enter__(self) -> MidiReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def note_ons(msgs: list[tuple[float, list[int]]]) -> list[tuple[float, list[int]]]:
    return [(t, m) for t, m in msgs if m[0] & 0xF0 == 0x90 and m[2] > 0]


def note_offs(msgs: list[tuple[float, list[int]]]) -> list[tuple[float, list[int]]]:
    return [(t, m) for t, m in msgs if m[0] & 0xF0 == 0x80 or (m[0] & 0xF0 == 0x90 and m[2] == 0)]


def all_notes_off(msgs: list[tuple[float, list[int]]]) -> set[int]:
    """Channels (0-based) that received CC 123 (all notes off)."""
    return {m[0] & 0x0F for _, m in msgs if m[0] & 0xF0 == 0xB0 and m[1] == 123}


def unmatched_notes(msgs: list[tuple[float, list[int]]]) -> dict[tuple[int, int], int]:
    """(channel, pitch) -> count of note_ons without a later note_off (all-notes-off clears its channel)."""
    open_: dict[tuple[int, int], int] = {}
    for _, m in msgs:
        kind, ch = m[0] & 0xF0, m[0] & 0x0F
        if kind == 0x90 and m[2] > 0:
            open_[(ch, m[1])] = open_.get((ch, m[1]), 0) + 1
        elif kind == 0x80 or (kind == 0x90 and m[2] == 0):
            if open_.get((ch, m[1]), 0) > 0:
                open_[(ch, m[1])] -= 1
        elif kind == 0xB0 and m[1] == 123:
            for key in [k for k in open_ if k[0] == ch]:
                open_[key] = 0
    return {k: v for k, v in open_.items() if v > 0}
