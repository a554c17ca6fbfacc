"""OSC out: the brain, the notes and the beat for visual tools (TouchDesigner, Max, Resolume, Processing, ...).

``run --osc HOST:PORT`` (several allowed; ``[osc] targets``) sends UDP datagrams, one OSC message
each, from the event loop through one non-blocking socket: a full socket buffer drops the
message (counted), nothing ever waits, so OSC cannot slow the music.

=====================================================  ======  ==============================================
address                                                types   when, value and range
=====================================================  ======  ==============================================
``/brainharmonic/<group>/<band>``                      f       per window: band z-score, -z_clip..z_clip (±4)
``/brainharmonic/token``                               i       per window: brain token, 0..K-1; -1 without one
``/brainharmonic/chord``                               s       per window: current chord symbol, e.g. "Dm7"
``/brainharmonic/tempo``                               f       per window: BPM, 20..300
``/brainharmonic/note``                                s i i f at each onset: instrument, pitch 0..127,
                                                               velocity 1..127, duration s (> 0)
``/brainharmonic/beat``                                i f     at each beat: beat number (≥ 0), BPM
``/muse/elements/{delta,theta,alpha,beta,gamma}_absolute``  f | ffff  per window (Mind Monitor's): log10 band
                                                               power in µV² (Bels, about -1..3); four values
                                                               (TP9, AF7, AF8, TP10) from a Muse, else the mean
=====================================================  ======  ==============================================

Notes and beats are sent when they sound (``loop.call_at`` on the scheduler's clock), not when they
are composed; the notes come from the scheduler's live set, so a muted instrument or a re-composed
span is followed. Mind Monitor's band powers are computed here from each preprocessed window
(delta 1-4, theta 4-8, alpha 7.5-13, beta 13-30, gamma 30-44 Hz, Muse's bands; gamma lies mostly
above the default 40 Hz band-pass and reads low).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
import struct
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from ..config import OscSettings, split_host_port
from ..errors import ConfigError
from ..events import BrainState, Note, Window

if TYPE_CHECKING:
    from ..brain.bandpower import BandPower
    from ..pipeline import LivePipeline

log = logging.getLogger(__name__)

PREFIX = "/brainharmonic"
#: Mind Monitor's bands (Hz) and the Muse electrodes it reports per band, in its order.
MUSE_BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (7.5, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 44.0),
}
MUSE_SENSORS = ("TP9", "AF7", "AF8", "TP10")
_TO_MICROVOLT = {"V": 1e6, "mV": 1e3, "uV": 1.0, "µV": 1.0, "nV": 1e-3}
#: A note discovered this late (s after its onset) is still sent; later ones are skipped.
LATE_NOTE = 0.05
_BAD_ADDRESS_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")


def _pad(b: bytes) -> bytes:
    """OSC strings end in NUL and are padded to a multiple of 4 bytes."""
    return b + b"\x00" * (4 - len(b) % 4)


class OscEncoder:
    """OSC 1.0 messages of ints (i), floats (f) and strings (s); address and type tags cached per signature."""

    def __init__(self) -> None:
        self._heads: dict[tuple[str, str], bytes] = {}

    def message(self, address: str, *args: int | float | str) -> bytes:
        tags = "".join("s" if isinstance(a, str) else "i" if isinstance(a, int) else "f" for a in args)
        head = self._heads.get((address, tags))
        if head is None:
            head = self._heads[(address, tags)] = _pad(address.encode()) + _pad(b"," + tags.encode())
        parts = [head]
        for a, t in zip(args, tags, strict=True):
            if t == "s":
                parts.append(_pad(str(a).encode()))
            elif t == "i":
                parts.append(struct.pack(">i", int(a)))
            else:
                parts.append(struct.pack(">f", float(a)))
        return b"".join(parts)


def address_part(name: str) -> str:
    """A group or band name made safe for an OSC address (no spaces, slashes or pattern characters)."""
    return _BAD_ADDRESS_CHARS.sub("_", name) or "_"


class OscOut:
    """Sends a running pipeline's brain, notes and beats as OSC (an async context manager around the run).

    Entering resolves the targets (an unknown host is a :class:`ConfigError`), opens the socket and
    adds listeners to ``pipeline``; leaving removes them and cancels what is still scheduled.
    """

    def __init__(self, pipeline: LivePipeline, settings: OscSettings) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.targets = [split_host_port(t) for t in settings.targets]
        self._addrs: list[tuple[socket.socket, Any]] = []
        self._socks: list[socket.socket] = []
        self._enc = OscEncoder()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._notes: dict[int, asyncio.TimerHandle] = {}
        self._sent: set[int] = set()
        self._beats: dict[int, asyncio.TimerHandle] = {}
        self._last_beat = -1
        self._muse: tuple[BandPower, list[int] | None, float] | None = None
        self._muse_off = not settings.muse_elements
        self._warned = False
        self.sent = 0  #: datagrams handed to the kernel
        self.dropped = 0  #: datagrams dropped (socket buffer full, unreachable network)

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        for host, port in self.targets:
            try:
                infos = await self._loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except socket.gaierror as exc:
                self._close()
                raise ConfigError(
                    f"OSC target {host}:{port} cannot be resolved ({exc}); give an IP address or a known host name "
                    "in --osc HOST:PORT ([osc] targets)."
                ) from None
            # IPv4 first: most OSC tools listen on IPv4 only, and "localhost" may resolve to ::1 first
            family, _, _, _, addr = min(infos, key=lambda info: info[0] != socket.AF_INET)
            sock = next((s for s in self._socks if s.family == family), None)
            if sock is None:
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.setblocking(False)
                self._socks.append(sock)
            self._addrs.append((sock, addr))
        self.pipeline.listeners.append(self._on_window)
        self.pipeline.window_listeners.append(self._on_muse_window)
        log.info("sending OSC to %s", ", ".join(f"{h}:{p}" for h, p in self.targets))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._on_window in self.pipeline.listeners:
            self.pipeline.listeners.remove(self._on_window)
        if self._on_muse_window in self.pipeline.window_listeners:
            self.pipeline.window_listeners.remove(self._on_muse_window)
        for handle in [*self._notes.values(), *self._beats.values()]:
            handle.cancel()
        self._notes.clear()
        self._beats.clear()
        self._close()

    def _close(self) -> None:
        for sock in self._socks:
            sock.close()
        self._socks.clear()
        self._addrs.clear()

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "dropped": self.dropped, "targets": len(self._addrs)}

    # ------------------------------------------------------------------ sending

    def send(self, address: str, *args: int | float | str) -> None:
        """One message to every target, now; a full buffer or a network error drops it (counted)."""
        data = self._enc.message(address, *args)
        for sock, addr in self._addrs:
            try:
                sock.sendto(data, addr)
                self.sent += 1
            except OSError:  # BlockingIOError (buffer full), unreachable network, ...
                self.dropped += 1

    # ------------------------------------------------------------------ per window

    def _on_window(self, state: BrainState, notes: list[Note]) -> None:
        """Pipeline listener: the window's brain state and plan now; notes and beats scheduled for their onsets."""
        try:
            for g in state.groups:
                group = address_part(g.name)
                for band, z in g.z.items():
                    self.send(f"{PREFIX}/{group}/{address_part(band)}", float(z))
            self.send(f"{PREFIX}/token", -1 if state.token is None else int(state.token))
            composer = self.pipeline.engine.composer if self.pipeline.engine is not None else None
            if composer is not None:
                self.send(f"{PREFIX}/chord", str(composer.chord_name()))
                self.send(f"{PREFIX}/tempo", float(composer.tempo))
            self._plan()
        except Exception:  # OSC is never worth stopping the music for
            self._warn_once()

    def _warn_once(self) -> None:
        if not self._warned:
            self._warned = True
            log.exception("Sending OSC failed; the music goes on (logged once).")

    def _plan(self) -> None:
        """Schedule a send at the onset of every live note and beat up to the composed frontier."""
        p, loop = self.pipeline, self._loop
        scheduler = p.scheduler
        if loop is None or scheduler is None or not scheduler.running or scheduler.origin is None:
            return
        origin = scheduler.origin
        now = scheduler.music_now()
        live = scheduler.live_notes()
        for nid in [n for n in self._notes if n not in live]:  # cancelled (mute, solo, a re-composed span)
            self._notes.pop(nid).cancel()
        for nid, note in live.items():
            if nid not in self._notes and nid not in self._sent and note.time >= now - LATE_NOTE:
                self._notes[nid] = loop.call_at(origin + note.time, self._fire_note, nid, note)
        if len(self._sent) > 4096:
            self._sent &= set(live)
        frontier = None if p.engine is None else p.engine.frontier
        if p.engine is None or frontier is None:
            return
        composer = p.engine.composer
        # Beat times move with a tempo change: place every beat not yet sent afresh (a handle already due stays).
        first = max(self._last_beat + 1, math.ceil(composer.beat_at(now - LATE_NOTE) - 1e-9), 0)
        wanted: dict[int, float] = {}
        beat = first
        while (t := composer.time_of_beat(beat)) < frontier:
            wanted[beat] = origin + t
            beat += 1
        for b in list(self._beats):
            if b not in wanted or abs(self._beats[b].when() - wanted[b]) > 1e-4:
                self._beats.pop(b).cancel()
        for b, when in wanted.items():
            if b not in self._beats:
                self._beats[b] = loop.call_at(when, self._fire_beat, b)

    def _fire_note(self, nid: int, note: Note) -> None:
        self._notes.pop(nid, None)
        self._sent.add(nid)
        try:
            self.send(f"{PREFIX}/note", note.instrument, int(note.pitch), int(note.velocity), float(note.duration))
        except Exception:
            self._warn_once()

    def _fire_beat(self, beat: int) -> None:
        self._beats.pop(beat, None)
        self._last_beat = max(self._last_beat, beat)
        engine = self.pipeline.engine
        try:
            tempo = float(engine.composer.tempo) if engine is not None else self.pipeline.settings.music.tempo
            self.send(f"{PREFIX}/beat", int(beat), tempo)
        except Exception:
            self._warn_once()

    # ------------------------------------------------------------------ Mind Monitor elements

    def _on_muse_window(self, window: Window, state: BrainState) -> None:
        """Window listener: Mind Monitor's absolute band powers of this window."""
        if self._muse_off:
            return
        try:
            if self._muse is None or self._muse[0].n_full != window.data.shape[1]:
                self._muse = self._muse_setup(window)
                if self._muse is None:
                    return
            bandpower, sensors, scale = self._muse
            power = bandpower.compute(window.data) * scale**2  # (n_channels, 5) in µV²
            bad = {i for i, _ in window.bad}
            if sensors is not None:
                logp = np.log10(np.maximum(power[sensors], 1e-12))
                logp[~np.isfinite(logp)] = 0.0
                for j, band in enumerate(MUSE_BANDS):
                    self.send(f"/muse/elements/{band}_absolute", *(float(v) for v in logp[:, j]))
                return
            good = [i for i in range(power.shape[0]) if i not in bad and np.isfinite(power[i]).all()]
            if not good:
                return
            mean = np.log10(np.maximum(power[good].mean(axis=0), 1e-12))
            for j, band in enumerate(MUSE_BANDS):
                self.send(f"/muse/elements/{band}_absolute", float(mean[j]))
        except Exception:
            self._warn_once()

    def _muse_setup(self, window: Window) -> tuple[BandPower, list[int] | None, float] | None:
        from ..brain.bandpower import BandPower
        from ..signal.channels import clean_name

        engine = self.pipeline.engine
        if engine is None:
            return None
        info = engine.info
        try:
            bandpower = BandPower(info.sfreq, window.data.shape[1], MUSE_BANDS)
        except ConfigError as exc:
            self._muse_off = True
            log.warning("No Mind Monitor band powers over OSC for this stream: %s", exc)
            return None
        names = [clean_name(c).upper() for c in info.ch_names]
        sensors = [names.index(s) for s in MUSE_SENSORS] if all(s in names for s in MUSE_SENSORS) else None
        return bandpower, sensors, _TO_MICROVOLT.get(info.units, 1e6)
