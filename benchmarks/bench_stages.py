"""Cost of each in-process stage on one core: signal chain per chunk, brain + composer per window.

    python benchmarks/bench_stages.py [--channels 64] [--rate 1000] [--chunk 1] [--seconds 60]
                                      [--montage generic|1020] [--no-checks] [--mode classic|learned]
Synthetic noise input (the cost does not depend on the content). Quote medians and p99.
``--montage 1020`` names the channels from the standard 10-05 system (so the blink detector has frontal
channels to watch); ``--no-checks`` turns quality and artifact detection off, to measure what they cost.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import header, summary

from brainharmonic_rt.config import load_settings
from brainharmonic_rt.events import Chunk, SignalInfo
from brainharmonic_rt.pipeline import Engine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--chunk", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--montage", choices=["generic", "1020"], default="generic")
    ap.add_argument("--no-checks", action="store_true", help="[quality] and [artifacts] off")
    ap.add_argument("--mode", choices=("classic", "learned"), default="classic")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    checks = "off" if args.no_checks else "on"
    header(
        f"stage costs, {args.channels} ch @ {args.rate:g} Hz, chunks of {args.chunk} sample(s), one core, "
        f"{args.montage} names, quality + artifact checks {checks}, {args.mode} mode"
    )
    names = tuple(f"E{i + 1}" for i in range(args.channels))
    if args.montage == "1020":
        import mne

        pool = [n for n in mne.channels.make_standard_montage("standard_1005").ch_names if n[0] != "M"]
        names = tuple(pool[: args.channels])
    info = SignalInfo("bench", args.rate, names)
    enabled = {"enabled": not args.no_checks}
    settings = load_settings(signal={"baseline": 5.0}, quality=enabled, artifacts=enabled, music={"mode": args.mode})
    engine = Engine(info, settings)
    rng = np.random.default_rng(0)
    block = 1e-5 * rng.standard_normal((args.channels, int(args.rate)))
    plain, completing, compose = [], [], []
    n_chunks = int(args.seconds * args.rate / args.chunk)
    for k in range(n_chunks):
        a = (k * args.chunk) % (block.shape[1] - args.chunk)
        chunk = Chunk(block[:, a : a + args.chunk].copy(), (k * args.chunk + np.arange(args.chunk)) / args.rate)
        t0 = time.perf_counter()
        windows = engine.windows(chunk)
        t1 = time.perf_counter()
        (completing if windows else plain).append((t1 - t0) * 1e3)
        for w in windows:
            t2 = time.perf_counter()
            engine.step(w)
            compose.append((time.perf_counter() - t2) * 1e3)
    print(f"signal chain, chunk without a new window: {summary(plain)}")
    print(f"signal chain, chunk completing a window:  {summary(completing)}")
    print(f"brain + composer per window:              {summary(compose)}")
    total = np.asarray(completing[: len(compose)]) + np.asarray(compose)
    print(f"window-completing chunk -> notes, total:  {summary(total)}")


if __name__ == "__main__":
    main()
