"""What the page shows: the live state of a running pipeline as one JSON-able snapshot.

The snapshot reuses the MQTT telemetry payloads (:class:`~..control.messages.BrainTelemetry`,
:class:`~..control.messages.MusicTelemetry`, :class:`~..control.messages.HealthTelemetry`), so a
value means the same thing on the page, over MQTT and in a session recording, and adds what only a
view needs: the instruments, the notes of the last seconds and those composed ahead, the brain-token
timeline, calibration progress and where each channel sits on the scalp.

Notes come from the scheduler's live set (what is sounding or scheduled, after mutes and
re-composed spans), sampled at each tick: a note that vanishes before its onset was cancelled and
is forgotten; one that vanishes while sounding ended (early, if it was cut) and joins the history.
The pipeline listener only keeps references, so the music pays nothing for a view nobody watches.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
import warnings
from functools import cache
from typing import TYPE_CHECKING, Any, get_args

from ..config import KeyName, ModeName, ScaleName, WebSettings
from ..control.messages import BrainTelemetry
from ..control.telemetry import health_telemetry, music_telemetry
from ..events import BrainState, Note

if TYPE_CHECKING:
    from ..pipeline import LivePipeline

#: Seconds of played notes and tokens each live frame repeats (a client that missed frames refills from them).
RECENT = 2.0
#: 10-20 names of 1958 that 10-05 montages know by their newer names.
OLD_NAMES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}
#: What the page offers in its selectors: exactly what the command schema accepts.
CHOICES = {"keys": list(get_args(KeyName)), "scales": list(get_args(ScaleName)), "modes": list(get_args(ModeName))}
#: Seconds between two computations of the health figures.
HEALTH_EVERY = 1.0


def note_row(nid: int, note: Note) -> list[Any]:
    """A note as the page reads it: [id, instrument, pitch, velocity, time s, duration s]."""
    return [nid, note.instrument, note.pitch, note.velocity, round(note.time, 4), round(note.duration, 4)]


class LiveView:
    """Follows ``pipeline`` (a listener is added by :meth:`attach`) and builds snapshots of it.

    ``extra`` (a callable returning a dict) adds a surface's own figures under ``web`` in each snapshot.
    """

    def __init__(self, pipeline: LivePipeline, settings: WebSettings) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.started = time.monotonic()
        self.state: BrainState | None = None
        self._live: dict[int, Note] = {}  # the scheduler's live notes at the last tick
        self._played: collections.deque[tuple[int, Note]] = collections.deque()  # ended notes, in end order
        self._tokens: collections.deque[tuple[float, int]] = collections.deque(maxlen=4096)
        self._layout: dict[str, Any] | None = None
        self._brain: tuple[BrainState | None, dict[str, Any] | None] = (None, None)  # dump of the latest state
        self._health: tuple[float, dict[str, Any]] = (-math.inf, {})  # (monotonic time, dump)
        self.seq = 0

    def attach(self) -> None:
        self.pipeline.listeners.append(self.on_window)

    def detach(self) -> None:
        if self.on_window in self.pipeline.listeners:
            self.pipeline.listeners.remove(self.on_window)

    def on_window(self, state: BrainState, notes: list[Note]) -> None:
        """Pipeline listener: keep the latest state and the token (cheap: the music waits for this)."""
        self.state = state
        if state.token is not None:
            self._tokens.append((round(state.t_end, 3), int(state.token)))

    # ------------------------------------------------------------------ notes

    def tick(self) -> None:
        """Follow the scheduler's live notes (call at the frame rate, on the event loop)."""
        scheduler = self.pipeline.scheduler
        if scheduler is None or not scheduler.running:
            return
        now = scheduler.music_now()
        live = scheduler.live_notes()
        for nid, note in self._live.items():
            if nid in live or note.time > now:  # still going, or cancelled before it sounded
                continue
            if note.time + note.duration > now + 0.02:  # ended early: a mute, a panic, a retrigger
                if now - note.time <= 0.0:
                    continue
                note = dataclasses.replace(note, duration=now - note.time)
            self._played.append((nid, note))
        self._live = live
        horizon = now - self.settings.history
        while self._played and self._played[0][1].time + self._played[0][1].duration < horizon:
            self._played.popleft()
        while self._tokens and self._tokens[0][0] < horizon:
            self._tokens.popleft()

    # ------------------------------------------------------------------ snapshots

    def snapshot(self, *, full: bool, readonly: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The state now. ``full``: the whole history and the scalp layout (a new client, ``/api/state``);
        otherwise the last :data:`RECENT` seconds (live frames)."""
        p = self.pipeline
        self.seq += 1
        scheduler = p.scheduler
        running = scheduler is not None and scheduler.running
        now = scheduler.music_now() if running and scheduler is not None else 0.0
        since = -math.inf if full else now - RECENT
        state = self.state
        music = music_telemetry(p)
        out: dict[str, Any] = {
            "type": "state",
            "full": full,
            "seq": self.seq,
            "t": round(now, 4),
            "ts": time.time(),
            "running": running,
            "readonly": readonly,
            "history": self.settings.history,
            "stream": None,
            "brain": self._brain_dump(state),
            "calibration": self._calibration(state),
            "music": None if music is None else music.model_dump(mode="json"),
            "instruments": self._instruments(),
            "notes": [note_row(n, x) for n, x in self._played if x.time + x.duration >= since]
            + [note_row(n, x) for n, x in self._live.items()],
            "tokens": [[t, k] for t, k in self._tokens if t >= since],
            "health": self._health_dump(),
            "web": extra or {},
        }
        if p.engine is not None:
            info = p.engine.info
            out["stream"] = {"name": info.name, "sfreq": info.sfreq, "n_channels": info.n_channels, "type": info.stype}
            if full:
                out["layout"] = self.layout()
        if full:
            out["choices"] = CHOICES
        return out

    def _brain_dump(self, state: BrainState | None) -> dict[str, Any] | None:
        if state is None:
            return None
        if self._brain[0] is not state:  # a new window: 4 per second, frames come faster
            self._brain = (state, BrainTelemetry.from_state(state).model_dump(mode="json"))
        return self._brain[1]

    def _health_dump(self) -> dict[str, Any]:
        """Health at most every :data:`HEALTH_EVERY` s (percentiles over thousands of latencies are not free)."""
        now = time.monotonic()
        if now - self._health[0] >= HEALTH_EVERY:
            self._health = (now, health_telemetry(self.pipeline, started=self.started).model_dump(mode="json"))
        return self._health[1]

    def _calibration(self, state: BrainState | None) -> dict[str, Any]:
        """How far the baseline calibration is (the brain's normaliser knows; the state says whether it is over)."""
        baseline = self.pipeline.settings.signal.baseline
        engine = self.pipeline.engine
        normalizer = getattr(engine.brain, "normalizer", None) if engine is not None else None
        progress = float(getattr(normalizer, "progress", 0.0))
        if state is not None and not state.calibrating:
            progress = 1.0
        calibrating = state is None or state.calibrating
        return {"calibrating": calibrating, "progress": round(progress, 3), "baseline_s": baseline}

    def _instruments(self) -> dict[str, Any]:
        p = self.pipeline
        if p.engine is None:
            return {}
        c = p.engine.composer
        silenced = c.silenced()
        muted = set(c.muted)
        sounding = p.scheduler.sounding() if p.scheduler is not None and p.scheduler.running else {}
        return {
            name: {
                "program": inst.program,
                "channel": inst.channel,
                "low": inst.low,
                "high": inst.high,
                "role": inst.role,
                "muted": name in muted,
                "silent": name in silenced,
                "solo": c.solo == name,
                "sounding": sounding.get(name, []),
            }
            for name, inst in c.instruments.items()
        }

    def layout(self) -> dict[str, Any]:
        """Channels with their group and a 2-D scalp position (x right, y front; head radius 0.5)."""
        p = self.pipeline
        if self._layout is not None or p.engine is None:
            return self._layout or {}
        info, groups = p.engine.info, dict(p.engine.brain.groups)
        group_of = {i: g for g, idx in groups.items() for i in idx}
        known = _montage_positions()
        from ..signal.channels import clean_name

        channels = []
        ring = [i for i in range(info.n_channels) if clean_name(info.ch_names[i]).upper() not in known]
        for i, name in enumerate(info.ch_names):
            pos = known.get(clean_name(name).upper())
            if pos is None:  # not a 10-05 name: an even ring inside the head, in stream order
                a = 2 * math.pi * ring.index(i) / max(1, len(ring))
                pos = (0.35 * math.sin(a), 0.35 * math.cos(a))
            channels.append({"name": name, "group": group_of.get(i), "x": round(pos[0], 4), "y": round(pos[1], 4)})
        bands = list(p.settings.bands.as_dict())
        self._layout = {"channels": channels, "groups": list(groups), "bands": bands}
        return self._layout


@cache
def _montage_positions() -> dict[str, tuple[float, float]]:
    """10-05 electrode name (upper case) → azimuthal-equidistant 2-D position (x right, y nose; Cz at 0, Fpz..Oz
    on a circle of radius about 0.5)."""
    import mne

    names = set(mne.channels.get_builtin_montages())
    kind = next((k for k in ("spherical_1005", "colin27_1005") if k in names), "standard_1005")
    with warnings.catch_warnings():  # older names are deprecated in newer MNE; the positions are the same
        warnings.simplefilter("ignore")
        pos = mne.channels.make_standard_montage(kind).get_positions()["ch_pos"]
    out = {}
    for name, xyz in pos.items():
        x, y, z = (float(v) for v in xyz)
        r = math.sqrt(x * x + y * y + z * z) or 1.0
        polar = math.acos(max(-1.0, min(1.0, z / r)))  # 0 at the vertex, pi/2 at the ear-nose-inion plane
        az = math.atan2(y, x)
        rho = 0.5 * polar / (math.pi / 2)
        out[name.upper()] = (rho * math.cos(az), rho * math.sin(az))
    for old, new in OLD_NAMES.items():  # the 10-20 system's first names for the temporal row
        if new in out:
            out.setdefault(old, out[new])
    return out
