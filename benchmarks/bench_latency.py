"""Processing latency: LSL push of a window's last sample -> the notes for that window scheduled.

A separate process pushes 64 channels @ 1 kHz one sample at a time (stamped at push with the
LSL clock); the live pipeline runs pinned to one core with a real MIDI sink when JACK is up.
Latency is measured inside the pipeline as time.monotonic() (== LSL local_clock) after
Scheduler.schedule() minus the window's last-sample timestamp.

    python benchmarks/bench_latency.py [--seconds 20] [--runs 3] [--channels 64] [--rate 1000]
                                       [--mode classic|learned|both]
Target: p99 <= 3 ms in both modes (EEGsynth, measured on this machine: ~85 ms median sample -> MIDI note).
Learned mode runs the ONNX encoder and the generator's composer on the same windows.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import uuid

import numpy as np
from _common import header, summary


def push(source_id: str, n_ch: int, rate: float, seconds: float, ready: mp.Event) -> None:  # type: ignore[valid-type]
    import time

    from mne_lsl.lsl import StreamInfo, StreamOutlet, local_clock

    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    info = StreamInfo("bh-bench", "EEG", n_ch, rate, "float32", source_id)
    info.set_channel_names([f"E{i + 1}" for i in range(n_ch)])
    outlet = StreamOutlet(info, chunk_size=1)
    rng = np.random.default_rng(0)
    block = (10e-6 * rng.standard_normal((int(rate), n_ch))).astype(np.float32)
    ready.set()
    time.sleep(1.0)  # let the inlet connect
    t0 = local_clock()
    n = 0
    while n < seconds * rate:
        target = t0 + n / rate
        delay = target - local_clock()
        if delay > 0:  # sleep, not spin: a real amplifier does not burn a core of this machine
            time.sleep(delay)
        outlet.push_sample(block[n % block.shape[0]], timestamp=local_clock())
        n += 1


async def one_run(seconds: float, n_ch: int, rate: float, use_midi: bool, mode: str) -> list[float]:
    from brainharmonic_rt.config import load_settings
    from brainharmonic_rt.pipeline import LivePipeline
    from brainharmonic_rt.sources.lsl import LSLSource

    sid = f"bench-{uuid.uuid4().hex[:8]}"
    ready = mp.get_context("spawn").Event()
    proc = mp.get_context("spawn").Process(target=push, args=(sid, n_ch, rate, seconds + 1.0, ready))
    proc.start()
    ready.wait(30)
    settings = load_settings(stream={"source_id": sid, "timeout": 10}, signal={"baseline": 5.0}, music={"mode": mode})
    sinks = []
    if use_midi:
        from brainharmonic_rt.sinks.rtmidi_port import RtMidiSink

        sinks.append(RtMidiSink(virtual_name=f"bench-{sid[-4:]}"))
    pipe = LivePipeline(settings, LSLSource(settings.stream), sinks, duration=seconds)
    await pipe.run()
    proc.join(10)
    lat = list(pipe.stats.latencies_ms)[8:]  # skip the first windows (connection warm-up)
    snap = pipe.snapshot()
    print(f"  windows={snap['windows']} dropped={snap['windows_dropped']} notes={snap['notes']} :: {summary(lat)}")
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--no-midi", action="store_true")
    ap.add_argument("--mode", choices=("classic", "learned", "both"), default="both")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    header(f"processing latency, {args.channels} ch @ {args.rate:g} Hz, pipeline pinned to one core")
    import subprocess

    use_midi = not args.no_midi and subprocess.run(["jack_lsp"], capture_output=True).returncode == 0
    print(f"# MIDI sink: {'JACK virtual port' if use_midi else 'none (no JACK server running)'}")
    modes = ("classic", "learned") if args.mode == "both" else (args.mode,)
    for mode in modes:
        allv: list[float] = []
        for k in range(args.runs):
            print(f"{mode} run {k + 1}:")
            allv += asyncio.run(one_run(args.seconds, args.channels, args.rate, use_midi, mode))
        print(f"{mode}, all runs: {summary(allv)} (target p99 <= 3 ms)")


if __name__ == "__main__":
    main()
