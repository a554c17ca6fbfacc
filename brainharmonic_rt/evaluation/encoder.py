"""`brainharmonic eval encoder`: how well the learned latent space separates states and people.

Sessions are lived as in a live run: each subject's rest recording followed by their task
recording, through the runtime's own chain and :class:`LearnedBrain` (baseline at the start
of the session). Windows are labelled by time (rest / task); windows that straddle the
two recordings are left out. Every number below comes from one call of :func:`evaluate`:

* linear probe (rest vs task), leave-subjects-out, folds by subject: on the global latent,
  on the global latent z-scored against the session baseline (as a consumer normalises it),
  and the band-power baseline (the classic brain's baseline z-scores) with the same probe;
* the same probes with the encoder's own validation subjects as the only test set (those
  the self-supervised training never saw);
* codebook perplexity (validation subjects and all), token histograms per condition;
* latent distances within vs between subjects, and between vs within conditions.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..brain.encoder import EncoderModel, LearnedBrain
from ..brain.normalize import BaselineNormalizer
from ..config import Settings, load_settings
from ..errors import DataError
from .modelcard import write_section
from .probe import ProbeScore, leave_subjects_out, perplexity, subject_folds
from .sessions import SessionFiles, discover_sessions, open_session, session_windows

log = logging.getLogger(__name__)

CONDITIONS = ("rest", "task")
SIMILARITY_PER_CELL = 60  # windows per (subject, condition) for the distance statistics
FEATURE_SETS = {
    "latent": "global latent (as BrainState.latent)",
    "latent_z": "global latent, z-scored vs session baseline",
    "bandpower": "band-power baseline (classic z-scores, 5 groups x 3 bands)",
}


@dataclass
class SubjectData:
    """Per-window features of one subject's session (windows straddling recordings dropped)."""

    subject: str
    label: np.ndarray  # (n,) 0 rest, 1 task
    latent: np.ndarray  # (n, D)
    latent_z: np.ndarray  # (n, D)
    bandpower: np.ndarray  # (n, groups x bands)
    token: np.ndarray  # (n,)


def collect(files: SessionFiles, settings: Settings, model: EncoderModel) -> SubjectData:
    """Run one session through the chain and :class:`LearnedBrain`, as a live run would."""
    if tuple(files.labels) != CONDITIONS:
        raise DataError(
            f"eval encoder needs rest + task sessions (eegmat SubjectNN_1.edf and SubjectNN_2.edf); "
            f"{files.subject} has {', '.join(p.name for p in files.paths)}."
        )
    session = open_session(files)
    sig = settings.signal
    brain = LearnedBrain(session.info, sig, settings.bands, model=model)
    znorm = BaselineNormalizer(sig.baseline, sig.adapt, sig.z_clip)
    labels, lat, latz, bp, tok = [], [], [], [], []
    for window in session_windows(session, sig):
        state = brain.process(window)
        if state.latent is None or state.token is None:
            continue
        z = znorm.update(window.t_end, state.latent)
        seg = session.segment_of(window.t_end, sig.window)
        if seg < 0:
            continue
        labels.append(seg)
        lat.append(state.latent)
        latz.append(z)
        bp.append([g.z[b] for g in state.groups for b in brain.classic.band_names])
        tok.append(state.token)
    return SubjectData(
        files.subject,
        np.asarray(labels, dtype=np.int64),
        np.asarray(lat, dtype=np.float64),
        np.asarray(latz, dtype=np.float64),
        np.asarray(bp, dtype=np.float64),
        np.asarray(tok, dtype=np.int64),
    )


def _stack(data: Sequence[SubjectData], name: str) -> np.ndarray:
    return np.concatenate([getattr(d, name) for d in data])


def _cosine_stats(data: Sequence[SubjectData]) -> dict[str, float]:
    """Mean cosine distance of global latents: within/between subjects, between/within conditions.

    Uses up to SIMILARITY_PER_CELL evenly spaced windows per (subject, condition).
    """
    vecs, subj, cond = [], [], []
    for s, d in enumerate(data):
        for c in (0, 1):
            rows = np.flatnonzero(d.label == c)
            if rows.size:
                take = rows[np.linspace(0, rows.size - 1, min(SIMILARITY_PER_CELL, rows.size)).astype(int)]
                vecs.append(d.latent[take])
                subj.extend([s] * take.size)
                cond.extend([c] * take.size)
    v = np.concatenate(vecs)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    dist = 1.0 - v @ v.T
    subj_a, cond_a = np.asarray(subj), np.asarray(cond)
    same_s = subj_a[:, None] == subj_a[None, :]
    same_c = cond_a[:, None] == cond_a[None, :]
    off = ~np.eye(len(v), dtype=bool)
    within_s = float(dist[same_s & off].mean())
    between_s = float(dist[~same_s].mean())
    within_c = float(dist[same_s & same_c & off].mean())
    between_c = float(dist[same_s & ~same_c].mean())
    return {
        "within_subject": within_s,
        "between_subjects": between_s,
        "subject_ratio": within_s / between_s,
        "within_condition": within_c,
        "between_conditions": between_c,
        "condition_ratio": between_c / within_c,
    }


def _histograms(data: Sequence[SubjectData], k: int, top: int = 8) -> dict[str, Any]:
    out: dict[str, Any] = {}
    counts = {}
    for c, name in enumerate(CONDITIONS):
        tok = np.concatenate([d.token[d.label == c] for d in data])
        counts[name] = np.bincount(tok, minlength=k)
        share = counts[name] / max(1, counts[name].sum())
        order = np.argsort(-share)[:top]
        out[name] = {
            "windows": int(tok.size),
            "codes_used": int((counts[name] > 0).sum()),
            "perplexity": perplexity(tok, k),
            "top": [[int(i), round(float(share[i]), 3)] for i in order if share[i] > 0],
        }
    p = {n: counts[n] / max(1, counts[n].sum()) for n in CONDITIONS}
    out["total_variation_rest_vs_task"] = float(0.5 * np.abs(p["rest"] - p["task"]).sum())
    return out


def evaluate(
    data_dir: Path | str,
    settings: Settings,
    *,
    n_folds: int = 6,
    subjects: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """All metrics of the encoder named by ``settings.encoder`` on the eegmat sessions under ``data_dir``."""
    t0 = time.monotonic()
    sessions = [s for s in discover_sessions(data_dir, subjects) if s.labels == CONDITIONS]
    if len(sessions) < 2:
        raise DataError(
            f"{data_dir} holds {len(sessions)} rest+task session(s); eval encoder needs at least two eegmat "
            "subjects (SubjectNN_1.edf and SubjectNN_2.edf)."
        )
    model = EncoderModel.load(settings.encoder)
    spec = model.spec
    data = [collect(s, settings, model) for s in tqdm(sessions, desc="encode sessions", disable=not progress)]
    names = [d.subject for d in data]
    subject = np.concatenate([[d.subject] * d.label.size for d in data])
    y = _stack(data, "label")
    folds = subject_folds(names, min(n_folds, len(names)))
    probes: dict[str, ProbeScore] = {f: leave_subjects_out(_stack(data, f), y, subject, folds) for f in FEATURE_SETS}
    val_subjects = [s for s in model.model.meta.get("val_subjects", "").split(",") if s in names]
    strict: dict[str, ProbeScore] = {}
    if val_subjects and len(val_subjects) < len(names):
        strict = {f: leave_subjects_out(_stack(data, f), y, subject, [val_subjects]) for f in FEATURE_SETS}
    k = spec.codebook_size
    tokens_val = np.concatenate([d.token for d in data if d.subject in val_subjects]) if val_subjects else None
    result: dict[str, Any] = {
        "model": str(model.model.path),
        "version": spec.version,
        "data": str(data_dir),
        "subjects": names,
        "windows": {c: int((y == i).sum()) for i, c in enumerate(CONDITIONS)},
        "folds": folds,
        "val_subjects": val_subjects,
        "probe": {f: _score(p) for f, p in probes.items()},
        "probe_val_subjects": {f: _score(p) for f, p in strict.items()},
        "codebook": {
            "K": k,
            "perplexity_val": perplexity(tokens_val, k) if tokens_val is not None else None,
            "perplexity_all": perplexity(_stack(data, "token"), k),
            "codes_used_all": len(np.unique(_stack(data, "token"))),
            "per_condition": _histograms(data, k),
        },
        "similarity": _cosine_stats(data),
        "seconds": round(time.monotonic() - t0, 1),
        "settings": {
            "window": settings.signal.window,
            "hop": settings.signal.hop,
            "baseline": settings.signal.baseline,
        },
    }
    return result


def _score(p: ProbeScore) -> dict[str, Any]:
    return {
        "mean": round(p.mean, 4),
        "sd": round(p.sd, 4),
        "pooled": round(p.pooled, 4),
        "folds": [round(f, 4) for f in p.folds],
    }


def format_report(r: dict[str, Any]) -> str:
    """The metrics as Markdown (printed, and written into the model card)."""
    lines = [
        "## Metrics (from `brainharmonic eval encoder`)",
        "",
        f"Model `{Path(r['model']).name}` v{r['version']}; data `{r['data']}`: "
        f"{len(r['subjects'])} subjects, "
        f"{r['windows']['rest']} rest and {r['windows']['task']} task windows "
        f"({r['settings']['window']:g} s windows every {r['settings']['hop']:g} s, baseline "
        f"{r['settings']['baseline']:g} s at the start of each rest+task session).",
        "",
        f"### Rest vs mental arithmetic: linear probe, balanced accuracy, {len(r['folds'])} leave-subjects-out folds",
        "",
        "| features | mean ± sd over folds | pooled | per fold |",
        "|---|---|---|---|",
    ]
    for f, desc in FEATURE_SETS.items():
        p = r["probe"][f]
        lines.append(
            f"| {desc} | {p['mean']:.3f} ± {p['sd']:.3f} | {p['pooled']:.3f} | "
            f"{', '.join(f'{x:.2f}' for x in p['folds'])} |"
        )
    if r["probe_val_subjects"]:
        lines += [
            "",
            f"Test on the encoder's validation subjects only ({', '.join(r['val_subjects'])}: never seen in "
            "training), probe fitted on all other subjects:",
            "",
            "| features | balanced accuracy |",
            "|---|---|",
        ]
        for f, desc in FEATURE_SETS.items():
            lines.append(f"| {desc} | {r['probe_val_subjects'][f]['pooled']:.3f} |")
    cb = r["codebook"]
    pv = "n/a" if cb["perplexity_val"] is None else f"{cb['perplexity_val']:.1f}"
    lines += [
        "",
        f"### Codebook (K = {cb['K']})",
        "",
        f"Perplexity on validation subjects: {pv} (target >= {cb['K'] / 4:g}); on all subjects: "
        f"{cb['perplexity_all']:.1f}; codes used: {cb['codes_used_all']} of {cb['K']}.",
        "",
        "| condition | windows | codes used | perplexity | most used tokens (share) |",
        "|---|---|---|---|---|",
    ]
    for c in CONDITIONS:
        h = cb["per_condition"][c]
        top = ", ".join(f"{i} ({s:.2f})" for i, s in h["top"])
        lines.append(f"| {c} | {h['windows']} | {h['codes_used']} | {h['perplexity']:.1f} | {top} |")
    lines.append(
        f"\nTotal variation distance between the rest and task token histograms: "
        f"{cb['per_condition']['total_variation_rest_vs_task']:.3f}."
    )
    s = r["similarity"]
    lines += [
        "",
        "### Similarity (cosine distance of global latents)",
        "",
        f"- within a subject {s['within_subject']:.3f}, between subjects {s['between_subjects']:.3f}: "
        f"ratio {s['subject_ratio']:.3f} (< 1: a person's windows lie together)",
        f"- within a subject, same condition {s['within_condition']:.3f}, rest vs task "
        f"{s['between_conditions']:.3f}: ratio {s['condition_ratio']:.3f} (> 1: conditions apart)",
        "",
        f"Evaluation took {r['seconds']:.0f} s" + (f" (`{r['command']}`)." if r.get("command") else "."),
    ]
    return "\n".join(lines)


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `brainharmonic eval encoder` (--config comes from the CLI's own `_add_config`)."""
    p.add_argument("--data", required=True, metavar="DIR", help="Folder with eegmat SubjectNN_1/2.edf files.")
    p.add_argument("--model", metavar="ONNX", help="Encoder to evaluate (default: [encoder] model).")
    p.add_argument("--folds", type=int, default=6, help="Leave-subjects-out folds (default 6).")
    p.add_argument("--subjects", metavar="LIST", help="Comma-separated subject names (default: all).")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: [encoder] threads).")
    p.add_argument("--json", metavar="OUT.json", help="Also write the metrics as JSON.")
    p.add_argument("--card", metavar="CARD.md", help="Write the metrics into this model card's metrics section.")
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")


def eval_encoder(args: argparse.Namespace) -> int:
    """`brainharmonic eval encoder`: print the metrics (optionally write JSON and the card)."""
    enc: dict[str, Any] = {}
    if args.model:
        enc["model"] = args.model
    if args.threads:
        enc["threads"] = args.threads
    settings = load_settings(getattr(args, "config", None), **({"encoder": enc} if enc else {}))
    subjects = [s.strip() for s in args.subjects.split(",")] if args.subjects else None
    result = evaluate(args.data, settings, n_folds=args.folds, subjects=subjects, progress=not args.no_progress)
    result["command"] = "brainharmonic eval encoder " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if k in ("data", "model", "folds", "subjects") and v is not None
    )
    report = format_report(result)
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.card:
        write_section(args.card, "metrics", report)
    return 0
