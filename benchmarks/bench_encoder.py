"""Encoder latency per window on one CPU thread: the ONNX call alone, and the whole learned brain step.

Input: 64 channels × 2 s at 250 Hz (real eegmat EEG tiled onto a 64-channel 10-10 montage,
resampled to 250 Hz), windows every 0.25 s through the runtime's SignalChain. Three timings:

* ``onnx``: ``EncoderModel.encode`` on a prepared window (64 ch × 250 samples at 125 Hz);
* ``prepare + onnx``: :class:`EncoderInput` (channel pick, baseline scaling, 250 → 125 Hz) + the call;
* ``learned brain``: :meth:`LearnedBrain.process` (classic band powers + the above).

Target (issue 3): encoder p99 <= 2 ms per window on one thread.

    .venv/bin/python benchmarks/bench_encoder.py [--windows 2000] [--model models/encoder.onnx]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header, summary

from brainharmonic_rt.brain.encoder import EncoderModel, LearnedBrain
from brainharmonic_rt.config import BandSettings, EncoderSettings, SignalSettings
from brainharmonic_rt.datasets import find_eegmat
from brainharmonic_rt.events import Chunk, SignalInfo, Window
from brainharmonic_rt.signal import SignalChain
from brainharmonic_rt.sources.files import open_recordings

NAMES_64 = [
    n
    for row in (
        "Fp1 Fp2 AF3 AF4 AF7 AF8 F1 F2 F3 F4 F5 F6 F7 F8 Fz FC1 FC2 FC3 FC4 FC5 FC6 FCz",
        "C1 C2 C3 C4 C5 C6 Cz CP1 CP2 CP3 CP4 CP5 CP6 CPz T7 T8 FT7 FT8 TP7 TP8",
        "P1 P2 P3 P4 P5 P6 P7 P8 Pz PO3 PO4 PO7 PO8 POz O1 O2 Oz FT9 FT10 TP9 TP10 Iz",
    )
    for n in row.split()
]


def windows_64ch(n_windows: int) -> tuple[SignalInfo, list[Window]]:
    """Real EEG (Subject00 rest) at 250 Hz on 64 channels, cut into windows by the runtime chain."""
    rest = find_eegmat() / "Subject00_1.edf"
    seconds = 2.0 + 0.25 * n_windows
    src = open_recordings([rest], seconds=min(seconds, 180.0))
    data = resample_poly(src.data, 1, 2, axis=1)  # 500 → 250 Hz
    reps = int(np.ceil(seconds * 250 / data.shape[1]))
    data = np.tile(data, (1, reps))[:, : int(seconds * 250)]
    data64 = data[np.arange(64) % data.shape[0]] * (1.0 + 0.01 * np.arange(64))[:, None]
    info = SignalInfo("bench64", 250.0, tuple(NAMES_64))
    chain = SignalChain(info, SignalSettings())
    stamps = np.arange(data64.shape[1]) / 250.0
    windows: list[Window] = []
    for a in range(0, data64.shape[1], 25):
        windows += chain.push(Chunk(np.ascontiguousarray(data64[:, a : a + 25]), stamps[a : a + 25]))
    return info, windows[:n_windows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=2000)
    p.add_argument("--model", default=None, help="ONNX encoder (default models/encoder.onnx).")
    args = p.parse_args()
    model = EncoderModel.load(EncoderSettings(model=args.model, threads=1, device="cpu"))
    header(f"encoder latency, 64 ch x 2 s @ 250 Hz, 1 thread, model v{model.spec.version}")
    info, windows = windows_64ch(args.windows)
    brain = LearnedBrain(info, SignalSettings(), BandSettings(), model=model)
    onnx_ms, prep_ms, brain_ms = [], [], []
    for w in windows[:50]:  # warm-up (also finishes the baseline calibration)
        brain.process(w)
    for w in windows:
        t0 = time.perf_counter()
        prep = brain.input.prepare(w)
        t1 = time.perf_counter()
        assert prep is not None
        model.encode(prep.x, prep.region, prep.group_mask)
        t2 = time.perf_counter()
        brain.process(w)
        t3 = time.perf_counter()
        onnx_ms.append((t2 - t1) * 1e3)
        prep_ms.append((t2 - t0) * 1e3)
        brain_ms.append((t3 - t2) * 1e3)
    print(f"onnx            {summary(onnx_ms)}")
    print(f"prepare + onnx  {summary(prep_ms)}")
    print(f"learned brain   {summary(brain_ms)}")
    p99 = float(np.percentile(onnx_ms, 99))
    print(f"target p99 <= 2 ms for the encoder: {'met' if p99 <= 2.0 else 'MISSED'} ({p99:.3f} ms)")


if __name__ == "__main__":
    main()
