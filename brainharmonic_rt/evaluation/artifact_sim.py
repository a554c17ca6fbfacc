"""Realistic synthetic blinks and jaw clenches added to a real recording, to measure the detector.

Used by ``benchmarks/bench_artifacts.py`` and the tests; never by the running service.

* **Blink**: 100-300 µV at Fp1/Fp2, 200-400 ms, an asymmetric bump (faster rise than fall), positive at
  the front and fading with distance from the eyes (F row ~45 %, central ~12 %, parietal ~4 %, occipital ~2 %).
* **Clench**: band-limited noise (20-100 Hz) for 0.3-2 s with 50 ms ramps, 8-30 µV RMS at the temporal
  electrodes (T3/T4/T5/T6, T7/T8/P7/P8), ~60 % at F7/F8, less elsewhere; independent per channel (muscle
  activity is local).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import signal as sps

from ..signal.channels import clean_name, region_of


@dataclass(frozen=True, slots=True)
class Injected:
    """One added artifact: kind, onset and duration in seconds from the start of the recording."""

    kind: str
    onset: float
    duration: float
    amplitude_uv: float


def _blink_weight(name: str) -> float:
    c = clean_name(name)
    region = region_of(name)
    if c.startswith(("Fp", "AFp")):
        return 1.0
    if c.startswith("AF"):
        return 0.7
    if region == "frontal":
        return 0.55 if c in ("F7", "F8") else 0.45
    return {"central": 0.12, "temporal": 0.1, "parietal": 0.04, "occipital": 0.02}.get(region or "", 0.0)


def _clench_weight(name: str) -> float:
    c = clean_name(name)
    region = region_of(name)
    if region == "temporal":
        return 1.0
    if c in ("F7", "F8"):
        return 0.6
    if region == "frontal":
        return 0.3
    return {"central": 0.2, "parietal": 0.12, "occipital": 0.1}.get(region or "", 0.0)


def blink_shape(n: int) -> np.ndarray:
    """A unit-peak blink of ``n`` samples: rise over 40 %, fall over 60 % (raised-cosine halves)."""
    rise = max(1, round(0.4 * n))
    fall = max(1, n - rise)
    up = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, rise, endpoint=False))
    down = 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, fall))
    return np.concatenate((up, down))


def add_artifacts(
    data: np.ndarray,
    sfreq: float,
    ch_names: Sequence[str],
    *,
    seed: int = 0,
    spacing: tuple[float, float] = (5.0, 9.0),
    units_per_uv: float = 1e-6,
    start: float = 25.0,
) -> tuple[np.ndarray, list[Injected]]:
    """Copy of ``data`` (n_channels, n_samples) with blinks and clenches added at random times.

    One artifact every ``spacing`` seconds (uniform), kind chosen at random, from ``start`` s on (after
    the baseline), none within 3 s of the end. ``units_per_uv`` converts µV to the data's units (V: 1e-6).
    """
    rng = np.random.default_rng(seed)
    out = np.array(data, dtype=np.float64, copy=True)
    n = out.shape[1]
    wb = np.array([_blink_weight(c) for c in ch_names])
    wc = np.array([_clench_weight(c) for c in ch_names])
    sos = sps.butter(4, (20.0, min(100.0, 0.45 * sfreq)), btype="bandpass", fs=sfreq, output="sos")
    truth: list[Injected] = []
    t = start
    while True:
        t += float(rng.uniform(*spacing))
        if rng.random() < 0.5:
            dur = float(rng.uniform(0.2, 0.4))
            amp = float(rng.uniform(100.0, 300.0))
            k = round(dur * sfreq)
            i0 = round(t * sfreq)
            if i0 + k > n - round(3 * sfreq):
                break
            out[:, i0 : i0 + k] += np.outer(wb * amp * units_per_uv, blink_shape(k))
            truth.append(Injected("blink", t, dur, amp))
        else:
            dur = float(rng.uniform(0.3, 2.0))
            rms = float(rng.uniform(8.0, 30.0))
            k = round(dur * sfreq)
            i0 = round(t * sfreq)
            if i0 + k > n - round(3 * sfreq):
                break
            pad = round(0.2 * sfreq)
            noise = sps.sosfilt(sos, rng.standard_normal((len(ch_names), k + pad)), axis=1)[:, pad:]
            noise /= noise.std(axis=1, keepdims=True)
            ramp = np.ones(k)
            r = min(round(0.05 * sfreq), k // 2)
            ramp[:r] = np.linspace(0.0, 1.0, r)
            ramp[k - r :] = np.linspace(1.0, 0.0, r)
            out[:, i0 : i0 + k] += noise * (wc * rms * units_per_uv)[:, None] * ramp
            truth.append(Injected("clench", t, dur, rms))
            t += dur
    return out, truth


def score(
    detected: Sequence[tuple[str, float]], truth: Sequence[Injected], *, slack: float = 0.6
) -> dict[str, dict[str, float]]:
    """Precision and recall per kind: a detection (kind, time) matches an injected artifact of that kind
    when its time lies in [onset, onset + duration + slack] (the detector reports at the end of a hop)."""
    out: dict[str, dict[str, float]] = {}
    for kind in ("blink", "clench"):
        dets = [t for k, t in detected if k == kind]
        events = [e for e in truth if e.kind == kind]
        hit_det = sum(any(e.onset <= t <= e.onset + e.duration + slack for e in events) for t in dets)
        hit_evt = sum(any(e.onset <= t <= e.onset + e.duration + slack for t in dets) for e in events)
        out[kind] = {
            "injected": float(len(events)),
            "detected": float(len(dets)),
            "precision": hit_det / len(dets) if dets else float("nan"),
            "recall": hit_evt / len(events) if events else float("nan"),
        }
    return out
