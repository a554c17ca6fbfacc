"""Shared bits of the benchmark scripts: machine description and robust summaries."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence

import numpy as np


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
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
