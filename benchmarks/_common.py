"""Shared bits of the benchmark scripts: machine description and robust summaries."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# The repository root, so benchmarks can reuse the tests' helpers (tests.broker: a real mosquitto on loopback).
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kb = next((int(ln.split()[1]) for ln in fh if ln.startswith("MemTotal")), 0)
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    import onnxruntime

    return (
        f"{cpu}, {os.cpu_count()} logical cores{mem}, {platform.system()} {platform.release()}, "
        f"Python {sys.version.split()[0]}, numpy {np.__version__}, onnxruntime {onnxruntime.__version__}"
    )


def summary(values_ms: Sequence[float]) -> str:
    a = np.asarray(values_ms, dtype=float)
    return (
        f"n={a.size} median={np.median(a):.3f} ms p90={np.percentile(a, 90):.3f} ms "
        f"p99={np.percentile(a, 99):.3f} ms max={a.max():.3f} ms"
    )


def header(title: str) -> None:
    print(f"# {title}")
    print(f"# machine: {machine()}")
