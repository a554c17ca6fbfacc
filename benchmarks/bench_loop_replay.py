"""A looped recording served over LSL, read by an independent inlet and by the live pipeline.

Issue 10, fault 2: looping must keep timestamps monotonic at the real rate across wraps, and `run`
must keep its windows and its notes on time whatever the source's timestamps do. This serves one
eegmat recording in a loop, either with `brainharmonic replay`'s player (``--player ours``) or with
mne-lsl's ``PlayerLSL(n_repeat=np.inf)`` (``--player mne-lsl``, whose wraps are broken; see
docs/upstream/mne-lsl-player-loop.md), and prints for the whole run and for the time after the
first wrap:

* the independent inlet (no clock processing): samples per second, backward timestamp steps;
* the pipeline: windows per second, windows dropped or skipped, notes, note lateness (sent minus due,
  on the scheduler's clock: median and p99), notes composed for a time already past.

    python benchmarks/bench_loop_replay.py [--file Subject00_2.edf] [--seconds 80] [--player ours|mne-lsl]
Target: rate within 1 % of nominal, no backward step, no window dropped, lateness p99 < 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
import uuid
from typing import Any

import numpy as np
from _common import header


class TimingSink:
    """Records, for every note_on sent, when it went out relative to when it was due (s)."""

    wants_clock = False

    def __init__(self) -> None:
        self.scheduler: Any = None
        self.sent: list[tuple[float, float]] = []  # (time.monotonic() sent, lateness s)

    def open(self, instruments: Any, tempo: float) -> None:
        pass

    def send(self, msg: Any, music_time: float) -> None:
        if msg.type == "note_on" and msg.velocity > 0 and self.scheduler is not None:
            self.sent.append((time.monotonic(), self.scheduler.music_now() - music_time))

    def close(self) -> None:
        pass


def inlet_thread(source_id: str, seconds: float, out: dict[str, Any]) -> None:
    from mne_lsl.lsl import StreamInlet, local_clock, resolve_streams

    info = next(i for i in resolve_streams(timeout=10, source_id=source_id) if i.sfreq > 0)
    inlet = StreamInlet(info)
    inlet.open_stream(timeout=10)
    stamps: list[np.ndarray] = []
    arrivals: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _, ts = inlet.pull_chunk(timeout=0.05)
        if len(ts):
            stamps.append(np.array(ts))
            arrivals.append(local_clock())
    inlet._del()
    out["stamps"], out["arrivals"] = stamps, arrivals


def start_player(kind: str, path: str, source_id: str) -> Any:
    if kind == "ours":
        from brainharmonic_rt.sources.player import Replay

        return Replay(path, name="bh-bench-loop", source_id=source_id, loop=True).start()
    from mne_lsl.player import PlayerLSL

    from brainharmonic_rt.sources.files import pick_signal, read_raw

    raw = pick_signal(read_raw(path))
    return PlayerLSL(raw, chunk_size=5, n_repeat=np.inf, name="bh-bench-loop", source_id=source_id).start()


async def run_pipeline(source_id: str, seconds: float, sink: TimingSink) -> tuple[Any, list[tuple[float, int, float]]]:
    from brainharmonic_rt.config import load_settings
    from brainharmonic_rt.pipeline import LivePipeline
    from brainharmonic_rt.sources.lsl import LSLSource

    settings = load_settings(stream={"source_id": source_id, "timeout": 10})
    pipe = LivePipeline(settings, LSLSource(settings.stream), [sink], duration=seconds)  # type: ignore[list-item]
    windows: list[tuple[float, int, float]] = []  # (arrival here, index, session time)

    def on_state(state: Any, notes: Any) -> None:
        if sink.scheduler is None:
            sink.scheduler = pipe.scheduler
        windows.append((time.monotonic(), state.index, state.t_end))

    pipe.listeners.append(on_state)
    await pipe.run()
    return pipe, windows


def report(label: str, t_from: float, inlet: dict[str, Any], windows: list, sink: TimingSink, sfreq: float) -> None:
    arrivals = np.array(inlet["arrivals"])
    counts = np.array([s.size for s in inlet["stamps"]])
    sel = arrivals >= t_from
    stamps = np.concatenate([s for s, keep in zip(inlet["stamps"], sel, strict=True) if keep])
    span = arrivals[sel][-1] - arrivals[sel][0]
    rate = (counts[sel][1:].sum()) / span if span > 0 else float("nan")
    steps = np.diff(stamps)
    w = [x for x in windows if x[0] >= t_from]
    idx = np.array([x[1] for x in w])
    t_end = np.array([x[2] for x in w])
    wspan = w[-1][0] - w[0][0] if len(w) > 1 else float("nan")
    late = np.array([x[1] for x in sink.sent if x[0] >= t_from]) * 1e3
    print(f"## {label}")
    print(
        f"inlet: {rate:.1f} samples/s for {sfreq:g} Hz ({(rate / sfreq - 1) * 100:+.2f} %), "
        f"{(steps < 0).sum()} backward steps (largest {min(steps.min(), 0):+.3f} s)"
    )
    print(
        f"pipeline: {(len(w) - 1) / wspan:.2f} windows/s, {int((np.diff(idx) - 1).clip(0).sum())} window indices "
        f"skipped, session-time steps {np.diff(t_end).min():+.3f}..{np.diff(t_end).max():+.3f} s"
    )
    if late.size:
        print(
            f"notes: {late.size}, lateness median {np.median(late):.2f} ms, p99 {np.percentile(late, 99):.2f} ms, "
            f"max {late.max():.2f} ms"
        )
    else:
        print("notes: none")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", default="Subject00_2.edf", help="eegmat file name (default: the 62 s task recording)")
    ap.add_argument("--seconds", type=float, default=80.0)
    ap.add_argument("--player", choices=["ours", "mne-lsl"], default="ours")
    args = ap.parse_args()

    from brainharmonic_rt.datasets import find_eegmat
    from brainharmonic_rt.sources.files import read_raw

    path = str(find_eegmat() / args.file)
    raw = read_raw(path)
    sfreq, length = raw.info["sfreq"], raw.n_times / raw.info["sfreq"]
    header(f"looped replay of {args.file} ({length:.1f} s a pass) for {args.seconds:g} s, player: {args.player}")
    source_id = f"bh-bench-{uuid.uuid4().hex[:8]}"
    player = start_player(args.player, path, source_id)
    inlet: dict[str, Any] = {}
    thread = threading.Thread(target=inlet_thread, args=(source_id, args.seconds, inlet), daemon=True)
    thread.start()
    sink = TimingSink()
    started = time.monotonic()
    try:
        pipe, windows = asyncio.run(run_pipeline(source_id, args.seconds, sink))
    finally:
        thread.join(args.seconds + 15)
        player.stop()
    snap = pipe.snapshot()
    source = snap.get("source", {})
    print(
        f"# pipeline snapshot: windows {snap['windows']}, dropped {snap['windows_dropped']}, notes {snap['notes']}, "
        f"composed late {snap['scheduler']['late']}; source: overlap_samples {source.get('overlap_samples', '-')}, "
        f"jumps_back {source.get('jumps_back', '-')}, jumps_forward {source.get('jumps_forward', '-')}"
    )
    report("whole run", started, inlet, windows, sink, sfreq)
    if args.seconds > length + 5:
        report(f"after the first wrap (from {length + 2:.0f} s)", started + length + 2, inlet, windows, sink, sfreq)


if __name__ == "__main__":
    main()
