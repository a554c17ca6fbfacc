"""Ableton Link: tempo, bar phase and start/stop shared with Link apps (Live, Bitwig, VCV Rack, ...).

``async with LinkSync(pipeline, settings.link): await pipeline.run()`` joins the Link session on the
local network (through aalink, a binding of Ableton's Link library) and keeps the live run on it:

* Tempo. A session tempo change is heard within about 10 ms: the same cut as an MQTT ``set_tempo``
  (through :meth:`Engine.apply`, heard at once), which pins the tempo, so the brain stops moving it.
* Bar phase (quantum 4). After each composed window the beat position at the composing frontier is
  compared with the session's beat there, modulo the bar; the error is closed by the shared phase
  correction of the MQTT beat sync (``control/sync.py``: snap above a quarter beat, else a tempo
  nudge of at most ``max_adjust`` over ``smoothing`` s). Our beat numbers stay ours: only bar lines
  are shared, as Link intends.
* Start/stop. We start playing when we join (peers with start/stop sync start with us, as pressing
  play in any Link app does). A peer's Stop silences us (pending notes dropped, sounding ones ended,
  like a mute of every instrument); its Start brings the music back on the session's bar grid.
* ``lead``. A tempo our side chooses (the harmonic plan's at a bar line, from the brain; a user's
  ``set_tempo``) is proposed to the session; so is our start to each peer that joins, and our stop
  when the run ends. A peer may still change the tempo; we follow it
  without pinning, until the brain moves the tempo again.

Clocks. aalink reports the session's beat at "now" only. Each read is bracketed by two
``time.monotonic()`` readings and taken at their midpoint; the beat at another moment is
extrapolated at the session tempo. Link's own clock and ``time.monotonic`` are both the machine's
monotonic clock, so the extrapolation spans ≤ half a second of music at most.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import time
from types import TracebackType
from typing import Any, Self

from ..config import LinkSettings, Settings
from ..errors import ConfigError
from ..music.constants import BEATS_PER_BAR
from .sync import correct_phase

log = logging.getLogger("brainharmonic")

QUANTUM = float(BEATS_PER_BAR)  #: Link's quantum: bar lines are shared
#: Session tempo changes smaller than this (BPM) are Link's own rounding, not a change.
TEMPO_EPS = 0.01


def check_link(settings: Settings) -> None:
    """Refuse Link together with another tempo source, in one sentence."""
    if not settings.link.enabled and not settings.link.lead:
        return
    other = (
        f"--follow {settings.control.follow}"
        if settings.control.follow is not None
        else (f"--clock-in {settings.output.clock_in}" if settings.output.clock_in is not None else None)
    )
    if other is not None:
        raise ConfigError(
            f"--link and {other} would both set the tempo; follow either the Link session or that clock, not both."
        )


def add_link_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Ableton Link (see [link] in the config)")
    g.add_argument(
        "--link",
        action="store_true",
        default=None,
        help="Join the Link session on the local network: tempo, bar phase and start/stop follow it.",
    )
    g.add_argument(
        "--link-lead",
        action="store_true",
        default=None,
        help="With Link: propose our brain-driven tempo changes (and our start/stop) to the session.",
    )


def link_overrides(args: argparse.Namespace) -> dict[str, Any]:
    lead = getattr(args, "link_lead", None)
    enabled = True if (getattr(args, "link", None) or lead) else None
    return {"enabled": enabled, "lead": lead}


def wrap(beats: float, quantum: float = QUANTUM) -> float:
    """``beats`` folded into [-quantum/2, quantum/2): the phase difference of two beat positions."""
    return (beats + quantum / 2.0) % quantum - quantum / 2.0


class LinkClock:
    """The Link session as seen from this machine's monotonic clock."""

    def __init__(self, link: Any) -> None:
        self.link = link

    def read(self) -> tuple[float, float, float]:
        """(monotonic time, session beat at that time, session tempo)."""
        t0 = time.monotonic()
        beat = float(self.link.beat)
        t1 = time.monotonic()
        return (t0 + t1) / 2.0, beat, float(self.link.tempo)

    def beat_at(self, mono: float) -> tuple[float, float]:
        """(session beat at monotonic time ``mono``, session tempo), extrapolated from now."""
        t, beat, tempo = self.read()
        return beat + (mono - t) * tempo / 60.0, tempo


class LinkSync:
    """Keeps a live pipeline on an Ableton Link session; see the module notes."""

    def __init__(self, pipeline: Any, settings: LinkSettings, *, bpm: float = 120.0) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.lead = settings.lead
        self.link: Any = None
        self.clock: LinkClock | None = None
        self.bpm = bpm
        self.playing = True  #: False while a peer has stopped the session
        self.snaps = 0
        self.proposals = 0
        self.errors_ms: collections.deque[float] = collections.deque(maxlen=4096)
        self._proposed: float | None = None
        self._nudged: float | None = None  # the composer's tempo as our last phase correction left it
        self._peers = 0
        self._snap_next = True
        self._state: Any = None
        self._silenced: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Self:
        try:
            from aalink import Link
        except ImportError as exc:
            raise ConfigError(f"Ableton Link needs the aalink package ({exc}); run `pip install aalink`.") from None
        self._loop = asyncio.get_running_loop()
        link = Link(self.bpm)
        link.quantum = QUANTUM
        link.start_stop_sync_enabled = True
        link.set_tempo_callback(self._on_tempo)
        link.set_start_stop_callback(self._on_start_stop)
        link.set_num_peers_callback(self._on_peers)
        link.enabled = True
        self.link, self.clock = link, LinkClock(link)
        # We play from the start, so our Link state says so (a joining peer does not take the session's
        # state until it changes; measured with aalink 0.2.3): peers with start/stop sync start with us, and
        # a later Stop is a change we are told about.
        link.playing = True
        self.pipeline.listeners.append(self._on_window)
        log.info("joined the Ableton Link session (%d peers, %.2f BPM)", link.num_peers, link.tempo)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._on_window in self.pipeline.listeners:
            self.pipeline.listeners.remove(self._on_window)
        if self.link is not None:
            if self.lead and self.link.playing:
                self.link.playing = False
                await asyncio.sleep(0.1)  # let the Stop reach the peers before we leave
            self.link.enabled = False
            self.link = None

    # ------------------------------------------------------------------ per window

    def _clock(self) -> tuple[Any, float, float] | None:
        """(composer, frontier, origin) while the run composes with a clocked composer."""
        p = self.pipeline
        engine, scheduler = p.engine, p.scheduler
        frontier = None if engine is None else engine.frontier
        if engine is None or scheduler is None or frontier is None or scheduler.origin is None:
            return None
        if not scheduler.running:
            return None
        return engine.composer, frontier, scheduler.origin

    def _on_window(self, state: Any, notes: Any) -> None:
        """Pipeline listener (event loop, after each window's notes were scheduled)."""
        self._state = state
        clock = self._clock()
        if clock is None or self.clock is None:
            return
        composer, frontier, origin = clock
        playing = bool(self.link.playing)
        if playing != self.playing:  # a start/stop whose callback has not come (yet)
            self._on_start_stop(playing)
            if not playing:
                return
        if self.lead:
            self._propose(composer)
        self.align(composer, frontier, origin)

    def align(self, composer: Any, at: float, origin: float) -> float:
        """Put the composer's bar phase at music time ``at`` on the session's; returns the error (ms)."""
        assert self.clock is not None
        session, tempo = self.clock.beat_at(origin + at)
        ours = composer.beat_at(at)
        target = ours - wrap(ours - session)
        error, snapped = correct_phase(
            composer,
            at,
            target,
            tempo,
            snap=self._snap_next,
            smoothing=self.settings.smoothing,
            max_adjust=self.settings.max_adjust,
            pin=not self.lead,
        )
        self._snap_next = False
        self._nudged = float(composer.tempo)
        self.snaps += int(snapped)
        err_ms = error * 60.0 / tempo * 1000.0
        if not snapped:  # a snap is a first lock or a jump (start, a tempo change), not a tracking error
            self.errors_ms.append(err_ms)
        return err_ms

    def _propose(self, composer: Any) -> None:
        """Lead: a tempo our side chose (the plan at a bar line, a user's set_tempo) goes to the session.

        The composer's tempo is ours unless it is the one our last phase nudge set.
        """
        tempo = float(composer.tempo)
        if self._nudged is not None and abs(tempo - self._nudged) <= 1e-9:
            return
        if self._proposed is None or abs(tempo - self._proposed) > TEMPO_EPS:
            self._proposed = tempo
            self.link.tempo = tempo
            self.proposals += 1

    # ------------------------------------------------------------------ from Link (event loop)

    def _on_tempo(self, bpm: float) -> None:
        bpm = float(bpm)
        if self.lead and self._proposed is not None and abs(bpm - self._proposed) <= TEMPO_EPS:
            return  # our own proposal coming back
        engine = self.pipeline.engine
        if engine is None or abs(float(engine.composer.tempo) - bpm) <= TEMPO_EPS:
            return
        bpm = min(300.0, max(20.0, bpm))
        log.info("Link session tempo %.2f BPM", bpm)
        if self.lead:
            self._proposed = bpm  # a peer's tempo is the session's now; the brain's next change re-proposes
        clock = self._clock()
        if clock is None:
            engine.composer.retime(0.0, bpm, pin=not self.lead)  # before the first window: from the start
            return
        composer, _, origin = clock

        def change(at: float) -> None:
            # The session changed tempo a little before ``at`` (Link keeps its beat continuous there): our
            # tempo from ``at``, and our beat at ``at`` exactly on the session's; the engine composes again.
            composer.retime(at, bpm, pin=not self.lead)
            self._snap_next = True
            self.align(composer, at, origin)

        engine.apply(change)

    def _on_start_stop(self, playing: bool) -> None:
        playing = bool(playing)
        if playing == self.playing:
            return
        self.playing = playing
        engine, scheduler = self.pipeline.engine, self.pipeline.scheduler
        if engine is None or scheduler is None or not scheduler.running:
            return
        composer = engine.composer
        if not playing:
            self._silenced = [n for n in composer.instruments if n not in composer.muted]
            for name in self._silenced:
                composer.set_muted(name, True)
            scheduler.cancel(instruments=self._silenced, end_sounding=True)
            log.info("Link session stopped: silent until it starts again")
        else:
            for name in self._silenced:
                composer.set_muted(name, False)
            self._silenced = []
            self._snap_next = True
            log.info("Link session started: the music comes back on its bar grid")
            clock = self._clock()
            if clock is not None:
                comp, _, origin = clock
                engine.apply(lambda at: self.align(comp, at, origin))

    def _on_peers(self, n: int) -> None:
        log.info("Ableton Link: %d peer%s", n, "" if n == 1 else "s")
        if self.lead and self.playing and self.link is not None and n > self._peers:
            # A joining peer does not take the session's start/stop state until it changes: say it again.
            self.link.playing = True
        self._peers = n

    def stats(self) -> dict[str, Any]:
        """Peers, tempo, playing and recent phase errors (ms) for health telemetry."""
        errs = sorted(abs(e) for e in self.errors_ms)
        p99 = errs[min(len(errs) - 1, int(0.99 * len(errs)))] if errs else None
        return {
            "peers": None if self.link is None else int(self.link.num_peers),
            "tempo": None if self.link is None else round(float(self.link.tempo), 3),
            "playing": self.playing,
            "lead": self.lead,
            "snaps": self.snaps,
            "proposals": self.proposals,
            "phase_error_ms": round(self.errors_ms[-1], 3) if self.errors_ms else None,
            "phase_error_p99_ms": None if p99 is None else round(p99, 3),
        }
