"""The clock: Notes become timed MIDI messages, delivered against an absolute clock.

Realtime mode runs a dedicated dispatcher thread. Each message's target is
``origin + music_time`` on ``time.monotonic()``; the thread waits on a condition
until ~1.5 ms before the target (so a newly scheduled earlier note wakes it),
then sleeps finely and spins the last 0.2 ms. Nothing is a chained relative sleep:
a late wake-up only delays the messages that are due, never the ones after. The
heap is guarded by a lock held only to push and pop, so filter or inference work
on the event loop cannot hold MIDI output back (beyond the GIL; see
``switch_interval``).

Virtual mode (offline render) has no thread: :meth:`Scheduler.advance` delivers
everything due up to a music time, as fast as the CPU allows.

Invariants: every note_on gets exactly one note_off (a retrigger of a sounding
(channel, pitch) sends the note_off first and the old note's own note_off is then
skipped); program changes go out at start; at equal times note_offs precede note_ons, where
"equal" means within half a microsecond (a note's end ``time + duration`` and the next onset
computed on the grid may differ in the last bit, which must not let an onset overtake an ending);
:meth:`Scheduler.panic` silences every sounding note and every used channel.

Clock and transport messages (:data:`SYNC_TYPES`: 0xF8 clock, Start, Continue, Stop, song
position) scheduled with :meth:`Scheduler.schedule_messages` go only to sinks whose
``wants_clock`` is true (the live MIDI port; a file or synth has no use for 50 ticks a second).
They go before notes at equal times. Transport: Start goes out once; a tick while stopped is
preceded by Continue; once started, :meth:`Scheduler.panic` (hence every exit) sends Stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import mido
import numpy as np

from ..config import InstrumentSettings
from ..errors import BrainharmonicError, SinkError
from ..events import Note
from .base import MemorySink, Sink, program_changes, silence_messages

_MSG, _OFF, _ON = -1, 0, 1  # at equal times clock messages go first, then note_offs
#: Message types that only sinks with ``wants_clock`` get.
SYNC_TYPES = frozenset({"clock", "start", "continue", "stop", "songpos"})
_START, _CONTINUE = mido.Message("start"), mido.Message("continue")
_COARSE = 0.0015  # wake this long before a target, then sleep finely
_SPIN = 0.0002  # spin the last part of a wait
#: (ordering key: music time in whole microseconds, order, seq, message, note id (0 = no note), music time)
_Item = tuple[int, int, int, mido.Message, int, float]


def _key(t: float) -> int:
    """Ordering key of music time ``t``: whole microseconds, so float noise cannot reorder one instant."""
    return round(t * 1_000_000)


class Scheduler:
    """Turns Notes into timed MIDI messages and delivers them to sinks against an absolute clock.

    Parameters
    ----------
    sinks : where every message goes (already opened by the caller); clock and transport messages
        only to those with a true ``wants_clock`` attribute.
    realtime : True = a dispatcher thread on the wall clock; False = virtual clock driven by
        :meth:`advance`.
    origin : realtime only: ``time.monotonic()`` value of music time 0 (default: entry time).
    instruments : optional; their program changes are sent at start, before the first note, and
        their channels count as used (silenced on panic). Sinks also send program changes in
        their own ``open``, so a pipeline that opens its sinks may leave this out.
    late_tolerance : seconds after its target beyond which a dispatched note counts as late.
    switch_interval : realtime only: the interpreter's GIL switch interval (s) while running, so the
        dispatcher thread gets the GIL back quickly from busy Python code on the event loop
        (restored on exit); None leaves it alone.
    rt_priority : realtime only: try to run the dispatcher thread with SCHED_FIFO at this priority
        (Linux; needs CAP_SYS_NICE or an rtprio limit, silently skipped otherwise; 0 = don't try).
        On a loaded machine it keeps other processes from delaying MIDI output by milliseconds.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        realtime: bool,
        origin: float | None = None,
        instruments: Mapping[str, InstrumentSettings] | None = None,
        late_tolerance: float = 0.005,
        switch_interval: float | None = 0.0002,
        rt_priority: int = 5,
    ) -> None:
        self._sinks = list(sinks)
        self._clock_sinks = [s for s in self._sinks if getattr(s, "wants_clock", False)]
        self._transport: str | None = None  # None before Start, then "running" / "stopped"
        self._clock_sent = 0
        self._realtime = realtime
        self._origin = origin
        self._instruments = dict(instruments or {})
        self._late_tolerance = late_tolerance
        self._switch_interval = switch_interval
        self._saved_switch: float | None = None
        self._rt_priority = rt_priority
        self.rt_scheduling = False  #: whether the dispatcher thread got SCHED_FIFO
        self._cond = threading.Condition()
        self._send_lock = threading.RLock()
        self._heap: list[_Item] = []
        self._seq = itertools.count()
        self._note_ids = itertools.count(1)
        self._owner: dict[tuple[int, int], int] = {}
        self._live: dict[int, Note] = {}  # note id → note, from schedule until its note_off (or a cancel)
        self._played: deque[Note] = deque(maxlen=100_000)  # notes whose note_on went out, until taken
        self._n_played = 0
        self._channels: set[int] = {i.channel for i in self._instruments.values()}
        self._epoch = 0
        self._in_flight = 0
        self._now = 0.0  # virtual clock
        self._running = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._scheduled = 0
        self._sent = 0
        self._late = 0
        self._late_dispatch = 0
        self._max_late = 0.0
        self._lateness: deque[float] = deque(maxlen=4096)

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._idle = asyncio.Event()
        self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        if exc is None:
            self._raise_error()

    def open(self) -> None:
        """Start (sync form of ``async with``): send program changes; realtime: start the thread."""
        if self._running:
            raise RuntimeError("Scheduler is already running; it cannot be entered twice.")
        self._running, self._stopping = True, False
        if self._realtime and self._origin is None:
            self._origin = time.monotonic()
        for msg in program_changes(self._instruments):
            self._send(msg, 0.0)
        if self._realtime:
            if self._switch_interval is not None:
                self._saved_switch = sys.getswitchinterval()
                sys.setswitchinterval(self._switch_interval)
            self._thread = threading.Thread(target=self._run, name="brainharmonic-midi", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Panic, stop the thread, restore the switch interval. Idempotent."""
        if not self._running:
            return
        self.panic()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._saved_switch is not None:
            sys.setswitchinterval(self._saved_switch)
            self._saved_switch = None
        self._running = False

    # -- public API -----------------------------------------------------------------------------

    @property
    def realtime(self) -> bool:
        return self._realtime

    @property
    def running(self) -> bool:
        """Between open and close: notes may be scheduled."""
        return self._running

    @property
    def origin(self) -> float | None:
        """Realtime: ``time.monotonic()`` value of music time 0."""
        return self._origin

    @property
    def error(self) -> BaseException | None:
        """The first error a sink raised while delivering (also raised by the next call)."""
        return self._error

    def set_origin(self, origin: float) -> None:
        """Realtime: the ``time.monotonic()`` value of music time 0."""
        with self._cond:
            self._origin = origin
            self._cond.notify_all()

    def music_now(self) -> float:
        """Current music time: wall clock minus origin (realtime) or the last advance (virtual)."""
        if self._realtime:
            origin = self._origin if self._origin is not None else time.monotonic()
            return time.monotonic() - origin
        return self._now

    def schedule(self, notes: Iterable[Note]) -> None:
        """Queue note_on at ``note.time`` and note_off at ``time + duration``; never blocks.

        A note whose time has already passed is sent at once and counted as late.
        """
        self._check_running()
        self._raise_error()
        now = self.music_now()
        pushed = False
        with self._cond:
            for n in notes:
                nid = next(self._note_ids)
                self._live[nid] = n
                on = mido.Message("note_on", channel=n.channel, note=n.pitch, velocity=n.velocity)
                off = mido.Message("note_off", channel=n.channel, note=n.pitch, velocity=0)
                end = n.time + n.duration
                heapq.heappush(self._heap, (_key(n.time), _ON, next(self._seq), on, nid, n.time))
                heapq.heappush(self._heap, (_key(end), _OFF, next(self._seq), off, nid, end))
                self._channels.add(n.channel)
                self._scheduled += 1
                if n.time < now:
                    self._late += 1
                pushed = True
            if pushed:
                self._cond.notify_all()
        if pushed and not self._realtime:
            self._deliver_until(self._now)

    def schedule_messages(self, items: Iterable[tuple[float, mido.Message]]) -> None:
        """Queue other messages (MIDI clock, transport) at their music times; never blocks.

        They are dropped by :meth:`panic` and by a :meth:`cancel` of all instruments; one whose time
        has passed is sent at once.
        """
        self._check_running()
        self._raise_error()
        pushed = False
        with self._cond:
            for t, msg in items:
                heapq.heappush(self._heap, (_key(t), _MSG, next(self._seq), msg, 0, t))
                pushed = True
            if pushed:
                self._cond.notify_all()
        if pushed and not self._realtime:
            self._deliver_until(self._now)

    def advance(self, music_time: float) -> None:
        """Virtual mode: deliver everything with time <= ``music_time``, in order."""
        self._check_running()
        if self._realtime:
            raise RuntimeError("advance() is for virtual mode; a realtime Scheduler follows the wall clock.")
        self._now = max(self._now, music_time)
        self._deliver_until(self._now)
        self._raise_error()

    async def drain(self, timeout: float | None = None) -> None:
        """End of input: deliver everything still pending (realtime: wait until it has been sent).

        ``timeout`` (s) defaults to the time until the last pending message plus 2 s; past it,
        :class:`SinkError`.
        """
        self._check_running()
        if not self._realtime:
            with self._cond:
                last = max((item[5] for item in self._heap), default=self._now)
            self.advance(last)
            return
        assert self._idle is not None
        with self._cond:
            last = max((item[5] for item in self._heap), default=0.0)
        if timeout is None:
            timeout = max(0.0, last - self.music_now()) + 2.0
        deadline = time.monotonic() + timeout
        while True:
            self._idle.clear()
            with self._cond:
                if not self._heap and self._in_flight == 0:
                    break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SinkError(
                    f"MIDI output did not drain within {timeout:.1f} s ({len(self._heap)} messages pending); "
                    "the output port may be stuck."
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=min(remaining, 0.5))
        self._raise_error()

    def panic(self) -> None:
        """Now: note_off for every sounding note, then CC 123 and CC 64 = 0 on every used channel.

        Pending messages (clock ticks too) are dropped and a running MIDI clock gets Stop; scheduling
        may continue afterwards (the next tick brings Continue).
        """
        with self._cond:
            self._heap.clear()
            self._epoch += 1
            self._cond.notify_all()
        with self._send_lock:
            t = max(self.music_now(), 0.0) if self._running else self._now
            for (ch, pitch), _ in sorted(self._owner.items()):
                self._send(mido.Message("note_off", channel=ch, note=pitch, velocity=0), t)
            self._owner.clear()
            self._live.clear()
            for msg in silence_messages(self._channels):
                self._send(msg, t)
            if self._transport == "running":
                self._send(mido.Message("stop"), t)

    def cancel(
        self,
        *,
        after: float | None = None,
        instruments: Collection[str] | None = None,
        end_sounding: bool = False,
        channels: Collection[int] = (),
    ) -> int:
        """Drop notes not yet sounding (onset at or after ``after``; of ``instruments``, None = all).

        With ``instruments`` None, pending other messages (clock ticks) at or after ``after`` (all with
        ``after`` None) are dropped too, so a recompose replaces them. With ``end_sounding`` the
        sounding notes of ``instruments`` get their note_off now, and CC 123 goes to their channels
        and to ``channels`` unless another instrument sounds there. Returns the number of notes
        dropped; scheduling continues normally afterwards. Lock order: the condition, then the send
        lock (nothing takes them the other way round).
        """
        wanted = None if instruments is None else set(instruments)
        with self._cond, self._send_lock:
            owned = set(self._owner.values())
            if after is None:  # also catches note_ons the dispatcher has popped but not sent yet
                dropped = {
                    nid
                    for nid, note in self._live.items()
                    if nid not in owned and (wanted is None or note.instrument in wanted)
                }
            else:
                dropped = {
                    nid
                    for _, order, _, _, nid, t in self._heap
                    if order == _ON and t >= after and nid in self._live
                    and (wanted is None or self._live[nid].instrument in wanted)
                }  # fmt: skip
            for nid in dropped:
                del self._live[nid]
            drop_msgs = wanted is None and any(
                item[1] == _MSG and (after is None or item[5] >= after) for item in self._heap
            )
            if dropped or drop_msgs:
                self._heap = [
                    item
                    for item in self._heap
                    if item[4] not in dropped
                    and not (drop_msgs and item[1] == _MSG and (after is None or item[5] >= after))
                ]
                heapq.heapify(self._heap)
                self._cond.notify_all()
            if end_sounding:
                t_now = max(self.music_now(), 0.0) if self._running else self._now
                ended = [
                    (key, nid)
                    for key, nid in sorted(self._owner.items())
                    if wanted is None or (nid in self._live and self._live[nid].instrument in wanted)
                ]
                for (ch, pitch), nid in ended:
                    self._send(mido.Message("note_off", channel=ch, note=pitch, velocity=0), t_now)
                    del self._owner[(ch, pitch)]
                    self._live.pop(nid, None)
                busy = {ch for (ch, _) in self._owner}
                for ch in sorted(({ch for (ch, _), _ in ended} | set(channels)) - busy):
                    self._channels.add(ch)
                    self._send(mido.Message("control_change", channel=ch, control=123, value=0), t_now)
        return len(dropped)

    def send_now(self, msg: mido.Message) -> None:
        """Send one message to every sink now (e.g. a program change); thread-safe."""
        self._check_running()
        with self._send_lock:
            if hasattr(msg, "channel"):
                self._channels.add(msg.channel)
            self._send(msg, max(self.music_now(), 0.0) if self._realtime else self._now)
        self._raise_error()

    def take_played(self) -> list[Note]:
        """The notes whose note_on went out since the last call, in the order they sounded (what was
        heard, unlike what was composed: a live change cancels composed notes before they play)."""
        out: list[Note] = []
        with self._send_lock:
            while self._played:
                out.append(self._played.popleft())
        return out

    @property
    def played(self) -> int:
        """Notes whose note_on went out so far."""
        return self._n_played

    def sounding(self) -> dict[str, list[int]]:
        """Instrument → pitches sounding now (for telemetry)."""
        out: dict[str, list[int]] = {}
        with self._send_lock:
            for (_, pitch), nid in self._owner.items():
                note = self._live.get(nid)
                out.setdefault(note.instrument if note is not None else "", []).append(pitch)
        return {k: sorted(v) for k, v in out.items()}

    def live_notes(self) -> dict[int, Note]:
        """Note id → note, for every note scheduled and neither ended nor cancelled: those sounding now and
        those composed ahead (for views; ids are unique for the scheduler's life, in scheduling order)."""
        with self._cond, self._send_lock:  # schedule() adds under the condition, delivery ends under the send lock
            return dict(self._live)

    def stats(self) -> dict[str, Any]:
        """Counters for telemetry.

        scheduled (notes), sent (messages), late (notes scheduled after their time), late_dispatch
        (notes sent more than ``late_tolerance`` after their target), max_late_ms, p50_late_ms and
        p99_late_ms (dispatch lateness of recent note_ons), sounding, pending (messages), errors.
        """
        with self._cond:
            pending = len(self._heap)
        with self._send_lock:
            lateness = np.array(self._lateness) if self._lateness else np.zeros(1)
        return {
            "scheduled": self._scheduled,
            "played": self._n_played,
            "sent": self._sent,
            "late": self._late,
            "late_dispatch": self._late_dispatch,
            "max_late_ms": round(self._max_late * 1000.0, 3),
            "p50_late_ms": round(float(np.percentile(lateness, 50)) * 1000.0, 3),
            "p99_late_ms": round(float(np.percentile(lateness, 99)) * 1000.0, 3),
            "sounding": len(self._owner),
            "pending": pending,
            "errors": 0 if self._error is None else 1,
            "rt_scheduling": self.rt_scheduling,
            "clock_sent": self._clock_sent,
            "transport": self._transport or "none",
        }

    # -- internals ------------------------------------------------------------------------------

    def _check_running(self) -> None:
        if not self._running:
            raise RuntimeError("Scheduler is not running; use `async with Scheduler(...)` (or open()).")

    def _raise_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    @property
    def transport(self) -> str | None:
        """MIDI clock transport as sent: None before Start, then "running" or "stopped"."""
        return self._transport

    def _send(self, msg: mido.Message, music_time: float) -> None:
        if msg.type in SYNC_TYPES:
            self._send_sync(msg, music_time)
            return
        self._emit(self._sinks, msg, music_time)
        self._sent += 1

    def _send_sync(self, msg: mido.Message, music_time: float) -> None:
        """Clock/transport to the sinks that want it, keeping the transport consistent (send lock held)."""
        kind = msg.type
        if kind == "clock":
            if self._transport != "running":  # a tick needs a running transport: Start once, else Continue
                self._emit(self._clock_sinks, _CONTINUE if self._transport == "stopped" else _START, music_time)
                self._transport = "running"
                self._clock_sent += 1
        elif kind in ("start", "continue"):
            if self._transport == "running":
                return
            if self._transport == "stopped":
                msg = _CONTINUE  # Start (back to bar 1) only once per run
            self._transport = "running"
        elif kind == "stop":
            if self._transport != "running":
                return
            self._transport = "stopped"
        self._emit(self._clock_sinks, msg, music_time)
        self._clock_sent += 1

    def _emit(self, sinks: list[Sink], msg: mido.Message, music_time: float) -> None:
        for sink in sinks:
            try:
                sink.send(msg, music_time)
            except BrainharmonicError as exc:
                self._error = self._error or exc
            except Exception as exc:
                self._error = self._error or SinkError(
                    f"MIDI output {type(sink).__name__} failed while sending {msg.type} ({exc}); "
                    "check that the port or file is still there."
                )

    def _pop_due(self, music_time: float) -> list[_Item]:
        """Pop every item with time <= music_time (call with the condition held)."""
        batch = []
        due = _key(music_time)
        while self._heap and self._heap[0][0] <= due:
            batch.append(heapq.heappop(self._heap))
        return batch

    def _deliver_until(self, music_time: float) -> None:
        with self._cond:
            batch = self._pop_due(music_time)
            epoch = self._epoch
        self._deliver(batch, epoch, None)

    def _deliver(self, batch: list[_Item], epoch: int, wall_now: float | None) -> None:
        with self._send_lock:
            if epoch != self._epoch:  # a panic came in between: drop the batch
                return
            for _, order, _, msg, nid, t in batch:
                if order == _MSG:
                    self._send(msg, t)
                    continue
                key = (msg.channel, msg.note)
                if order == _ON:
                    if nid not in self._live:  # cancelled while in flight
                        continue
                    if key in self._owner:  # retrigger: end the sounding note first
                        self._send(mido.Message("note_off", channel=key[0], note=key[1], velocity=0), t)
                    self._owner[key] = nid
                    self._played.append(self._live[nid])
                    self._n_played += 1
                    if wall_now is not None and self._origin is not None:
                        late = max(0.0, time.monotonic() - (self._origin + t))
                        self._lateness.append(late)
                        self._max_late = max(self._max_late, late)
                        if late > self._late_tolerance:
                            self._late_dispatch += 1
                else:
                    self._live.pop(nid, None)
                    if self._owner.get(key) != nid:  # already ended by a retrigger, a panic or a cancel
                        continue
                    del self._owner[key]
                self._send(msg, t)

    def _run(self) -> None:
        """Dispatcher thread: wait for the earliest target on the absolute clock, deliver what is due."""
        self.rt_scheduling = _try_realtime(self._rt_priority)
        while True:
            with self._cond:
                while not self._stopping and (not self._heap or self._origin is None):
                    self._cond.wait()
                if self._stopping:
                    return
                assert self._origin is not None
                target = self._origin + self._heap[0][5]
                delay = target - time.monotonic()
                if delay > _COARSE:
                    self._cond.wait(delay - _COARSE)  # woken early by an earlier note or a new origin
                    continue
            if delay > 0:
                _sleep_until(target)
            with self._cond:
                assert self._origin is not None
                now = time.monotonic()
                batch = self._pop_due(now - self._origin)
                epoch = self._epoch
                self._in_flight += 1
            try:
                self._deliver(batch, epoch, now)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    idle = not self._heap
                if idle and self._loop is not None and self._idle is not None:
                    with contextlib.suppress(RuntimeError):  # the loop closed while we were sending
                        self._loop.call_soon_threadsafe(self._idle.set)


def _try_realtime(priority: int) -> bool:
    """Give the calling thread SCHED_FIFO ``priority`` if the OS allows it (best effort)."""
    if priority <= 0 or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, ValueError):
        return False
    return True


def _sleep_until(target: float) -> None:
    """Sleep until ``target`` (time.monotonic seconds): fine sleep, then spin the last 0.2 ms."""
    remaining = target - time.monotonic()
    if remaining > _SPIN:
        time.sleep(remaining - _SPIN)
    while time.monotonic() < target:
        pass


def events_from_notes(
    notes: Iterable[Note], instruments: Mapping[str, InstrumentSettings] | None = None
) -> list[tuple[float, mido.Message]]:
    """Timed MIDI messages for ``notes``, exactly as a virtual Scheduler delivers them.

    Starts with program changes (if ``instruments``) and ends with the panic messages, so a
    file or synth rendered from them is silent at the end.
    """
    sink = MemorySink()
    notes = list(notes)
    scheduler = Scheduler([sink], realtime=False, instruments=instruments)
    scheduler.open()
    try:
        scheduler.schedule(notes)
        end = max((n.time + n.duration for n in notes), default=0.0)
        scheduler.advance(end if math.isfinite(end) else 0.0)
    finally:
        scheduler.close()
    return sink.messages
