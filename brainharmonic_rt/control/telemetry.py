"""The music and health payloads of a running pipeline, for every surface that shows them.

MQTT telemetry (``live.py``), the web page's state (``web/state.py``) and OSC (``osc.py``) read
the same figures from here, so a value means the same thing on every surface.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..music.arbiter import guard_telemetry
from .messages import HealthTelemetry, MusicTelemetry

if TYPE_CHECKING:
    from ..pipeline import LivePipeline


def music_telemetry(p: LivePipeline) -> MusicTelemetry | None:
    """Key, chord, tempo, plan and sounding notes now; None before the pipeline composes (or after it stopped)."""
    if p.engine is None or p.scheduler is None or not p.scheduler.running:
        return None
    c = p.engine.composer
    beat = c.beat_at(p.scheduler.music_now())
    bar = c.plan.current
    # Validated by the model (key, scale and mode names are checked there, not re-typed here).
    return MusicTelemetry.model_validate(
        {
            "key": c.key,
            "scale": c.scale,
            "chord": c.chord_name(),
            "tempo": float(c.tempo),
            "mode": p.engine.mode,
            "beat": None if beat < 0 else round(float(beat), 4),
            "centre": bar.key if bar is not None else None,
            "tonality": bar.mode if bar is not None else None,
            "level": bar.level if bar is not None else None,
            "arousal": round(float(c.plan.arousal), 4),
            "notes": {k: v for k, v in p.scheduler.sounding().items() if k},
            "muted": c.muted,
            "solo": c.solo,
            "recording": p.recorder is not None,
        }
    )


def health_telemetry(
    p: LivePipeline,
    *,
    started: float,
    queues: Mapping[str, int] | None = None,
    control: Mapping[str, Any] | None = None,
    sync: Mapping[str, Any] | None = None,
) -> HealthTelemetry:
    """Stream, pipeline and MIDI health now; ``queues``, ``control`` and ``sync`` add a surface's own figures.

    ``started`` is the ``time.monotonic()`` value from which uptime counts.
    """
    snap = p.snapshot()
    src = snap.get("source", {})
    lat = snap.get("latency", {})
    sched = snap.get("scheduler", {})
    rate = float(src.get("rate", 0.0) or 0.0)
    info = None if p.engine is None else p.engine.info
    return HealthTelemetry(
        connected=p.stats.stream_losses == p.stats.reconnects and rate > 0,
        rate_hz=max(0.0, rate),
        nominal_hz=None if info is None else float(info.sfreq),
        dropped_samples=int(src.get("dropped_samples", 0)),
        dropped_windows=int(snap.get("windows_dropped", 0)),
        reconnects=int(snap.get("reconnects", 0)),
        latency_ms={
            "processing_p50": lat.get("p50_ms"),
            "processing_p99": lat.get("p99_ms"),
            "midi_late_p50": sched.get("p50_late_ms"),
            "midi_late_p99": sched.get("p99_late_ms"),
            "midi_late_max": sched.get("max_late_ms"),
        },
        queues={
            "windows": int(snap.get("queue_depth", 0)),
            "source_samples": int(src.get("queued_samples", 0)),
            "source_dropped_chunks": int(src.get("dropped_chunks", 0)),
            **dict(queues or {}),
        },
        uptime_s=max(0.0, time.monotonic() - started),
        scheduler={k: v for k, v in sched.items() if isinstance(v, int | float | bool)},
        control=dict(control or {}),
        sync=dict(sync or {}),
        quality=snap.get("quality", {}),
        artifacts=snap.get("artifacts", {}),
        notices=snap.get("notices", []),
        guard=guard_telemetry(snap.get("composer", {})),
    )
