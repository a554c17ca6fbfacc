"""MIDI clock in: follow the tempo of a clock arriving on a MIDI input port.

:class:`ClockFollower` listens on a MIDI input (JACK/ALSA through python-rtmidi) and estimates
the sender's tempo from the 0xF8 ticks with :class:`TempoEstimator`. It uses rtmidi's per-message
delta times, which JACK stamps once per process cycle: single intervals are quantised to the period
(5.3 ms at 256 frames, a quarter of a tick at 120 BPM), so the tempo is the least-squares slope of
tick time over tick count across the last ``window`` ticks, whose error shrinks with the count.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from ..errors import SinkError
from ..midiports import PPQN, close_midi_in, connect


class TempoEstimator:
    """Tempo of an incoming MIDI clock from per-message delta times (seconds since the previous message).

    Feed it every message the port delivers (:meth:`feed`), not only the ticks: deltas add up to a
    time axis. Start, Continue and Stop begin a new run of ticks, as does a gap longer than
    ``gap_factor`` times the current tick interval (a sender that paused without Stop).

    Parameters
    ----------
    window : ticks in the least-squares fit (48 = two beats).
    min_ticks : intervals needed before the first estimate (24 = one beat).
    every : re-estimate after this many ticks (cheap enough for the MIDI thread at 6).
    """

    def __init__(
        self, *, window: int = 48, min_ticks: int = 24, every: int = 6, gap_factor: float = 4.0, ppqn: int = PPQN
    ) -> None:
        if not 2 <= min_ticks <= window:
            raise ValueError(f"min_ticks must be 2..window ({window}), got {min_ticks}")
        self.ppqn, self.min_ticks, self.every, self.gap_factor = ppqn, min_ticks, every, gap_factor
        self._times: deque[float] = deque(maxlen=window + 1)
        self._now = 0.0
        self._since = 0
        self.tempo: float | None = None  #: latest estimate (BPM); kept across a Stop
        self.running: bool | None = None  #: None until a Start/Continue/Stop arrives
        self.ticks = 0

    def feed(self, status: int, delta: float) -> float | None:
        """One message (status byte, delta time); returns a fresh tempo estimate when there is one."""
        self._now += max(0.0, delta)
        if status == 0xF8:
            self.ticks += 1
            times = self._times
            if len(times) >= 2 and self._now - times[-1] > self.gap_factor * (times[-1] - times[0]) / (len(times) - 1):
                times.clear()  # a pause: the ticks before it say nothing about the tempo after it
                self._since = 0
            times.append(self._now)
            self._since += 1
            if self._since >= self.every and len(times) > self.min_ticks:
                self._since = 0
                self.tempo = self._fit()
                return self.tempo
        elif status in (0xFA, 0xFB, 0xFC):
            self.running = status != 0xFC
            self._times.clear()
            self._since = 0
        return None

    def _fit(self) -> float:
        """Least-squares slope of tick time over tick index → BPM."""
        ys = self._times
        n = len(ys)
        x_mean = (n - 1) / 2.0
        y_mean = sum(ys) / n
        num = sum((i - x_mean) * (y - y_mean) for i, y in enumerate(ys))
        den = n * (n * n - 1) / 12.0
        interval = num / den
        return 60.0 / (interval * self.ppqn) if interval > 0 else math.inf


class ClockFollower:
    """Follows the MIDI clock on an input port: its tempo and its Start/Stop/Continue.

    Parameters
    ----------
    port : exact name or unique (case-insensitive) substring of an existing MIDI input port.
    api : "auto", "jack", "alsa", "coremidi" or "winmm" (as for the MIDI output).
    on_tempo : called with each new estimate (BPM), from the MIDI thread: hand it over with
        ``loop.call_soon_threadsafe``.
    on_transport : called with "start", "continue" or "stop", from the MIDI thread.
    """

    def __init__(
        self,
        port: str,
        *,
        api: str = "auto",
        client_name: str = "brainharmonic-clock-in",
        on_tempo: Callable[[float], None] | None = None,
        on_transport: Callable[[str], None] | None = None,
        estimator: TempoEstimator | None = None,
    ) -> None:
        self.port = port
        self.api = api
        self.client_name = client_name
        self.on_tempo = on_tempo
        self.on_transport = on_transport
        self.estimator = estimator or TempoEstimator()
        self.port_name: str | None = None  #: the opened input port
        self.api_used: str | None = None
        self.errors = 0  #: exceptions raised by on_tempo / on_transport (the MIDI thread must not die)
        self._in: Any = None
        self._lock = threading.Lock()

    @property
    def tempo(self) -> float | None:
        """The sender's tempo (BPM) as last estimated; None before a beat of ticks arrived."""
        return self.estimator.tempo

    @property
    def running(self) -> bool | None:
        """The sender's transport: True after Start/Continue, False after Stop, None before either."""
        return self.estimator.running

    def open(self) -> None:
        """Connect to the input port; SinkError naming the available inputs if it does not exist."""
        if self._in is not None:
            raise SinkError("This MIDI clock input is already open; close it before opening it again.")
        # Not the bound method: a MidiIn whose callback refers to its owner forms a cycle the collector may
        # free while the MIDI thread still calls it.
        on_message = weakref.WeakMethod(self._on_message)

        def configure(mi: Any) -> None:
            mi.ignore_types(sysex=False, timing=False, active_sense=False)  # every delta counts
            mi.set_callback(lambda event, data=None, ref=on_message: (m := ref()) is not None and m(event))

        self._in, self.port_name, self.api_used = connect(
            self.api,
            "in",
            self.client_name,
            self.port,
            port_client_name=f"{self.client_name}-in",
            label="clock input",
            ambiguous_hint=" with --clock-in",
            missing_hint="pick one of those with --clock-in (`brainharmonic ports` lists them).",
            configure=configure,
        )

    def _on_message(self, event: tuple[list[int], float]) -> None:
        data, delta = event
        if not data:
            return
        status = data[0]
        with self._lock:
            tempo = self.estimator.feed(status, delta)
        try:
            if tempo is not None and self.on_tempo is not None and math.isfinite(tempo):
                self.on_tempo(tempo)
            elif status in (0xFA, 0xFB, 0xFC) and self.on_transport is not None:
                self.on_transport({0xFA: "start", 0xFB: "continue", 0xFC: "stop"}[status])
        except Exception:
            self.errors += 1

    def close(self) -> None:
        """Stop the callback, close the port, delete the client (explicitly: see the sinks). Idempotent."""
        mi, self._in = self._in, None
        close_midi_in(mi)

    def __enter__(self) -> ClockFollower:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
