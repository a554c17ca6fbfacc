"""MIDI clock out: 24 ticks per beat with Start, following every tempo change the composer makes.

Tick ``k`` of a run sounds at ``composer.time_of_beat(k / 24)``, so the clock follows every
tempo change the composer makes (a live retime, a leader's beat numbering, a harmonic plan). The
pipeline asks :class:`ClockTrack` for the ticks of each music span it composes, ``[start, end)``;
adjacent spans share their boundary, so they split the ticks without overlap. Start (0xFA) goes
just before the first tick, on the first bar line (beat 0, 4, 8, ...), so a DAW's bar 1 is one of
ours. When notes after ``at`` are composed again, the Scheduler's ``cancel(after=at)`` drops the
ticks after ``at`` too and :meth:`ClockTrack.rewind` forgets exactly those, so the span composed
again neither repeats nor skips a tick. Stop (0xFC) is the Scheduler's job: it sends one on every
exit (end, panic, error) once a Start went out.

The follower of an incoming clock lives with the sources (``sources.midiclock``).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

import mido

from ..midiports import PPQN
from ..music.constants import BEATS_PER_BAR

CLOCK = mido.Message("clock")  # shared and never mutated: one tick is not worth an allocation
START = mido.Message("start")
_EPS_TICKS = 1e-6  # float slack when a beat position lands on a tick
_SAME_TICK = 1e-6  # s: a tick this close to the last scheduled one is that tick again
_MAX_TRACK = 4096  # scheduled ticks remembered for rewinds (~100 s at 96 BPM; rewinds reach < 1 s back)


class Timeline(Protocol):
    """What a composer offers for the clock (both composers have it)."""

    def beat_at(self, t: float) -> float: ...

    def time_of_beat(self, beat: float) -> float: ...


def first_tick(timeline: Timeline, t: float, ppqn: int = PPQN) -> int:
    """Index of the first tick at or after music time ``t`` (tick k is beat k / ppqn)."""
    return math.ceil(timeline.beat_at(t) * ppqn - _EPS_TICKS)


def tick_times(timeline: Timeline, start: float, end: float, ppqn: int = PPQN) -> list[tuple[int, float]]:
    """(index, music time) of the ticks in ``[start, end)`` on the timeline as it is now.

    Times are never earlier than ``start`` (float slack); indices follow the beat numbering, so a
    leader's renumbering moves them while the times stay continuous.
    """
    lo, hi = first_tick(timeline, start, ppqn), first_tick(timeline, end, ppqn)
    return [(k, max(start, timeline.time_of_beat(k / ppqn))) for k in range(lo, hi)]


class ClockTrack:
    """The clock messages one run has scheduled, so spans continue and recomposes replace exactly.

    Parameters
    ----------
    ppqn : ticks per beat (24 for MIDI clock).
    beats_per_bar : Start waits for a bar line: the first tick is on a multiple of this many beats.
    """

    def __init__(self, ppqn: int = PPQN, beats_per_bar: int = BEATS_PER_BAR) -> None:
        self.ppqn = ppqn
        self._bar = ppqn * beats_per_bar
        self._ticks: deque[float] = deque(maxlen=_MAX_TRACK)  # music times of scheduled ticks, ascending
        self._start_at: float | None = None  # music time of the scheduled Start; None before it

    @property
    def started(self) -> bool:
        """Whether a Start is scheduled (or already sent)."""
        return self._start_at is not None

    def span(self, timeline: Timeline, start: float, end: float) -> list[tuple[float, mido.Message]]:
        """Clock messages for ``[start, end)``: the ticks (after a Start on the first bar line)."""
        ticks = tick_times(timeline, start, end, self.ppqn)
        if self._start_at is None and ticks:
            bar_line = -(-ticks[0][0] // self._bar) * self._bar  # the first tick index on a bar line
            ticks = [(k, t) for k, t in ticks if k >= bar_line]
        last = self._ticks[-1] if self._ticks else -math.inf
        out: list[tuple[float, mido.Message]] = []
        for _, t in ticks:
            if t <= last + _SAME_TICK:  # the tick before a rewind point that survived it
                continue
            if self._start_at is None:
                self._start_at = t
                out.append((t, START))
            out.append((t, CLOCK))
            self._ticks.append(t)
            last = t
        return out

    def rewind(self, at: float) -> None:
        """Forget the messages at or after ``at``: the Scheduler's ``cancel(after=at)`` dropped them."""
        while self._ticks and self._ticks[-1] >= at:
            self._ticks.pop()
        if self._start_at is not None and self._start_at >= at:
            self._start_at = None
