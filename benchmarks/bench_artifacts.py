"""Blink and clench detection: precision and recall on synthetic artifacts added to real eegmat recordings,
what the detector finds in the (ICA-cleaned) recordings themselves, how much the brain state moves during
artifacts with and without the hold, and what the per-window checks cost.

.venv/bin/python benchmarks/bench_artifacts.py [--data DIR] [--subjects 0-23] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import header
from brainharmonic_rt.brain.classic import ClassicBrain
from brainharmonic_rt.config import Settings, load_settings
from brainharmonic_rt.datasets import find_eegmat
from brainharmonic_rt.evaluation.artifact_sim import Injected, add_artifacts, score
from brainharmonic_rt.events import Chunk, SignalInfo
from brainharmonic_rt.signal import SignalChain
from brainharmonic_rt.sources.files import open_recordings

CHUNK = 32


def run_detector(info: SignalInfo, data: np.ndarray, settings: Settings) -> tuple[list[tuple[str, float]], dict]:
    """Detections (kind, session time) over one recording, plus per-window z-scores of each group."""
    chain = SignalChain(info, settings.signal, settings.quality, settings.artifacts)
    brain = ClassicBrain(info, settings.signal, settings.bands)
    found: list[tuple[str, float]] = []
    z: dict[str, list[float]] = {}
    times: list[float] = []
    touched: list[bool] = []
    ts = np.arange(data.shape[1]) / info.sfreq
    for a in range(0, data.shape[1], CHUNK):
        for w in chain.push(Chunk(data[:, a : a + CHUNK], ts[a : a + CHUNK])):
            found.extend((e.kind, e.t) for e in w.events)
            state = brain.process(w)
            times.append(w.t_end)
            touched.append(bool(w.artifacts))
            for g in state.groups:
                z.setdefault(g.name, []).append(g.z["theta"])
                z.setdefault(g.name + ":beta", []).append(g.z["beta"])
    return found, {"t": np.asarray(times), "z": {k: np.asarray(v) for k, v in z.items()}, "touched": touched}


def disturbance(clean: dict, dirty: dict, truth: list[Injected], window: float) -> dict[str, float]:
    """Median |z(dirty) - z(clean)| over the windows that contain an injected artifact, per kind
    (theta of the frontal group for blinks, beta of the temporal group for clenches)."""
    out = {}
    t = dirty["t"]
    for kind, key in (("blink", "frontal"), ("clench", "temporal:beta")):
        if key not in dirty["z"]:
            continue
        mask = np.zeros(t.size, dtype=bool)
        for e in truth:
            if e.kind == kind:
                mask |= (t >= e.onset) & (t - window <= e.onset + e.duration)
        if mask.any():
            out[kind] = float(np.median(np.abs(dirty["z"][key][mask] - clean["z"][key][mask])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", help="eegmat folder (default: the usual lookup)")
    ap.add_argument("--subjects", default="0-23", help="range, e.g. 0-23 or 0-3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blink-threshold", type=float)
    ap.add_argument("--clench-threshold", type=float)
    args = ap.parse_args()
    header("artifact detection: synthetic blinks/clenches on eegmat, and the recordings themselves")
    root = find_eegmat(args.data, download=False)
    a, _, b = args.subjects.partition("-")
    subjects = range(int(a), int(b or a) + 1)
    overrides = {
        k: v for k, v in (("blink_threshold", args.blink_threshold), ("clench_threshold", args.clench_threshold)) if v
    }
    on = load_settings(artifacts=overrides)
    off = load_settings(artifacts={"enabled": False})
    print(f"# settings: {on.artifacts.model_dump()}")
    all_found: list[tuple[str, float]] = []
    all_truth: list[Injected] = []
    clean_counts = {"blink": 0, "clench": 0}
    clean_minutes = 0.0
    dist_on: dict[str, list[float]] = {"blink": [], "clench": []}
    dist_off: dict[str, list[float]] = {"blink": [], "clench": []}
    offset = 0.0
    cost: list[float] = []
    natural: list[float] = []
    for s in subjects:
        for part in (1, 2):
            path = Path(root) / f"Subject{s:02d}_{part}.edf"
            src = open_recordings([path])
            info, data = src.info, np.asarray(src.data)
            found_clean, clean_on = run_detector(info, data, on)
            hops = round(on.signal.window / on.signal.hop)  # how far z drifts by itself over one window length
            z = clean_on["z"].get("frontal")
            if z is not None and z.size > hops:
                natural.append(float(np.median(np.abs(z[hops:] - z[:-hops]))))
            for k, _ in found_clean:
                clean_counts[k] += 1
            clean_minutes += data.shape[1] / info.sfreq / 60
            dirty, truth = add_artifacts(data, info.sfreq, info.ch_names, seed=args.seed * 1000 + s * 10 + part)
            t0 = time.perf_counter()
            found, dirty_on = run_detector(info, dirty, on)
            cost.append(time.perf_counter() - t0)
            _, clean_off = run_detector(info, data, off)
            _, dirty_off = run_detector(info, dirty, off)
            for k, v in disturbance(clean_on, dirty_on, truth, on.signal.window).items():
                dist_on[k].append(v)
            for k, v in disturbance(clean_off, dirty_off, truth, on.signal.window).items():
                dist_off[k].append(v)
            all_found += [(k, t + offset) for k, t in found]
            all_truth += [Injected(e.kind, e.onset + offset, e.duration, e.amplitude_uv) for e in truth]
            offset += data.shape[1] / info.sfreq + 100.0
            per = score(found, truth)
            print(
                f"Subject{s:02d}_{part}: clean recording {len(found_clean)} detections "
                f"({', '.join(f'{k} {t:.1f}s' for k, t in found_clean[:6])}); synthetic: "
                + "; ".join(f"{k} {int(v['injected'])} injected, {int(v['detected'])} detected" for k, v in per.items())
            )
    res = score(all_found, all_truth)
    print()
    for kind, v in res.items():
        print(
            f"{kind:6s}: injected {int(v['injected'])}, detected {int(v['detected'])}, "
            f"precision {v['precision']:.3f}, recall {v['recall']:.3f}"
        )
    print(
        f"clean eegmat ({clean_minutes:.1f} min): {clean_counts['blink']} blinks "
        f"({clean_counts['blink'] / clean_minutes:.2f}/min), {clean_counts['clench']} clenches "
        f"({clean_counts['clench'] / clean_minutes:.2f}/min)"
    )
    for kind, key in (("blink", "frontal theta"), ("clench", "temporal beta")):
        if dist_on[kind]:
            print(
                f"brain state during {kind}s ({key} z, median |dirty - clean| over touched windows, median over "
                f"recordings): hold off {np.median(dist_off[kind]):.3f}, hold on {np.median(dist_on[kind]):.3f}"
            )
    print(
        f"for scale: frontal theta z moves by itself by a median {np.median(natural):.3f} over one window length "
        "(clean recordings)"
    )
    print(f"detector run time per recording (whole chain, {CHUNK}-sample chunks): median {np.median(cost):.2f} s")


if __name__ == "__main__":
    main()
