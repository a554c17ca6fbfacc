"""Generator: decoding speed on one thread, music metrics of 50 generated pieces, latent controllability.

* **step latency** – ``GeneratorModel.step`` (the ONNX call) and ``Voice.step`` (call + grammar
  bias + top-p sampling) over contexts 0..256 tokens, one intra-op thread. Target p99 <= 3 ms.
* **ensemble throughput** – four voices (piano, bass, strings, drums) decoding in turn: tokens per
  second against the rate real-time playback needs at 120 bpm (4 × the 95th percentile of the
  corpus's tokens per beat × 2 beats/s). Target >= 3×.
* **metrics** – ``--pieces`` 16-bar piano pieces, latents drawn from the prior N(0, I) with seeds
  0..n-1, temperature 1, top-p 0.95, no key lock, ``generate``'s groove nudge (``--groove``);
  MusPy-style metrics per piece (mean and 10/50/90th percentiles), next to the corpus's bands
  (classical and jazz, whole pieces).
* **pieces from real EEG** – the same number of 16-bar pieces, steered per bar by latents of the
  eegmat sessions the latent map held out (``--eeg``, ``--latent-map``), as ``learned`` mode maps them.
* **controllability** – latents ``t · u`` along the density / register / polyphony directions
  found on held-out bars (``models/generator_latent.npz``), t in -2..2, 12 seeds × 4 bars each:
  Spearman ρ between t and the measured attribute.

    .venv/bin/python benchmarks/bench_generator.py [--model models/generator.onnx] [--midi ../shared/data/midi]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header, summary

from brainharmonic_rt.evaluation.generate import GENERATE_GROOVE, generate_notes
from brainharmonic_rt.evaluation.music_metrics import evaluate, evaluate_file, from_notes, summarize
from brainharmonic_rt.music.generator import DEFAULT_MODEL, GeneratorModel, Voice
from brainharmonic_rt.music.tokens import DRUM_PROGRAM
from brainharmonic_rt.training.latent_map_fit import holdout_count

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "classical": {"pitch_class_entropy": (3.01, 3.54), "scale_consistency": (0.67, 0.93)},
    "jazz": {"pitch_class_entropy": (3.24, 3.49), "scale_consistency": (0.71, 0.86)},
}


def step_latency(model: GeneratorModel, n_ctx: int = 256, reps: int = 8) -> tuple[list[float], list[float]]:
    raw, full = [], []
    lat = np.zeros(model.latent_dim, np.float32)
    for r in range(reps):
        state = model.initial_state()
        tok = np.array([model.vocab.bar])
        prog = np.array([0])
        for _ in range(n_ctx):
            t0 = time.perf_counter()
            logits, state = model.step(tok, state, lat[None], prog)
            raw.append((time.perf_counter() - t0) * 1e3)
            tok = np.array([int(np.argmax(logits[0]))])
        v = Voice(model, 0, r)
        for _ in range(n_ctx):
            t0 = time.perf_counter()
            v.step(lat)
            full.append((time.perf_counter() - t0) * 1e3)
    return raw, full


def needed_rate(midi: Path | None) -> tuple[float, float]:
    """Tokens per beat of corpus tracks: (mean, 95th percentile); needs miditok (training extra)."""
    from brainharmonic_rt.music.tokens import build_tokenizer, tokenize_file

    tok = build_tokenizer()
    bar = tok.vocab["Bar_None"]
    rates = []
    files = sorted(p for p in (midi or Path()).rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    for p in files:
        for tr in tokenize_file(tok, p):
            bars = int((tr.ids == bar).sum())
            if bars >= 4:
                rates.append(tr.ids.size / (4 * bars))
    a = np.asarray(rates)
    return float(a.mean()), float(np.percentile(a, 95))


def ensemble_throughput(model: GeneratorModel, tokens: int = 2000) -> float:
    voices = [Voice(model, p, i) for i, p in enumerate((0, 32, 48, DRUM_PROGRAM))]
    lat = np.random.default_rng(0).standard_normal(model.latent_dim).astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(tokens // 4):
        for v in voices:
            v.step(lat)
    return tokens / (time.perf_counter() - t0)


def attributes(notes: list, bars: int, tempo: float) -> tuple[float, float, float]:
    if not notes:
        return 0.0, float("nan"), float("nan")
    onsets = {round(n.time, 4) for n in notes}
    return len(notes) / bars, float(np.mean([n.pitch for n in notes])), len(notes) / len(onsets)


def controllability(model: GeneratorModel, latent_file: Path, seeds: int = 12) -> dict[str, float]:
    d = np.load(latent_file)
    out = {}
    for j, name in enumerate(("density", "register", "polyphony")):
        u = d[f"dir_{name}"]
        mean = d["mean"]
        ts, ys = [], []
        for t in (-2.0, -1.0, 0.0, 1.0, 2.0):
            z = (mean + t * u * d["std"][0]).astype(np.float32)
            for s in range(seeds):
                notes = generate_notes(model, np.tile(z, (4, 1)), [0], bars=4, seed=s)
                y = attributes(notes, 4, 120.0)[j]
                if np.isfinite(y):
                    ts.append(t)
                    ys.append(y)
        out[name] = float(spearmanr(ts, ys).statistic)
    return out


def eeg_pieces(eeg: Path, latent_map: Path, n: int, bars: int, holdout: float = 0.33) -> list[np.ndarray]:
    """``n`` per-bar latent sequences (bars, latent_dim) from real EEG: the sessions the latent map was not
    fitted on (the last ``holdout`` share, as ``train latent-map`` holds them out), embedded by the
    committed encoder, the global latent centred as ``generate --from-latents`` centres an embed file (live
    mode feeds each instrument its group's latent), one latent per 2-s bar (120 bpm). Pieces start every
    4 bars, so neighbouring pieces overlap by three quarters."""
    import asyncio

    from brainharmonic_rt.brain.latent_map import LatentMap, SessionCentre
    from brainharmonic_rt.config import Settings
    from brainharmonic_rt.evaluation.embed import embed_source
    from brainharmonic_rt.evaluation.sessions import discover_sessions, open_session

    lmap = LatentMap.load(latent_map)
    sessions = discover_sessions(eeg)
    n_hold = holdout_count(len(sessions), holdout)
    held = sessions[len(sessions) - n_hold :] if n_hold else []  # the map holds nothing out of one session
    pieces = []
    for s in held:
        e = asyncio.run(embed_source(open_session(s).source, Settings()))
        x = np.asarray(e.global_latent, np.float64)
        if lmap.centred:
            x = SessionCentre.apply_to(x, e.calibrating)
        keep = ~e.calibrating & np.isfinite(x).all(axis=1)
        y, times = lmap(x[keep]), np.asarray(e.times)[keep]
        per_bar = max(1, round(2.0 / float(np.median(np.diff(times)))))
        span = bars * per_bar
        pieces += [y[a : a + span : per_bar] for a in range(0, y.shape[0] - span + 1, span // 4)]
    pick = np.linspace(0, len(pieces) - 1, min(n, len(pieces))).round().astype(int)
    return [pieces[i].astype(np.float32) for i in pick]


def report_pieces(rows: list, label: str) -> dict[str, object]:
    gen = summarize(rows)
    print(f"\n{label}:")
    for k, s in gen.items():
        print(f"  {k:22s} mean {s['mean']:.3f}  p10 {s['p10']:.3f}  p50 {s['p50']:.3f}  p90 {s['p90']:.3f}")
    out: dict[str, object] = {"metrics": gen}
    for style, tg in TARGETS.items():
        inside = {k: float(np.mean([lo <= r.as_dict()[k] <= hi for r in rows])) for k, (lo, hi) in tg.items()}
        print(f"  fraction inside the {style} 10-90 % band: {inside}")
        out[f"inside_{style}_band"] = inside
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--latent", type=Path, default=DEFAULT_MODEL.with_name("generator_latent.npz"))
    p.add_argument("--midi", type=Path, default=ROOT.parent / "shared" / "data" / "midi")
    p.add_argument("--pieces", type=int, default=50)
    p.add_argument("--bars", type=int, default=16)
    p.add_argument("--eeg", type=Path, default=ROOT.parent / "shared" / "data" / "eeg" / "eegmat")
    p.add_argument("--latent-map", type=Path, default=DEFAULT_MODEL.with_name("latent_map.npz"))
    p.add_argument("--groove", type=float, default=GENERATE_GROOVE, help="groove nudge in nats (0 = off)")
    p.add_argument("--out-dir", type=Path, default=None, help="also write the generated pieces here")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    header("generator: step latency, ensemble throughput, metrics of generated pieces, controllability")
    model = GeneratorModel(args.model, threads=1, device="cpu")
    report: dict[str, object] = {}

    raw, full = step_latency(model)
    print(f"onnx step (context 0..256):  {summary(raw)}")
    print(f"voice step (+bias, top-p):   {summary(full)}")
    report["step_ms"] = {
        "onnx_p50": float(np.median(raw)),
        "onnx_p99": float(np.percentile(raw, 99)),
        "voice_p50": float(np.median(full)),
        "voice_p99": float(np.percentile(full, 99)),
    }

    tps = ensemble_throughput(model)
    report["ensemble_tokens_per_s"] = tps
    if args.midi.is_dir():
        mean_rate, p95_rate = needed_rate(args.midi)
        need = 4 * p95_rate * 2.0  # four instruments, tokens/beat (p95 track), 2 beats/s at 120 bpm
        print(
            f"corpus tokens per beat: mean {mean_rate:.2f}, p95 {p95_rate:.2f} → four instruments at 120 bpm need "
            f"{need:.0f} tokens/s"
        )
        print(f"four voices decode {tps:.0f} tokens/s = {tps / need:.1f}× real time")
        report.update(
            tokens_per_beat_mean=mean_rate,
            tokens_per_beat_p95=p95_rate,
            needed_tokens_per_s=need,
            realtime_factor=tps / need,
        )

    rows = []
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    for seed in range(args.pieces):
        lat = np.random.default_rng(seed).standard_normal((args.bars, model.latent_dim)).astype(np.float32)
        notes = generate_notes(model, lat, [0], bars=args.bars, seed=seed, groove=args.groove)
        rows.append(evaluate(from_notes(notes, 120.0)))
        if args.out_dir is not None:
            from brainharmonic_rt.evaluation.generate import instruments_for
            from brainharmonic_rt.sinks.midifile import notes_to_midi

            notes_to_midi(notes, instruments_for([0]), 120.0, args.out_dir / f"piece{seed:02d}.mid")
    gen = report_pieces(
        rows, f"{args.pieces} generated {args.bars}-bar pieces (prior latents, T=1, top-p 0.95, groove {args.groove})"
    )
    report["generated"] = gen["metrics"]
    report.update({k: v for k, v in gen.items() if k != "metrics"})
    report["groove_nudge"] = args.groove
    use_eeg = args.eeg.is_dir() and args.latent_map.is_file()
    lats = eeg_pieces(args.eeg, args.latent_map, args.pieces, args.bars) if use_eeg else []
    if lats:
        eeg_rows = [
            evaluate(from_notes(generate_notes(model, z, [0], bars=args.bars, seed=i, groove=args.groove), 120.0))
            for i, z in enumerate(lats)
        ]
        report["from_eeg"] = report_pieces(
            eeg_rows, f"{len(lats)} pieces from held-out eegmat sessions through {args.latent_map.name}"
        )
    if args.midi.is_dir():
        for style in ("classical", "jazz"):
            files = sorted((args.midi / style).glob("*"))
            corpus = summarize(evaluate_file(f) for f in files if f.suffix.lower() in (".mid", ".midi"))
            report[f"corpus_{style}"] = corpus
            print(
                f"corpus {style}: "
                + ", ".join(
                    f"{k} p10-p90 {v['p10']:.2f}-{v['p90']:.2f}"
                    for k, v in corpus.items()
                    if k
                    in (
                        "pitch_class_entropy",
                        "scale_consistency",
                        "groove_consistency",
                        "empty_beat_rate",
                        "max_duration",
                    )
                )
            )
    if args.latent.is_file():
        ctl = controllability(model, args.latent)
        report["controllability_generated"] = ctl
        print(f"controllability (Spearman of t vs attribute, generated): {ctl}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
