"""Ensemble and harmony: consonance, bounds and brain responsiveness of whole rendered sessions.

    python benchmarks/bench_ensemble.py [--data DIR] [--subjects N] [--modes classic,learned]
                                        [--variants "classic remi ensemble ensemble:arbiter=off,adaptive=off"]
                                        [--corpus DIR] [--seconds S] [--folds 6] [--json OUT]

A variant is ``classic``, ``remi`` (learned mode with models/generator.onnx), ``ensemble`` (learned
mode with models/ensemble.onnx) or ``learned`` (learned mode with the default model), with options
``arbiter=off`` (``[harmony] arbiter = false``: the model alone, only cap and registers) and
``adaptive=off`` (the plan's adaptive tempo and key both off). Each variant also reports the
arbiter's veto rate (share of sampled pitches refused, by reason), voice leading (parallel perfect
fifths/octaves per 100 two-voice motions, crossing, leaps over an octave; voices = each track's top
line), the pooled strongly dissonant share and, with ``--corpus`` (the folder of ``brainharmonic
train ensemble-corpus``), corpus likeness (MGEval-style overlap) against the held-out (test) pieces,
whose own rates are printed first.

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
from brainharmonic_rt.evaluation.likeness import likeness
from brainharmonic_rt.evaluation.music_metrics import from_notes, simultaneity
from brainharmonic_rt.evaluation.responsiveness import Move, format_moves, render_session, summarize_mode
from brainharmonic_rt.evaluation.sessions import discover_sessions
from brainharmonic_rt.evaluation.voice_leading import EMPTY, voice_leading
from brainharmonic_rt.music.arbiter import merge_veto_stats

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


def variant_settings(spec: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """``name[:key=value,...]`` → (label, settings overrides)."""
    name, _, opts = spec.partition(":")
    models = {"remi": "generator.onnx", "ensemble": "ensemble.onnx"}
    over: dict[str, dict[str, Any]] = {"music": {"mode": "classic" if name == "classic" else "learned"}}
    if name in models:
        over["generator"] = {"model": str(REPO / "models" / models[name])}
        if name == "remi":
            over["generator"]["latent_map"] = str(REPO / "models" / "latent_map.npz")
    elif name not in ("classic", "learned"):
        raise SystemExit(f"unknown variant {name!r}: use classic, learned, remi or ensemble")
    for opt in filter(None, opts.split(",")):
        key, _, value = opt.partition("=")
        if key == "arbiter":
            over.setdefault("harmony", {})["arbiter"] = value != "off"
        elif key == "adaptive":
            over.setdefault("harmony", {}).update(adaptive_tempo=value != "off", adaptive_key=value != "off")
        else:
            raise SystemExit(f"unknown variant option {opt!r}: use arbiter=off or adaptive=off")
    return spec, over


def music_rows(renders: list[Any], reference: list[Any]) -> dict[str, Any]:
    """Pooled dissonance, voice leading, veto rate and corpus likeness of one variant's renders."""
    bad = total = 0
    vl = EMPTY
    pieces = []
    for r in renders:
        notes = from_notes(r.notes, 96.0)
        b, t, _ = simultaneity(notes)
        bad, total = bad + b, total + t
        vl = vl + voice_leading(notes)
        pieces.append(notes)
    out: dict[str, Any] = {
        "dissonant_pooled": bad / total if total else float("nan"),
        "voice_leading": vl.as_dict(),
        "veto": merge_veto_stats([r.composer_stats for r in renders]),
    }
    if reference:
        out["likeness"] = likeness(pieces, reference)
    return out


def report_music(m: dict[str, Any]) -> None:
    vl, v = m["voice_leading"], m["veto"]
    reasons = ", ".join(f"{k} {100 * x:.2f} %" for k, x in v["by_reason"].items()) or "-"
    print(f"dissonant share pooled {m['dissonant_pooled']:.4f}")
    print(f"veto rate           {100 * v['rate']:.2f} % of {v['checked']} sampled pitches ({reasons}); "
          f"{v['dropped']} notes dropped at admission")  # fmt: skip
    print(f"voice leading       parallel 5ths/8ves {vl['parallel_per_100']:.2f} per 100 motions "
          f"({vl['motions']:.0f}), crossing {100 * vl['crossing_share']:.2f} % of onsets, "
          f"leaps > octave {100 * vl['leap_share']:.2f} % of moves")  # fmt: skip
    if "likeness" in m:
        lk = m["likeness"]
        parts = " ".join(f"{k} {v:.2f}" for k, v in lk.items() if not k.startswith("segments"))
        print(f"corpus likeness     {parts}  ({lk.get('segments_generated', 0):.0f} vs "
              f"{lk.get('segments_reference', 0):.0f} segments)")  # fmt: skip


def corpus_reference(folder: Path | None) -> tuple[list[Any], dict[str, Any]]:
    """Held-out (test split) corpus pieces and their rates, per source and pooled."""
    if folder is None:
        return [], {}
    from brainharmonic_rt.evaluation.music_metrics import scale_consistency
    from brainharmonic_rt.training.ensemble_corpus import CorpusArrays, corpus_paths, piece_notes

    c = CorpusArrays.load(corpus_paths(folder)[0])
    pieces, rows = [], {}
    by_source: dict[str, list[Any]] = {}
    for k in c.pieces_in("test"):
        p = piece_notes(c, int(k))
        pieces.append(p)
        by_source.setdefault(c.sources[int(c.piece_source[k])], []).append(p)
    for name, ps in [*sorted(by_source.items()), ("all", pieces)]:
        bad = total = 0
        vl = EMPTY
        for p in ps:
            b, t, _ = simultaneity(p)
            bad, total, vl = bad + b, total + t, vl + voice_leading(p)
        sc = [scale_consistency(p.pitch) for p in ps]
        rows[name] = {
            "pieces": len(ps),
            "dissonant_pooled": bad / total if total else float("nan"),
            "scale_consistency_median": float(sorted(sc)[len(sc) // 2]),
            "voice_leading": vl.as_dict(),
        }
    print("\n## held-out corpus pieces (test split)")
    for name, r in rows.items():
        v = r["voice_leading"]
        print(f"{name:11s} {r['pieces']:4d} pieces  dissonant {r['dissonant_pooled']:.4f}  "
              f"scale {r['scale_consistency_median']:.3f}  parallel {v['parallel_per_100']:.2f}/100  "
              f"crossing {100 * v['crossing_share']:.2f} %  "
              f"leaps {100 * v['leap_share']:.2f} %")  # fmt: skip
    multi = [p for p in pieces if len(set(p.track.tolist())) > 1]
    return multi, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "eeg" / "eegmat")
    ap.add_argument("--subjects", type=int, default=None, help="only the first N subjects (quick runs)")
    ap.add_argument("--modes", default="classic,learned", help="shorthand for --variants with plain modes")
    ap.add_argument("--variants", default=None, help="variants separated by spaces or ; (see the module docstring)")
    ap.add_argument("--corpus", type=Path, default=None, help="ensemble corpus folder: held-out pieces for likeness")
    ap.add_argument("--seconds", type=float, default=None, help="crop each recording to this many seconds")
    ap.add_argument("--folds", type=int, default=6, help="subject folds of the classifier")
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    args = ap.parse_args()
    specs = (args.variants or args.modes).replace(";", " ").split()
    if args.variants is None:
        specs = [m.strip() for m in args.modes.split(",") if m.strip()]
    sessions = [s for s in discover_sessions(args.data) if len(s.paths) == 2]
    if args.subjects is not None:
        sessions = sessions[: args.subjects]
    header("ensemble and harmony: whole sessions (rest then task), both modes")
    print(f"# data: {args.data} ({len(sessions)} sessions), crop: {args.seconds or 'none'}")
    reference, rows = corpus_reference(args.corpus)
    results: dict[str, Any] = {"held_out_corpus": rows} if rows else {}
    for spec in specs:
        mode, over = variant_settings(spec)
        settings = load_settings(None, **over)
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
        summary["mode"] = mode
        summary["wall_s"] = time.perf_counter() - t0
        summary["music"] = music_rows(renders, reference)
        results[mode] = summary
        report(summary)
        report_music(summary["music"])
    if args.json is not None:
        args.json.write_text(json.dumps(clean(results), indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
