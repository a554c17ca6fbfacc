"""Offline render speed, 19 channels @ 500 Hz (eegmat), as multiples of real time.

    python benchmarks/bench_render_speed.py [--data DIR] [--repeats 5] [--mode classic|learned] [--whole-process]

In-process (``pipeline.render``, models already imported) and, with ``--whole-process``, the
``brainharmonic render`` command timed from its start to its exit (interpreter start, imports,
opening the models, writing the .mid). Targets: classic >= 100x, learned >= 50x real time, one core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    ap.add_argument("--mode", choices=("classic", "learned"), default="classic")
    ap.add_argument("--whole-process", action="store_true", help="also time the `brainharmonic render` command")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    header(f"offline render speed ({args.mode} mode, one core)")
    rest, task = eegmat_subject_files(find_eegmat(args.data), args.subject)
    settings = load_settings(None, music={"mode": args.mode})
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
    target = 100 if args.mode == "classic" else 50
    print(f"render speed: median {np.median(speeds):.0f}x real time, worst {min(speeds):.0f}x (target >= {target}x)")
    if args.whole_process:
        whole = []
        exe = Path(sys.executable).with_name("brainharmonic")
        for k in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [str(exe), "render", str(rest), str(task), "--mode", args.mode, "--out", f"{tmp}/x.mid"]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                dt = time.perf_counter() - t0
            whole.append(seconds / dt)
            print(f"whole process run {k + 1}: {dt:.2f} s = {seconds / dt:.0f}x real time")
        print(f"whole process: median {np.median(whole):.0f}x real time, worst {min(whole):.0f}x (target >= {target}x)")


if __name__ == "__main__":
    main()
