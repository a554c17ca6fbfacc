"""Multi-performer sync: one instance leads the beat clock, the others follow it over MQTT.

Every leading or following instance publishes its latest composed beat as a
:class:`~.messages.SyncBeat` on ``brainharmonic/<instance>/sync/beat`` once per window
(a heartbeat) and right after a live change. A follower listens to ``brainharmonic/+/sync/beat``
and, after each window it composes, aligns its music clock at its composing frontier (notes
before it are already scheduled, so nothing audible jumps back):

* the leader's beat position at the frontier is extrapolated from its latest beat
  (``beat + (t - time) * tempo / 60``; the leader publishes beats ahead, as it composes them);
* a phase error above ``SNAP_BEATS`` (first lock, leader restart) snaps the grid to the leader's
  beat numbering at once, so bars and chords line up too;
* a smaller error is closed smoothly: tempo = leader tempo × (1 − error / (smoothing × beat rate)),
  the nudge clipped to ``sync_max_adjust`` — a first-order loop, no overshoot while the
  smoothing time exceeds the window hop;
* the leader's key, scale and chord plan (bar → scale degree) are adopted.

Clocks: beat times are ``time.monotonic()`` values of the publisher. Instances on one machine
share that clock exactly (same Linux boot id); elsewhere the follower estimates the offset as the
smallest (arrival − sent) of recent messages, so its error is about the network's latency floor.

Losing the leader (no beat for ``sync_lost_after`` s): each follower keeps time alone at the last
tempo, or with ``takeover`` the live follower with the lowest instance name leads the others until
the leader returns.
"""

from __future__ import annotations

import collections
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from ..config import ControlSettings
from ..errors import ConfigError
from ..music.constants import BEATS_PER_BAR
from .messages import SyncBeat

log = logging.getLogger(__name__)

#: A phase error larger than this (beats) is corrected at once instead of smoothly.
SNAP_BEATS = 0.25
#: Arrival − sent samples kept per peer for the clock-offset estimate.
OFFSET_SAMPLES = 32

Role = Literal["leader", "follower", "alone"]


def clock_id() -> str:
    """Names this machine's monotonic clock: the Linux boot id (another boot, another clock)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:64]
    except OSError:
        return f"process-{uuid.uuid4().hex}"  # cannot prove a shared clock: always estimate


class Clocked(Protocol):
    """What sync needs from a composer (the classic composer has all of it)."""

    @property
    def tempo(self) -> float: ...
    @property
    def key(self) -> str: ...
    @property
    def scale(self) -> str: ...
    @property
    def degree(self) -> int: ...
    def beat_at(self, t: float) -> float: ...
    def time_of_beat(self, beat: float) -> float: ...
    def retime(self, at: float, tempo: float | None = None, *, beat: float | None = None, pin: bool = True) -> None: ...
    def set_key(self, key: str, scale: str | None = None) -> None: ...
    def chord_name(self, degree: int | None = None) -> str: ...
    def chord_plan(self) -> list[tuple[int, int]]: ...
    def follow_chords(self, plan: dict[int, int]) -> None: ...


class Phased(Protocol):
    """What a phase correction needs from a composer."""

    def beat_at(self, t: float) -> float: ...
    def retime(self, at: float, tempo: float | None = None, *, beat: float | None = None, pin: bool = True) -> None: ...


def correct_phase(
    composer: Phased,
    at: float,
    target: float,
    tempo: float,
    *,
    snap: bool,
    smoothing: float,
    max_adjust: float,
    pin: bool = True,
) -> tuple[float, bool]:
    """Bring the composer's beat position at music time ``at`` onto ``target`` at ``tempo`` BPM.

    An error above ``SNAP_BEATS`` (or ``snap``) jumps the grid to ``target`` at once; a smaller one is
    closed over ``smoothing`` s by a tempo nudge of at most ``max_adjust`` (a first-order loop). Shared
    by the MQTT beat sync and Ableton Link. Returns (error in beats before the correction, snapped).
    """
    error = composer.beat_at(at) - target  # beats; > 0: we are ahead
    if snap or abs(error) > SNAP_BEATS:
        composer.retime(at, tempo, beat=target, pin=pin)
        return error, True
    nudge = max(-max_adjust, min(max_adjust, -error * (60.0 / tempo) / smoothing))
    composer.retime(at, min(300.0, max(20.0, tempo * (1.0 + nudge))), pin=pin)
    return error, False


@dataclass
class _Peer:
    last: SyncBeat
    arrived: float
    offsets: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=OFFSET_SAMPLES))

    def offset(self, shared: bool) -> float:
        """Add to the peer's monotonic times to get ours."""
        return 0.0 if shared else min(self.offsets)


class BeatSync:
    """Leader and follower logic of one instance; fed by MQTT messages and by each composed window.

    All methods run on the event loop (the control plane's callback and the pipeline's listener).
    """

    def __init__(self, settings: ControlSettings) -> None:
        self.instance = settings.instance
        self.follow = settings.follow
        self.publishing = settings.lead or settings.follow is not None
        self.takeover = settings.takeover
        self.lost_after = settings.sync_lost_after
        self.smoothing = settings.sync_smoothing
        self.max_adjust = settings.sync_max_adjust
        self.clock = clock_id()
        self.peers: dict[str, _Peer] = {}
        self.reference: str | None = None  #: the instance followed now (None: leading or alone)
        self.role: Role = "leader" if self.follow is None else "alone"
        self.snaps = 0
        self.rejected = 0
        self.errors_ms: collections.deque[float] = collections.deque(maxlen=256)
        self._locked_to: str | None = None
        self._applied: tuple[float, str, str] | None = None  # (tempo, key, scale) last taken from the reference

    # ------------------------------------------------------------------ incoming

    def on_message(self, topic: str, payload: bytes, arrived: float) -> bool:
        """Store a peer's beat; True when it changes what we follow (tempo, key or scale jumped)."""
        if self.follow is None:
            return False
        try:
            beat = SyncBeat.model_validate_json(payload)
        except ValidationError as exc:
            self.rejected += 1
            if self.rejected == 1 or self.rejected % 100 == 0:
                log.warning("Ignored a malformed sync beat on %s (%d so far): %s", topic, self.rejected, exc)
            return False
        if beat.instance == self.instance or topic.split("/")[1:2] != [beat.instance]:
            return False  # our own echo, or a message claiming another instance's name
        peer = self.peers.get(beat.instance)
        if peer is None:
            peer = self.peers[beat.instance] = _Peer(beat, arrived)
        peer.last, peer.arrived = beat, arrived
        peer.offsets.append(arrived - beat.sent)
        ref = self._reference(arrived)
        if ref is None or ref.last.instance != beat.instance:
            return False
        applied = self._applied
        return applied is not None and (abs(applied[0] - beat.tempo) > 1e-6 or applied[1:] != (beat.key, beat.scale))

    def _reference(self, now: float) -> _Peer | None:
        """The peer to follow now (updates role and reference)."""
        if self.follow is None:
            self.role, self.reference = "leader", None
            return None
        fresh = {name: p for name, p in self.peers.items() if now - p.arrived <= self.lost_after}
        leader = fresh.get(self.follow)
        if leader is not None:
            self.role, self.reference = "follower", self.follow
            return leader
        if self.takeover:
            band = sorted([n for n, p in fresh.items() if p.last.follows == self.follow] + [self.instance])
            if band[0] != self.instance:
                self.role, self.reference = "follower", band[0]
                return fresh[band[0]]
            self.role, self.reference = "leader", None
            return None
        self.role, self.reference = "alone", None
        return None

    @property
    def following(self) -> bool:
        """True while tempo and key come from another instance (local tempo/key commands are refused)."""
        self._reference(time.monotonic())
        return self.role == "follower"

    # ------------------------------------------------------------------ aligning

    def _target(self, ref: _Peer, local_mono: float) -> float:
        """The reference's beat position at our monotonic time ``local_mono``."""
        b = ref.last
        t_beat = b.time + ref.offset(b.clock == self.clock)
        return b.beat + (local_mono - t_beat) * b.tempo / 60.0

    def align(
        self, composer: Clocked, at: float, origin: float, *, snap: bool = False, now: float | None = None
    ) -> float | None:
        """Align the composer's clock from music time ``at`` on (``origin``: monotonic time of music 0).

        Returns the phase error before the correction in ms (None when there is nothing to follow).
        ``now`` (monotonic s, default the clock) decides which peers still count as alive.
        """
        ref = self._reference(time.monotonic() if now is None else now)
        if ref is None:
            self._locked_to = None
            return None
        b = ref.last
        if (composer.key, composer.scale) != (b.key, b.scale):
            try:
                composer.set_key(b.key, b.scale)
            except ConfigError as exc:
                log.warning("Cannot follow %s into %s %s: %s", b.instance, b.key, b.scale, exc)
        target = self._target(ref, origin + at)
        if target < 0:  # the reference's first beat is still ahead of our frontier
            return None
        first = snap or self._locked_to != b.instance
        error, snapped = correct_phase(
            composer, at, target, b.tempo, snap=first, smoothing=self.smoothing, max_adjust=self.max_adjust
        )
        if snapped:
            self.snaps += 1
            self._locked_to = b.instance
        beat_s = 60.0 / b.tempo
        composer.follow_chords({bar: degree for bar, degree, _ in b.chord_plan})
        self._applied = (b.tempo, b.key, b.scale)
        err_ms = error * beat_s * 1000.0
        self.errors_ms.append(err_ms)
        return err_ms

    # ------------------------------------------------------------------ outgoing

    def beat_message(self, composer: Clocked, frontier: float, origin: float) -> SyncBeat | None:
        """Our latest composed beat (the last one before ``frontier``); None when not publishing.

        Sent after every window (a heartbeat; the control plane keeps only the latest at its rate)
        and right after a live change.
        """
        if not self.publishing:
            return None
        beat = math.floor(composer.beat_at(frontier) - 1e-9)
        if beat < 0:
            return None
        when = origin + composer.time_of_beat(beat)
        bar = beat // BEATS_PER_BAR
        plan = [(bar, composer.degree)] + [(b, d) for b, d in composer.chord_plan() if b > bar]
        self._reference(time.monotonic())
        return SyncBeat(
            instance=self.instance,
            role=self.role,
            follows=self.follow,
            beat=beat,
            time=when,
            tempo=composer.tempo,
            key=composer.key,  # type: ignore[arg-type]
            scale=composer.scale,  # type: ignore[arg-type]
            chord=composer.chord_name(),
            chord_plan=[(b, d % 12, composer.chord_name(d)) for b, d in plan[:8]],
            clock=self.clock,
            sent=time.monotonic(),
        )

    def stats(self) -> dict[str, Any]:
        """Role, reference and recent phase errors (ms) for health telemetry."""
        errs = sorted(abs(e) for e in self.errors_ms)
        p99 = errs[min(len(errs) - 1, int(0.99 * len(errs)))] if errs else None
        return {
            "role": self.role,
            "reference": self.reference,
            "phase_error_ms": round(self.errors_ms[-1], 3) if self.errors_ms else None,
            "phase_error_p99_ms": None if p99 is None else round(p99, 3),
            "snaps": self.snaps,
            "peers": len(self.peers),
            "rejected": self.rejected,
        }
