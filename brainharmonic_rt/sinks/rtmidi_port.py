"""Live MIDI output through python-rtmidi (JACK, ALSA, CoreMIDI or WinMM).

Opens an existing output port by exact name or unique substring, else a virtual
port other programs (a synth, a DAW) can connect to (port plumbing: ``midiports``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import mido

from ..config import InstrumentSettings
from ..errors import SinkError
from ..midiports import connect
from .base import NoteTracker, program_changes

log = logging.getLogger("brainharmonic")

_JACK_FLUSH = 0.05  # s: > 2 periods of 1024 frames at 48 kHz


class RtMidiSink:
    """Send MIDI to a live port.

    Parameters
    ----------
    port : exact name or unique (case-insensitive) substring of an existing output port.
    virtual_name : name of a virtual port to open when ``port`` is None.
    api : "auto" (first compiled API that works and, with ``port``, has it), "jack", "alsa",
        "coremidi" or "winmm".
    client_name : MIDI client name (JACK shows ports as ``client:port``).
    optional : a port that cannot be opened is one warning and the sink plays nothing, instead of an
        error (a virtual port next to the embedded synth, which is heard anyway).
    """

    wants_clock = True  #: the Scheduler sends MIDI clock and transport here (a DAW may follow them)

    def __init__(
        self,
        port: str | None = None,
        virtual_name: str | None = "brainharmonic",
        api: str = "auto",
        client_name: str = "brainharmonic",
        optional: bool = False,
    ) -> None:
        self.optional = optional
        self.port = port
        self.virtual_name = virtual_name
        self.api = api
        self.client_name = client_name
        self.port_name: str | None = None  #: the opened port (output name, or our virtual port)
        self.api_used: str | None = None
        self._out: Any = None
        self._tracker = NoteTracker()
        self._lock = threading.Lock()
        self._closed = False

    def open(self, instruments: dict[str, InstrumentSettings], tempo: float) -> None:
        """Open the port (see class docs); SinkError with the available ports if it does not exist."""
        if self._out is not None:
            raise SinkError("This MIDI output is already open; close it before opening it again.")
        if self.port is None and self.virtual_name is None:
            raise SinkError("No MIDI output chosen; pass --midi-port NAME or --virtual-port NAME.")
        try:
            out, self.port_name, self.api_used = connect(
                self.api,
                "out",
                self.client_name,
                self.port,
                virtual=self.virtual_name,
                label="output",
                ambiguous_hint="",
                missing_hint="pick one of those with --midi-port, or open a virtual port with --virtual-port NAME.",
            )
        except SinkError as exc:
            if not self.optional:
                raise
            log.warning("No MIDI port for other programs: %s The synth plays on.", exc)
            self._closed = True
            return
        self._out, self._closed = out, False
        self._tracker.channels.update(i.channel for i in instruments.values())
        for msg in program_changes(instruments):  # before any note
            out.send_message(msg.bytes())

    def send(self, msg: mido.Message, music_time: float) -> None:
        """Send now (the Scheduler chose the moment); ``music_time`` is ignored."""
        with self._lock:
            if self._out is None:
                if self.optional and self._closed:  # an optional port that could not be opened
                    return
                raise SinkError("The MIDI output is not open; open() it before sending.")
            self._tracker.update(msg)
            self._out.send_message(msg.bytes())

    def close(self) -> None:
        """Silence every sounding note and used channel, then close the port. Idempotent."""
        with self._lock:
            if self._closed or self._out is None:
                self._closed = True
                return
            try:
                for msg in self._tracker.silence():
                    self._out.send_message(msg.bytes())
                if self.api_used == "jack":
                    # JACK hands messages over in the next process cycle; a port closed in the same cycle
                    # delivers garbage to readers (measured: repeated first message). Let a few periods pass.
                    time.sleep(_JACK_FLUSH)
            finally:
                self._out.close_port()
                self._out.delete()
                self._out = None
                self._closed = True
