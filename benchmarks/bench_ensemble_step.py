"""Speed of the ensemble model: one batched ONNX step for five voices, and a whole composer step.

    python benchmarks/bench_ensemble_step.py [--model models/ensemble.onnx] [--steps 3000] [--runs 3]

* **ONNX step**: one ``EnsembleModel.step`` call advancing five voices (onnxruntime, one thread).
* **composer step**: ``EnsembleLearnedComposer`` decoding one grid step for the five default
  instruments: the ONNX call, the pair/motion terms, sampling, the arbiter's vetoes and admission.
* **real-time factor**: grid steps decoded per second over the steps a second of music needs at
  the fastest tempo the plan reaches by default (96 BPM · 1.12, eighth-note grid).

Target: ONNX step p99 <= 3 ms for five voices on one core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import header, summary

from brainharmonic_rt.config import GeneratorSettings, HarmonySettings, MusicSettings
from brainharmonic_rt.events import BrainState, GroupState
from brainharmonic_rt.music.ensemble import resolve_instruments
from brainharmonic_rt.music.ensemble_composer import EnsembleLearnedComposer
from brainharmonic_rt.music.ensemble_grid import N_PITCH, STEPS_PER_BEAT
from brainharmonic_rt.music.ensemble_model import EnsembleModel

REPO = Path(__file__).resolve().parent.parent
GROUPS = ("frontal", "central", "temporal", "parietal", "occipital")


def onnx_steps(model: EnsembleModel, n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    state = model.initial_state(5)
    out = []
    for _ in range(n):
        feeds = (
            rng.integers(0, N_PITCH + 1, 5), rng.integers(0, N_PITCH + 1, 5),
            (rng.random((5, N_PITCH)) > 0.95).astype(np.float32), rng.integers(0, 8, 5),
            np.array([2, 1, 0, 3, 2]), np.array([11, 89, 32, 46, 12]), rng.normal(0, 0.5, (5, 2)).astype(np.float32),
            np.zeros(5, np.int64), rng.normal(0, 1, (5, 2 * model.latent_dim)).astype(np.float32),
        )  # fmt: skip
        t0 = time.perf_counter()
        res = model.step(*feeds, state)
        out.append((time.perf_counter() - t0) * 1e3)
        state = res[2]
    return out


def composer_steps(model: EnsembleModel, n: int, seed: int) -> tuple[list[float], float]:
    music = MusicSettings(seed=seed)
    inst = resolve_instruments(list(GROUPS), music)
    c = EnsembleLearnedComposer(inst, music, GeneratorSettings(model=model.onnx.path), HarmonySettings(), model=model)
    rng = np.random.default_rng(seed)
    times = []
    hop = 60.0 / music.tempo / STEPS_PER_BEAT  # one grid step per compose call
    t = 0.0
    for i in range(n):
        groups = tuple(GroupState(g, {"alpha": float(rng.normal())}, {"alpha": float(rng.normal())}, 4) for g in GROUPS)
        state = BrainState(i, t, 0.0, groups, i < 20)
        t0 = time.perf_counter()
        c.compose(state, t, t + hop)
        times.append((time.perf_counter() - t0) * 1e3)
        t += hop
    return times, c.stats()["veto"]["rate"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "ensemble.onnx")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    header("ensemble model speed: one batched ONNX step for five voices, one composer step")
    model = EnsembleModel(args.model, threads=1)
    need = 96 * 1.12 / 60 * STEPS_PER_BEAT  # grid steps per second of music at the plan's fastest default tempo
    for run in range(args.runs):
        o = onnx_steps(model, args.steps, run)
        c, veto = composer_steps(model, args.steps, run)
        p99 = float(np.percentile(o, 99))
        print(f"run {run}: ONNX step (5 voices) {summary(o)}  (target p99 <= 3 ms: {'ok' if p99 <= 3 else 'MISSED'})")
        print(f"run {run}: composer step        {summary(c)}; veto rate {100 * veto:.1f} %")
        print(f"run {run}: real-time factor of the composer {1e3 / np.mean(c) / need:.0f}x ({need:.2f} steps/s needed)")


if __name__ == "__main__":
    main()
