"""Live EEG from Open Sound Control: Muse headbands through Mind Monitor (or muse-io, Petal, a patch).

Mind Monitor sends one ``/muse/eeg`` message per sample (256 Hz) to a UDP port: 4 floats in µV for
TP9, AF7, AF8, TP10, and a fifth for the AUX electrode when it is on. ``run --osc-in [HOST:]PORT``
reads those messages as an EEG stream with the same contract as the LSL source: a reader thread
receives, batches what is waiting and hands it to the event loop through the shared
:class:`~.handoff.Handoff` (bounded; the reader never blocks); ``chunks()`` raises
:class:`~brainharmonic_rt.errors.StreamLostError` when no sample came for ``stream.lost_after``
seconds, and :meth:`OscSource.reconnect` waits until samples flow again (refusing a different
channel count, as LSL refuses a different layout).

OSC messages carry no timestamps, so samples are stamped on this machine's monotonic clock by
:class:`ArrivalClock`: a regular grid at the nominal rate, placed on the earliest arrival seen
lately (network jitter delays samples, never advances them). The first sender is the stream;
``/muse/eeg`` from another address, other addresses (``/muse/acc``, ``/muse/elements/...``) and
malformed messages are ignored and counted (see :meth:`OscSource.stats`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import select
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Self

import numpy as np

from ..config import OscSettings, StreamSettings, split_host_port
from ..errors import StreamError, StreamLostError, StreamNotFoundError
from ..events import Chunk, SignalInfo
from .handoff import Handoff

log = logging.getLogger(__name__)

#: The address Muse apps send raw EEG on.
EEG_ADDRESS = "/muse/eeg"
#: Channel names of a Muse headband in Mind Monitor's order; a fifth (and sixth) value is an AUX electrode.
MUSE_CHANNELS = ("TP9", "AF7", "AF8", "TP10")
MAX_CHANNELS = 8
_POLL = 0.05  # s: how long the reader blocks per receive (bounds stop latency)
_MAX_BLOCK = 0.1  # s of samples handed over at most per block
_RCVBUF = 1 << 20  # bytes: room for a Wi-Fi burst of messages


def channel_names(n: int) -> tuple[str, ...]:
    """Names of an ``n``-value ``/muse/eeg`` message: the Muse montage, then AUX electrodes."""
    if n <= len(MUSE_CHANNELS):
        return MUSE_CHANNELS[:n]
    extra = n - len(MUSE_CHANNELS)
    return MUSE_CHANNELS + (("AUX",) if extra == 1 else tuple(f"AUX{i + 1}" for i in range(extra)))


class ArrivalClock:
    """Timestamps for samples that carry none (``time.monotonic()`` seconds).

    A regular grid at ``sfreq`` placed on the smallest arrival lag seen over the last ``span``
    seconds: network jitter only ever delays a sample, so the earliest arrivals are the best
    estimate of when samples were made. Lost packets make the grid fall behind; the lag then
    grows and the grid catches up within ``span`` s (a gap in the timestamps). Stamps never lie
    in the future and always increase (a block that would break either is squeezed, and counted).
    """

    def __init__(self, sfreq: float, span: float = 2.0) -> None:
        self.sfreq = sfreq
        self.span = span
        self._anchor: float | None = None
        self._count = 0
        self._lags: collections.deque[tuple[float, float]] = collections.deque()
        self._last: float | None = None
        self.corrections = 0  #: blocks shifted forward to keep time increasing

    def stamp(self, n: int, arrival: float) -> np.ndarray:
        """Timestamps of ``n`` samples whose last one arrived at ``arrival``; array of shape (n,)."""
        step = 1.0 / self.sfreq
        if self._anchor is None:
            self._anchor = arrival - (n - 1) * step
        grid = self._anchor + (self._count + np.arange(n)) * step
        self._count += n
        lag = arrival - float(grid[-1])
        while self._lags and self._lags[0][0] < arrival - self.span:
            self._lags.popleft()
        while self._lags and self._lags[-1][1] >= lag:  # a monotonic deque: its head is the minimum
            self._lags.pop()
        self._lags.append((arrival, lag))
        ts = grid + self._lags[0][1]
        if self._last is not None and ts[0] <= self._last:  # the estimate moved back: no sample may go back too
            ts += self._last + step - ts[0]
            if ts[-1] > arrival:  # ... nor lie in the future: squeeze the block into (last, arrival]
                ts = self._last + (arrival - self._last) * np.arange(1, n + 1) / n
            self.corrections += 1
        self._last = float(ts[-1])
        return ts


class OscSource:
    """Muse-style ``/muse/eeg`` OSC messages on a UDP port as a :class:`~brainharmonic_rt.sources.base.Source`.

    Parameters
    ----------
    settings : ``listen`` ([HOST:]PORT, HOST 0.0.0.0 by default) and ``in_rate`` (Hz).
    stream : ``timeout`` to wait for the first message, ``lost_after`` seconds of silence that count as a loss.
    max_queue_seconds : most signal held for a slow consumer; older chunks are dropped.

    Chunks carry data of shape (n_channels, n_samples) float64 in µV (as Mind Monitor sends them) and
    timestamps on ``time.monotonic()`` (see :class:`ArrivalClock`).
    """

    def __init__(self, settings: OscSettings, stream: StreamSettings, *, max_queue_seconds: float = 5.0) -> None:
        if settings.listen is None:
            raise ValueError("OscSource needs osc.listen ([HOST:]PORT)")
        self.host, self.port = split_host_port(settings.listen, default_host="0.0.0.0")
        self.sfreq = float(settings.in_rate)
        self.stream = stream
        self.max_queue_seconds = max_queue_seconds
        self._info: SignalInfo | None = None
        self._sock: socket.socket | None = None
        self._entered = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handoff = Handoff()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._sender: Any = None
        self._rate_marks: collections.deque[tuple[float, int]] = collections.deque(maxlen=12)
        self._n_samples = 0
        self._n_reconnects = 0
        self._n_rejected = 0
        self._n_ignored = 0
        self._n_foreign = 0
        self._warned: set[str] = set()
        self._clock = ArrivalClock(self.sfreq)
        self._corrections = 0

    # -- public -----------------------------------------------------------------------
    @property
    def info(self) -> SignalInfo:
        """The stream (valid after ``__aenter__``)."""
        if self._info is None:
            raise RuntimeError("OscSource.info is only known after `async with OscSource(...)`.")
        return self._info

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when 0 was asked for."""
        if self._sock is None:
            return self.host, self.port
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("An OscSource can be entered only once; create a new one.")
        self._entered = True
        self._loop = asyncio.get_running_loop()
        self._sock = self._bind()
        try:
            first = await asyncio.to_thread(self._wait_first, self.stream.timeout)
            if first is None:
                raise StreamNotFoundError(
                    f"No {EEG_ADDRESS} OSC messages arrived on UDP port {self.address[1]} within "
                    f"{self.stream.timeout:g} s; point Mind Monitor's OSC stream target (or muse-io) at this "
                    f"machine's address and port {self.address[1]}, and check that a firewall lets UDP in."
                )
            values, sender = first
            host, port = self.address
            self._info = SignalInfo(
                name=f"osc-{port}",
                sfreq=self.sfreq,
                ch_names=channel_names(values.size),
                stype="EEG",
                source_id=f"osc:{host}:{port}",
                units="uV",
            )
            self._start(values, sender)
        except BaseException:
            self._close_socket()
            raise
        log.info("reading %s from %s:%s on UDP %s:%d", EEG_ADDRESS, *sender[:2], host, port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True
        await self._halt()
        self._close_socket()

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Yield chunks as they arrive; raise StreamLostError when the messages stop.

        After :meth:`reconnect`, call ``chunks()`` again to go on reading.
        """
        if not self._handoff.open or self._closed:
            raise RuntimeError("OscSource.chunks() needs an open source: use `async with OscSource(...)`.")
        async for chunk in self._handoff.chunks():  # an error stays in place until reconnect()
            yield chunk

    async def reconnect(self) -> None:
        """Wait (cancellable, forever) until ``/muse/eeg`` messages arrive again, from any sender.

        Raises StreamError when they come back with another number of channels.
        """
        if not self._entered or self._closed:
            raise RuntimeError("OscSource.reconnect() needs an open source: use `async with OscSource(...)`.")
        await self._halt()
        while (first := await asyncio.to_thread(self._wait_first, 0.5)) is None:
            pass
        values, sender = first
        if values.size != self.info.n_channels:
            raise StreamError(
                f"OSC {EEG_ADDRESS} on UDP port {self.address[1]} came back with {values.size} values per message "
                f"instead of {self.info.n_channels}; restart brainharmonic to use the new layout "
                "(the pipeline was built for the old one)."
            )
        self._clock = ArrivalClock(self.sfreq)
        self._start(values, sender)
        self._n_reconnects += 1

    def stats(self) -> dict[str, Any]:
        """Counters for telemetry: samples, chunks, dropped chunks, reconnects, measured rate (Hz), and the
        messages left out: ``rejected`` (wrong length, not numbers), ``ignored`` (other addresses),
        ``foreign`` (from a second sender), ``clock_corrections``."""
        rate = 0.0
        marks = list(self._rate_marks)
        if len(marks) >= 2 and marks[-1][0] > marks[0][0]:
            rate = (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])
        return {
            "samples": self._n_samples,
            "chunks": self._handoff.n_chunks,
            "dropped_chunks": self._handoff.n_dropped,
            "reconnects": self._n_reconnects,
            "rate": rate,
            "queued_samples": self._handoff.queued_samples,
            "rejected": self._n_rejected,
            "ignored": self._n_ignored,
            "foreign": self._n_foreign,
            "clock_corrections": self._corrections + self._clock.corrections,
        }

    # -- socket --------------------------------------------------------------------------
    def _bind(self) -> socket.socket:
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise StreamError(
                f"OSC input host {self.host!r} is not an address of this machine ({exc}); use --osc-in PORT "
                "(all addresses) or --osc-in 127.0.0.1:PORT."
            ) from None
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise StreamError(
                f"Cannot listen for OSC on UDP {self.host}:{self.port} ({exc.strerror or exc}); another program "
                "(a second brainharmonic, an OSC monitor) may hold that port: pick another with --osc-in PORT and "
                "point the sender at it."
            ) from None
        sock.setblocking(False)  # waits go through poll() with a timeout; receives drain without blocking
        return sock

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    # -- reader thread -------------------------------------------------------------------
    def _start(self, first: np.ndarray, sender: Any) -> None:
        assert self._loop is not None and self._info is not None
        self._handoff.reset(self._loop, round(self.max_queue_seconds * self.sfreq))
        self._rate_marks.clear()
        self._sender = sender
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._read, args=(first, self._stop), name=f"osc-reader-{self.address[1]}", daemon=True
        )
        self._thread.start()

    async def _halt(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 2.0)
        self._corrections += self._clock.corrections
        self._clock.corrections = 0

    def _wait_first(self, timeout: float | None) -> tuple[np.ndarray, Any] | None:
        """Receive until one usable ``/muse/eeg`` message arrives (worker thread); None after ``timeout`` s."""
        sock = self._sock
        assert sock is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while deadline is None or time.monotonic() < deadline:
                for data, sender in _receive(sock, 1):
                    for values in self._eeg_values(data, expect=None):
                        return values, sender
        except OSError:  # closed under us: the source is closing
            pass
        return None

    def _eeg_values(self, data: bytes, expect: int | None) -> list[np.ndarray]:
        """The samples in one datagram (a message or a bundle), each an array of shape (n_channels,)."""
        from pythonosc.osc_packet import OscPacket, ParseError

        try:
            messages = OscPacket(data).messages
        except ParseError:
            self._n_rejected += 1
            self._warn("parse", f"A datagram on UDP port {self.address[1]} is not OSC; ignored (counted as rejected).")
            return []
        out = []
        for timed in messages:
            msg = timed.message
            if msg.address != EEG_ADDRESS:
                self._n_ignored += 1
                continue
            params = msg.params
            if not params or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in params):
                self._n_rejected += 1
                self._warn("type", f"An OSC {EEG_ADDRESS} message holds something other than numbers; ignored.")
                continue
            n = len(params) if expect is None else expect
            if len(params) != n or not 1 <= n <= MAX_CHANNELS:
                self._n_rejected += 1
                self._warn(
                    "length",
                    f"An OSC {EEG_ADDRESS} message has {len(params)} values, but this stream has "
                    f"{n if expect is not None else f'at most {MAX_CHANNELS}'}; such messages are ignored "
                    "(check the sender's channel settings).",
                )
                continue
            out.append(np.asarray(params, dtype=np.float64))
        return out

    def _warn(self, kind: str, text: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("%s", text)

    def _read(self, first: np.ndarray, stop: threading.Event) -> None:
        sock = self._sock
        assert sock is not None and self._info is not None
        n_ch = self._info.n_channels
        lost_after = self.stream.lost_after
        max_block = max(1, int(self.sfreq * _MAX_BLOCK))
        samples: list[np.ndarray] = [first]
        last = time.monotonic()
        try:
            while not stop.is_set():
                for data, sender in _receive(sock, max_block - len(samples)):
                    samples.extend(self._accept(data, sender, n_ch))
                if not samples:
                    if time.monotonic() - last > lost_after:
                        raise StreamLostError(
                            f"OSC {EEG_ADDRESS} on UDP port {self.address[1]} brought no samples for "
                            f"{lost_after:g} s; check the headset and the phone app's streaming "
                            "(brainharmonic goes on when they return)."
                        )
                    continue
                now = last = time.monotonic()
                block = np.stack(samples, axis=1)
                samples = []
                self._n_samples += block.shape[1]
                if not self._rate_marks or now - self._rate_marks[-1][0] >= 0.5:
                    self._rate_marks.append((now, self._n_samples))
                self._handoff.put((block, self._clock.stamp(block.shape[1], now), now))
        except OSError as exc:
            if not stop.is_set():  # a closing socket during a stop is expected
                self._handoff.put(StreamError(f"OSC input on UDP port {self.address[1]} failed ({exc})."))
        except BaseException as exc:  # forwarded to the loop, never swallowed
            self._handoff.put(exc)

    def _accept(self, data: bytes, sender: Any, n_ch: int) -> list[np.ndarray]:
        if sender != self._sender:
            self._n_foreign += 1
            self._warn(
                "foreign",
                f"OSC from {sender[0]}:{sender[1]} ignored: this stream reads from {self._sender[0]}:"
                f"{self._sender[1]} (send from one device per port).",
            )
            return []
        return self._eeg_values(data, expect=n_ch)


def _receive(sock: socket.socket, most: int) -> list[tuple[bytes, Any]]:
    """Wait up to ``_POLL`` s for a datagram, then take what else is waiting (at most ``most``) without blocking."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(_POLL * 1000):
        return []
    out: list[tuple[bytes, Any]] = []
    while len(out) < max(1, most):
        try:
            out.append(sock.recvfrom(65535))
        except BlockingIOError:
            break
    return out
