"""Offline render speed: classic mode, 19 channels @ 500 Hz (eegmat), as multiples of real time.

    python benchmarks/bench_render_speed.py [--data DIR] [--repeats 5]
Target: >= 100x real time on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import numpy as np
from _common import header

from brainharmonic_rt.config import load_settings
from brainharmonic_rt.datasets import eegmat_subject_files, find_eegmat
from brainharmonic_rt.pipeline import render
from brainharmonic_rt.sinks.midifile import MidiFileSink
from brainharmonic_rt.sources.files import open_recordings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--subject", type=int, default=0)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    header("offline render speed (classic mode, one core)")
    rest, task = eegmat_subject_files(find_eegmat(args.data), args.subject)
    settings = load_settings()
    speeds = []
    for k in range(args.repeats):
        source = open_recordings([rest, task])
        seconds = source.data.shape[1] / source.info.sfreq
        t0 = time.perf_counter()
        result = asyncio.run(render(settings, source, [MidiFileSink(os.devnull)]))
        dt = time.perf_counter() - t0
        speeds.append(seconds / dt)
        print(f"run {k + 1}: {seconds:.0f} s of {source.info.n_channels} ch @ {source.info.sfreq:g} Hz "
              f"in {dt:.2f} s = {seconds / dt:.0f}x real time, {len(result.notes)} notes")  # fmt: skip
    print(f"render speed: median {np.median(speeds):.0f}x real time, worst {min(speeds):.0f}x (target >= 100x)")


if __name__ == "__main__":
    main()
