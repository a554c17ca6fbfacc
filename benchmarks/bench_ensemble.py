"""Ensemble and harmony: consonance, bounds and brain responsiveness of whole rendered sessions.

    python benchmarks/bench_ensemble.py [--data DIR] [--subjects N] [--modes classic,learned]
                                        [--seconds S] [--folds 6] [--json OUT]

Every eegmat subject is rendered as one session (rest recording, then the task recording, as
lived) in each mode, in-process through ``pipeline.render`` with default settings (learned mode:
the committed models in models/). Per mode it prints the metrics of ``brainharmonic eval music``
over subjects, a leave-subjects-out rest/task classifier on per-bar music features, which features
move from rest to task (and with which brain band), the arbiter's cost per bar and the render speed.
Targets: dissonant share <= 0.10, scale consistency >= 0.90, polyphony <= music.max_polyphony,
>= 3 instruments, balanced accuracy >= 0.65, arbiter p99 <= 1 ms.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from _common import header

from brainharmonic_rt.config import load_settings
from brainharmonic_rt.evaluation.responsiveness import Move, format_moves, render_session, summarize_mode
from brainharmonic_rt.evaluation.sessions import discover_sessions

REPO = Path(__file__).resolve().parent.parent


def clean(x: Any) -> Any:
    """NaN → null, so the JSON is valid."""
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(s: dict[str, Any]) -> None:
    d, sc, poly, bars = s["dissonant_share"], s["scale_consistency"], s["max_polyphony"], s["bars"]
    print(f"\n## mode {s['mode']}: {len(s['subjects'])} sessions, median {s['notes']['median']:.0f} notes, "
          f"bars {bars['all']} ({bars['rest']} rest / {bars['task']} task labelled)")  # fmt: skip
    print(f"dissonant share     median {d['median']:.3f}  max {d['max']:.3f}   "
          f"(target <= 0.10: {verdict(d['max'] <= 0.10)})")  # fmt: skip
    print(f"scale consistency   median {sc['median']:.3f}  min {sc['min']:.3f}   "
          f"(target >= 0.90: {verdict(sc['min'] >= 0.90)})")  # fmt: skip
    print(f"max polyphony       {poly['max']} (cap {poly['cap']}: {verdict(poly['max'] <= poly['cap'])})")
    inst = s["instruments_active"]["min"]
    print(f"instruments active  min {inst}   (target >= 3: {verdict(inst >= 3)})")
    c = s["classifier"]
    if "skipped" in c:
        print(f"rest/task classifier: skipped ({c['skipped']})")
    else:
        ok = c["balanced_accuracy_mean"] >= 0.65
        print(f"rest/task classifier (folds by subject): balanced accuracy {c['balanced_accuracy_mean']:.3f} "
              f"± {c['balanced_accuracy_sd']:.3f} over {len(c['folds'])} folds, pooled {c['pooled']:.3f} "
              f"(target >= 0.65: {verdict(ok)})")  # fmt: skip
    b = s["classifier_brain"]
    if "skipped" not in b:
        print(f"  reference: the same probe on the bars' band z-scores (the brain side) "
              f"{b['balanced_accuracy_mean']:.3f} ± {b['balanced_accuracy_sd']:.3f}")  # fmt: skip
    print("what moves from rest to task (medians over subjects; delta: Cliff's delta; agree: subjects moving so):")
    for line in format_moves([Move(**m) for m in s["moves"]]):
        print("  " + line)
    a = s["arbiter_ms"]
    if a["n"]:
        print(f"arbiter cost per bar  n={a['n']} median {a['median']:.4f} ms  p99 {a['p99']:.4f} ms  "
              f"max {a['max']:.4f} ms   (target p99 <= 1 ms: {verdict(a['p99'] <= 1.0)})")  # fmt: skip
    else:
        print("arbiter cost per bar  n/a (the render does not expose the arbiter's bar costs)")
    r = s["render_speed_x"]
    print(f"render speed        median {r['median']:.0f}x real time, slowest {r['min']:.0f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "eeg" / "eegmat")
    ap.add_argument("--subjects", type=int, default=None, help="only the first N subjects (quick runs)")
    ap.add_argument("--modes", default="classic,learned")
    ap.add_argument("--seconds", type=float, default=None, help="crop each recording to this many seconds")
    ap.add_argument("--folds", type=int, default=6, help="subject folds of the classifier")
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    sessions = [s for s in discover_sessions(args.data) if len(s.paths) == 2]
    if args.subjects is not None:
        sessions = sessions[: args.subjects]
    header("ensemble and harmony: whole sessions (rest then task), both modes")
    print(f"# data: {args.data} ({len(sessions)} sessions), crop: {args.seconds or 'none'}")
    results: dict[str, Any] = {}
    for mode in modes:
        settings = load_settings(None, music={"mode": mode})
        renders = []
        t0 = time.perf_counter()
        for s in sessions:
            r = render_session(s, settings, seconds=args.seconds)
            renders.append(r)
            m = r.metrics
            print(f"{mode:8s} {s.subject}: {r.seconds:5.0f} s in {r.wall:5.1f} s, {m.n_notes} notes, "
                  f"dissonant {m.dissonant_share:.3f}, scale {m.scale_consistency:.3f}, poly {m.max_polyphony}, "
                  f"instruments {m.instruments_active}", flush=True)  # fmt: skip
        summary = summarize_mode(renders, n_folds=args.folds)
        summary["wall_s"] = time.perf_counter() - t0
        results[mode] = summary
        report(summary)
    if args.json is not None:
        args.json.write_text(json.dumps(clean(results), indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
