"""The control plane next to a running pipeline: commands, telemetry per window, beat sync.

``async with LiveControl(pipeline, ...): await pipeline.run()`` is all ``brainharmonic run``
does when ``[control] enabled`` (or ``--mqtt``). Per composed window it publishes, through the
control plane's bounded, rate-limited queues (so the music never waits on the network):

* ``telemetry/brain``  — :class:`BrainTelemetry` of the window (token, latent summary, band powers);
* ``telemetry/music``  — :class:`MusicTelemetry`: key, scale, chord, tempo, beat, sounding notes;
* ``telemetry/health`` — :class:`HealthTelemetry`: stream rate, drops, reconnects, processing
  latency p50/p99 (``pipeline.snapshot()``), MIDI dispatch lateness, control-plane and sync counters;
* ``sync/beat``        — :class:`SyncBeat` when leading or following (see ``sync.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ..events import BrainState, Note
from .handler import PipelineHandler
from .messages import BrainTelemetry, HealthTelemetry, MusicTelemetry
from .mqtt import SYNC_KIND, ControlPlane, MessageCallback, Topics
from .sync import BeatSync
from .telemetry import health_telemetry, music_telemetry

if TYPE_CHECKING:
    from ..music.composer import Composer
    from ..pipeline import LivePipeline

log = logging.getLogger(__name__)


class LiveControl:
    """Runs a :class:`ControlPlane` for ``pipeline`` (settings from ``pipeline.settings.control``).

    Parameters
    ----------
    pipeline : the pipeline to steer; a listener is added to it here.
    config_file, overrides : what ``reload_config`` reads again (see :class:`PipelineHandler`).
    """

    def __init__(
        self,
        pipeline: LivePipeline,
        *,
        config_file: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        settings = pipeline.settings.control
        self.pipeline = pipeline
        self.sync = BeatSync(settings) if (settings.lead or settings.follow is not None) else None
        self.handler = PipelineHandler(
            pipeline, config_file=config_file, overrides=overrides, sync=self.sync, on_change=self._after_change
        )
        subscriptions: dict[str, MessageCallback] = {}
        if settings.follow is not None:
            subscriptions[Topics.all_sync_beats()] = self._on_sync
        self.plane = ControlPlane(settings, self.handler, subscriptions=subscriptions)
        self._started = time.monotonic()
        self._warned = False
        pipeline.listeners.append(self._on_window)

    async def __aenter__(self) -> Self:
        self._started = time.monotonic()
        await self.plane.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.handler.aclose()
        finally:
            await self.plane.__aexit__(exc_type, exc, tb)

    # ------------------------------------------------------------------ per window

    def _on_window(self, state: BrainState, notes: list[Note]) -> None:
        """Pipeline listener (event loop, right after the window's notes were scheduled)."""
        try:
            self._align()
            self._publish_sync()
            self.plane.publish("brain", BrainTelemetry.from_state(state))
            self._publish_music()
            self.plane.publish("health", self.health())
        except Exception:  # telemetry is never worth stopping the music for
            if not self._warned:
                self._warned = True
                log.exception("Building telemetry failed; the music goes on (logged once).")

    def _clock(self) -> tuple[Composer[Any], float, float] | None:
        """(composer, frontier, origin) while the pipeline composes."""
        engine, scheduler = self.pipeline.engine, self.pipeline.scheduler
        if engine is None or scheduler is None or engine.frontier is None or scheduler.origin is None:
            return None
        if not scheduler.running:  # the run has ended; messages may still arrive until the plane closes
            return None
        return engine.composer, engine.frontier, scheduler.origin

    def _align(self) -> None:
        if self.sync is None or self.sync.follow is None:
            return
        clock = self._clock()
        if clock is not None:
            self.sync.align(*clock)

    def _publish_sync(self) -> None:
        if self.sync is None:
            return
        clock = self._clock()
        if clock is None:
            return
        beat = self.sync.beat_message(*clock)
        if beat is not None:
            self.plane.publish(SYNC_KIND, beat)

    def _after_change(self) -> None:
        """After a command changed the music: tell followers and visuals at once."""
        self._publish_sync()
        self._publish_music()

    def _on_sync(self, topic: str, payload: bytes, arrived: float) -> None:
        """A peer's beat arrived; a jump in the leader's tempo or key is followed at once, not next window."""
        assert self.sync is not None
        if not self.sync.on_message(topic, payload, arrived):
            return
        clock = self._clock()
        engine = self.pipeline.engine
        if clock is None or engine is None:
            return
        composer, _, origin = clock
        sync = self.sync
        engine.apply(lambda at: sync.align(composer, at, origin, snap=True))
        self._publish_music()

    # ------------------------------------------------------------------ payloads

    def _publish_music(self) -> None:
        music = self.music()
        if music is not None:
            self.plane.publish("music", music)

    def music(self) -> MusicTelemetry | None:
        """The music now; None before the pipeline composes."""
        return music_telemetry(self.pipeline)

    def health(self) -> HealthTelemetry:
        """Stream, pipeline, MIDI, control-plane and sync health now."""
        plane = self.plane.stats()
        return health_telemetry(
            self.pipeline,
            started=self._started,
            queues={"mqtt_buffered": int(plane["buffered"])},
            control={k: v for k, v in plane.items() if isinstance(v, int | float | bool | str) or v is None},
            sync={} if self.sync is None else self.sync.stats(),
        )
