"""The engine as the one owner of live edits (``Engine.apply``) and the window stream between the live tasks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from brainharmonic_rt.config import load_settings
from brainharmonic_rt.events import Window
from brainharmonic_rt.music.generator import DEFAULT_MODEL as REMI_MODEL
from brainharmonic_rt.music.scales import pitch_classes
from brainharmonic_rt.pipeline import CUT_MARGIN, Engine, WindowStream
from brainharmonic_rt.sinks.base import MemorySink
from brainharmonic_rt.sinks.scheduler import Scheduler
from brainharmonic_rt.sources.files import open_recordings

MODES = {
    "classic": {"music": {"mode": "classic"}},
    "learned ensemble": {"music": {"mode": "learned"}},
    "learned REMI generator": {"music": {"mode": "learned"}, "generator": {"model": str(REMI_MODEL)}},
}


async def _play_with_a_key_change(eegmat_dir: Path, sections: dict[str, Any]) -> tuple[float, float, list[Any]]:
    """Step an engine through 40 s of a recording; from 15 s in, once notes are scheduled beyond the cut, change
    the key live. Returns (at, the frontier
    when the change came, every note_on delivered as (music time, channel, pitch))."""
    settings = load_settings(
        None,
        music={"seed": 5, "key": "C", "scale": "major", "lookahead": 1.0, **sections["music"]},
        **{k: v for k, v in sections.items() if k != "music"},
    )
    source = open_recordings([eegmat_dir / "Subject02_2.edf"], seconds=40.0)
    sink = MemorySink()
    at = frontier = -1.0
    async with source:
        engine = Engine(source.info, settings)
        sink.open(engine.instruments, settings.music.tempo)
        async with Scheduler([sink], realtime=False) as scheduler:
            engine.start(scheduler)
            async for chunk in source.chunks():
                for window in engine.windows(chunk):
                    engine.step(window)
                    scheduler.advance(window.t_end)
                    if at < 0 and window.t_end >= 15.0 and _pending(engine, scheduler) >= 2:
                        frontier = float(engine.frontier or 0.0)
                        at = engine.apply(lambda t: engine.composer.set_key("F#", "major"))
            await scheduler.drain()
    drums = {i.channel for i in engine.instruments.values() if i.role == "percussion"}
    ons = [(t, m.channel, m.note) for t, m in sink.messages if m.type == "note_on" and m.velocity > 0]
    return at, frontier, [o for o in ons if o[1] not in drums]


def _pending(engine: Engine, scheduler: Scheduler) -> int:
    """Pitched notes scheduled from the cut on (what a change now must compose again)."""
    drums = {i.channel for i in engine.instruments.values() if i.role == "percussion"}
    cut = scheduler.music_now() + CUT_MARGIN
    return sum(n.time >= cut and n.channel not in drums for n in scheduler.live_notes().values())


@pytest.mark.parametrize("mode", list(MODES))
def test_a_live_key_change_is_heard_within_the_cut_in_every_mode(eegmat_dir: Path, mode: str) -> None:
    """House issue: learned voices could not rewind, so a change was heard one composed span later; now every
    composer goes back to the cut and composes again, so from ``at`` (now + CUT_MARGIN) every note is new."""
    at, frontier, ons = asyncio.run(_play_with_a_key_change(eegmat_dir, MODES[mode]))
    assert at > 0 and frontier > at, "the change came while notes were scheduled beyond it"
    new = set(pitch_classes("F#", "major"))
    old_only = set(pitch_classes("C", "major")) - new
    before = [pc for t, _, pc in ons if t < at - 1e-9]
    assert any(p % 12 in old_only for p in before), "before the change the music was in C"
    pending = [p for t, _, p in ons if at - 1e-9 <= t < frontier]  # what was composed before the change came
    after = [p for t, _, p in ons if t >= at - 1e-9]
    wrong = [p for p in after if p % 12 not in new]
    assert not wrong, f"{mode}: {len(wrong)} of {len(after)} notes from the cut on are not in F# major: {wrong[:8]}"
    assert len(after) > 10 and len(pending) >= 2, "notes were scheduled between the cut and the old frontier"
    print(f"{mode}: {len(pending)} notes between the cut and the old frontier were composed again in F#")


def test_apply_before_the_run_is_refused_and_a_failing_change_changes_nothing(eegmat_dir: Path) -> None:
    settings = load_settings(None)
    source = open_recordings([eegmat_dir / "Subject02_2.edf"], seconds=10.0)
    engine = Engine(source.info, settings)
    with pytest.raises(RuntimeError, match="running scheduler"):
        engine.apply(lambda at: None)

    async def run() -> None:
        async with source, Scheduler([MemorySink()], realtime=False) as scheduler:
            engine.start(scheduler)
            async for chunk in source.chunks():
                for window in engine.windows(chunk):
                    engine.step(window)
                    scheduler.advance(window.t_end)
            key, recomposed = engine.composer.key, engine.recomposed

            def bad(at: float) -> None:
                engine.composer.set_key("H", "major")  # no such key: refused before anything changes

            with pytest.raises(Exception, match="H"):
                engine.apply(bad)
            assert engine.composer.key == key and engine.recomposed == recomposed
            at = engine.apply(lambda t: engine.composer.retime(t, 90.0))
            assert at == pytest.approx(scheduler.music_now() + CUT_MARGIN)

    asyncio.run(run())


def _window(i: int) -> Window:
    return Window(index=i, data=np.zeros((2, 10)), t_end=i * 0.1 + 1.0, stamp=i * 0.1 + 1.0)


def test_window_stream_drops_the_oldest_and_ends_when_closed() -> None:
    async def run() -> tuple[list[int], WindowStream]:
        stream = WindowStream(maxsize=3)
        for i in range(5):  # the reader never waits: the two oldest go
            stream.put(_window(i))
        assert stream.depth == 3 and stream.dropped == 2
        got: list[int] = []

        async def consume() -> None:
            async for w in stream:
                got.append(w.index)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.01)
        stream.put(_window(5))
        await asyncio.sleep(0.01)
        stream.close()
        await asyncio.wait_for(task, 1.0)
        with pytest.raises(RuntimeError, match="closed"):
            stream.put(_window(6))
        return got, stream

    got, stream = asyncio.run(run())
    assert got == [2, 3, 4, 5] and stream.depth == 0
