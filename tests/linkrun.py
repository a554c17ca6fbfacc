"""A live run on an Ableton Link session, for tests and benchmarks (run inside a private network namespace).

The pipeline reads BrainFlow's synthetic board (no network needed), joins Link through
:class:`LinkSync` and plays to a sink that stamps every message with ``time.monotonic()``. Before
LinkSync's own correction, a listener logs our beat position at each composing frontier, so a peer's
log can tell the phase error independently. Writes one JSON object to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import mido


class StampSink:
    """Keeps (monotonic time, type, channel, note) of every message, as it is sent."""

    wants_clock = False

    def __init__(self) -> None:
        self.sent: list[tuple[float, str, int, int]] = []

    def open(self, instruments: Any, tempo: float) -> None:
        pass

    def send(self, msg: mido.Message, music_time: float) -> None:
        self.sent.append((time.monotonic(), msg.type, getattr(msg, "channel", -1), getattr(msg, "note", -1)))

    def close(self) -> None:
        pass


async def main(args: argparse.Namespace) -> None:
    from brainharmonic_rt.config import load_settings
    from brainharmonic_rt.control.link import LinkSync
    from brainharmonic_rt.pipeline import LivePipeline
    from brainharmonic_rt.sources.brainflow import BrainFlowSource

    # Join after the peer: a run that joined first would give the session its own tempo (Link keeps the tempo
    # of the session it finds), which a loaded machine's slow peer start made happen once.
    await asyncio.sleep(args.after)
    settings = load_settings(
        board={"name": "synthetic"},
        signal={"window": 1.0, "hop": 0.25, "baseline": 2.0},
        music={"tempo": 96.0, "seed": 5},
        link={"enabled": True, "lead": args.lead},
    )
    sink = StampSink()
    pipe = LivePipeline(settings, BrainFlowSource(settings.board, settings.stream), [sink], duration=args.seconds)
    grid: list[tuple[float, float]] = []

    def on_window(state: Any, notes: Any) -> None:  # before LinkSync's correction of this window
        sched, engine = pipe.scheduler, pipe.engine
        if sched is not None and engine is not None and sched.origin is not None and engine.frontier:
            f = engine.frontier
            grid.append((sched.origin + f, engine.composer.beat_at(f)))

    pipe.listeners.append(on_window)
    started = time.monotonic()

    async def retime_later() -> None:
        if args.retime_at is not None:
            await asyncio.sleep(args.retime_at)
            engine = pipe.engine
            assert engine is not None
            engine.apply(lambda at: engine.composer.retime(at, args.retime_bpm))  # as an MQTT set_tempo would

    async with LinkSync(pipe, settings.link, bpm=settings.music.tempo) as link:
        task = asyncio.create_task(retime_later())
        await pipe.run()
        task.cancel()
        stats = link.stats()
    ons = [(t, ch, n) for t, kind, ch, n in sink.sent if kind == "note_on"]
    out = {"started": started, "note_ons": ons, "grid": grid, "stats": stats, "stopped_by": pipe.stats.stopped_by}
    with open(args.out, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--lead", action="store_true")
    p.add_argument("--after", type=float, default=0.0, help="Seconds to wait before joining (the peer first).")
    p.add_argument("--retime-at", type=float)
    p.add_argument("--retime-bpm", type=float, default=140.0)
    asyncio.run(main(p.parse_args()))
