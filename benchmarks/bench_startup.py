"""Start-up: `brainharmonic --help`, and a whole-process classic render of one 182 s eegmat recording.

    python benchmarks/bench_startup.py [--runs 11] [--data DIR] [--subject 0]

Each command runs ``--runs`` times as its own process; wall time (what a person waits) and CPU time
(user + sys of the process: less sensitive to other jobs on a shared machine) are summarised.
Targets: ``--help`` <= 0.3 s; the render >= 150x real time including start-up.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import header

from brainharmonic_rt.datasets import eegmat_subject_files, find_eegmat


def timed(cmd: list[str], runs: int) -> tuple[np.ndarray, np.ndarray]:
    """(wall seconds, CPU seconds) of ``runs`` runs of ``cmd``."""
    wall, cpu = [], []
    for _ in range(runs):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return np.asarray(wall), np.asarray(cpu)


def line(what: str, values: np.ndarray) -> str:
    return (
        f"{what} median {np.median(values):.3f} s, p90 {np.percentile(values, 90):.3f} s, "
        f"min {values.min():.3f} s, max {values.max():.3f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--data")
    ap.add_argument("--subject", type=int, default=0)
    args = ap.parse_args()
    header("start-up, whole processes")
    exe = str(Path(sys.executable).with_name("brainharmonic"))
    print(f"# load average before: {os.getloadavg()[0]:.2f}")
    wall, cpu = timed([exe, "--help"], args.runs)
    print(f"--help: {line('wall', wall)}; {line('CPU', cpu)} (target wall <= 0.3 s)")
    rest, _ = eegmat_subject_files(find_eegmat(args.data), args.subject)
    import mne

    seconds = mne.io.read_raw_edf(rest, verbose="error").times[-1] + 1 / 500
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [exe, "render", str(rest), "--seed", "7", "--out", f"{tmp}/x.mid"]
        wall, cpu = timed(cmd, args.runs)
    speed = seconds / wall
    print(f"render {rest.name} ({seconds:.0f} s, classic): {line('wall', wall)}; {line('CPU', cpu)}")
    print(
        f"render speed, whole process: median {np.median(speed):.0f}x real time, worst {speed.min():.0f}x "
        f"(by CPU time: {np.median(seconds / cpu):.0f}x) (target >= 150x)"
    )
    print(f"# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
