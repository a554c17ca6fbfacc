"""`brainharmonic eval encoder`: does the learned latent tell rest from task on people it never saw?

Protocol (one rule: a subject is tested only by a model that never saw it, self-supervised
training included). Each model evaluated names its training subjects in its metadata; its
*held-out* subjects are the rest+task subjects of ``--data`` it was not trained on. With
``--cv`` several models (one training run per fold, `train encoder --val-subjects fold:K/N`)
together hold out every subject once: subject-level cross-validation of the training recipe.

Sessions are lived as in a live run: each subject's rest recording followed by their task
recording, through the runtime's own chain and :class:`LearnedBrain` (baseline at the start of
the rest). Windows that straddle the two recordings, windows with a bad channel and the
calibration windows themselves are left out of the probe. For each model:

* a linear probe (rest vs task; :mod:`.probe`) is fitted on the windows of the subjects the
  model trained on and tested on each held-out subject, per subject;
* the same probe, same subjects, same windows, on band-power baselines: per-channel log band
  powers (delta..gamma) raw, session-centred and robust-z-scored against the session's
  calibration (as the classic brain scores them), and the classic brain's own z-scores;
* codebook perplexity on the held-out subjects; within each held-out subject the cosine
  distance between the code vectors of tokens of the same state and of the other state;
* latent distances within vs between subjects, and between vs within conditions.

The headline feature (fixed before any measurement) is the session-centred global latent,
because that is what the learned composer reads (:class:`~.latent_map.SessionCentre`).
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

from ..brain.bandpower import BandPower, decimation_step
from ..brain.encoder import EncoderModel, LearnedBrain
from ..brain.latent_map import SessionCentre
from ..brain.normalize import BaselineNormalizer
from ..config import Settings, load_settings
from ..errors import DataError
from .modelcard import write_section
from .probe import balanced_accuracy, fit_probe, perplexity
from .sessions import SessionFiles, discover_sessions, open_session, session_windows

log = logging.getLogger(__name__)

CONDITIONS = ("rest", "task")
SIMILARITY_PER_CELL = 60  # windows per (subject, condition) for the distance statistics
POWER_FLOOR = 1e-30
#: Per-channel baseline bands (Hz): the classic five, gamma capped by the 40 Hz band-pass.
BASELINE_BANDS = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 40.0),
}
HEADLINE = "latent_c"
ENCODER_FEATURES = {
    "latent_c": "global latent, session-centred (as the learned composer reads it)",
    "latent": "global latent (as BrainState.latent)",
    "latent_z": "global latent, robust z vs session calibration",
}
BASELINE_FEATURES = {
    "bp": "per-channel log band powers (5 bands), raw",
    "bp_c": "per-channel log band powers, session-centred",
    "bp_z": "per-channel log band powers, robust z vs session calibration",
    "classic": "classic brain z-scores (5 groups x 3 bands)",
}
FEATURES = {**ENCODER_FEATURES, **BASELINE_FEATURES}
TARGET_BACC = 0.82
TARGET_MARGIN = 0.05


@dataclass
class SubjectData:
    """Per-window features of one subject's session under one model (probe windows only).

    label (n,) 0 rest / 1 task; features name → (n, d); token (n,).
    """

    subject: str
    label: np.ndarray
    features: dict[str, np.ndarray]
    token: np.ndarray


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
    channels = brain.input.channels
    n_window = round(sig.window * session.info.sfreq)
    bands = BandPower(
        session.info.sfreq,
        n_window,
        BASELINE_BANDS,
        step=decimation_step(session.info.sfreq, sig.bandpass, BASELINE_BANDS),
    )
    lat_z = BaselineNormalizer(sig.baseline, sig.adapt, sig.z_clip)
    bp_z = BaselineNormalizer(sig.baseline, sig.adapt, sig.z_clip)
    lat_c, bp_c = SessionCentre(), SessionCentre()
    rows: dict[str, list[np.ndarray]] = {f: [] for f in FEATURES}
    labels, tokens = [], []
    for window in session_windows(session, sig):
        state = brain.process(window)
        if state.latent is None or state.token is None or window.data.shape[1] != n_window:
            continue
        bad = {ch for ch, _ in window.bad} & {int(c) for c in channels}
        bp = np.log10(np.maximum(bands.compute(window.data[channels]), POWER_FLOOR)).ravel()
        feats = {
            "latent": state.latent.astype(np.float64),
            "latent_z": lat_z.update(window.t_end, state.latent),
            "bp": bp,
            "bp_z": bp_z.update(window.t_end, np.where(bad_mask(channels, bad, len(BASELINE_BANDS)), np.nan, bp)),
            "classic": np.asarray([g.z[b] for g in state.groups for b in brain.classic.band_names]),
        }
        lat_c.observe(state.latent, state.calibrating)
        bp_c.observe(bp, state.calibrating and not bad)
        feats["latent_c"] = lat_c(state.latent)
        feats["bp_c"] = bp_c(bp)
        seg = session.segment_of(window.t_end, sig.window)
        if seg < 0 or state.calibrating or bad:
            continue
        for f in FEATURES:
            rows[f].append(feats[f])
        labels.append(seg)
        tokens.append(state.token)
    if not labels or len(set(labels)) < 2:
        raise DataError(f"{files.subject} gave no usable rest and task windows after calibration; check its files.")
    return SubjectData(
        files.subject,
        np.asarray(labels, dtype=np.int64),
        {f: np.asarray(v, dtype=np.float64) for f, v in rows.items()},
        np.asarray(tokens, dtype=np.int64),
    )


def bad_mask(channels: np.ndarray, bad: set[int], n_bands: int) -> np.ndarray:
    """(channels × bands,) True where the channel is bad (its band powers are left out of the baseline)."""
    return np.repeat(np.isin(channels, list(bad)), n_bands)


@dataclass
class FoldResult:
    """One model: who it held out, per-subject balanced accuracy per feature set, tokens, distances."""

    model: str
    version: str
    train: list[str]
    test: list[str]
    bacc: dict[str, dict[str, float]]  # feature → subject → balanced accuracy
    pooled: dict[str, tuple[np.ndarray, np.ndarray]]  # feature → (y, pred) over the held-out windows
    codebook_size: int
    perplexity: float
    codes_used: int
    token_distance: dict[str, tuple[float, float]]  # subject → (same state, other state)
    similarity: dict[str, float]
    tokens: dict[str, np.ndarray]  # condition → tokens of the held-out windows


def held_out(model: EncoderModel, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(training, held-out) among ``names`` for a model, from its ``train_subjects`` metadata."""
    trained = {s for s in model.model.meta.get("train_subjects", "").split(",") if s}
    if not trained:
        raise DataError(
            f"{model.model.path} does not name its training subjects (metadata train_subjects); "
            "only models trained by `brainharmonic train encoder` can be evaluated on unseen subjects."
        )
    test = [n for n in names if n not in trained]
    train = [n for n in names if n in trained]
    if not test:
        raise DataError(
            f"{model.model.path} was trained on every subject in the data, so nobody it never saw is left to test; "
            "evaluate models trained with `--val-subjects fold:K/N` through `eval encoder --cv`."
        )
    if not train:
        raise DataError(
            f"{model.model.path} trained on none of the subjects in the data; the probe has nothing to fit on."
        )
    return train, test


def evaluate_fold(
    model: EncoderModel, sessions: Sequence[SessionFiles], settings: Settings, progress: bool
) -> FoldResult:
    """Every measurement of one model on its held-out subjects."""
    train, test = held_out(model, [s.subject for s in sessions])
    data = {
        s.subject: collect(s, settings, model)
        for s in tqdm(sessions, desc=f"encode ({model.model.path.name})", disable=not progress)
    }
    y_train = np.concatenate([data[s].label for s in train])
    bacc: dict[str, dict[str, float]] = {}
    pooled: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for f in FEATURES:
        probe = fit_probe(np.concatenate([data[s].features[f] for s in train]), y_train)
        preds = {s: probe.predict(data[s].features[f]) for s in test}
        bacc[f] = {s: balanced_accuracy(data[s].label, preds[s]) for s in test}
        pooled[f] = (np.concatenate([data[s].label for s in test]), np.concatenate([preds[s] for s in test]))
    k = model.spec.codebook_size
    tok = np.concatenate([data[s].token for s in test])
    codes = model.codebook
    return FoldResult(
        model=str(model.model.path),
        version=model.spec.version,
        train=train,
        test=test,
        bacc=bacc,
        pooled=pooled,
        codebook_size=k,
        perplexity=perplexity(tok, k),
        codes_used=len(np.unique(tok)),
        token_distance={s: token_distances(data[s], codes) for s in test} if codes is not None else {},
        similarity=cosine_stats([data[s] for s in test]),
        tokens={c: np.concatenate([data[s].token[data[s].label == i] for s in test]) for i, c in enumerate(CONDITIONS)},
    )


def _spread(rows: np.ndarray, n: int) -> np.ndarray:
    return rows[np.linspace(0, rows.size - 1, min(n, rows.size)).astype(int)]


def token_distances(d: SubjectData, codes: np.ndarray) -> tuple[float, float]:
    """Mean cosine distance between the code vectors of two windows' tokens within one subject:
    (same state, other state), over up to SIMILARITY_PER_CELL evenly spaced windows per state."""
    c = codes / np.linalg.norm(codes, axis=1, keepdims=True)
    rest, task = (c[d.token[_spread(np.flatnonzero(d.label == i), SIMILARITY_PER_CELL)]] for i in (0, 1))
    same = []
    for v in (rest, task):
        dist = 1.0 - v @ v.T
        same.append(dist[~np.eye(len(v), dtype=bool)].mean())
    other = float((1.0 - rest @ task.T).mean())
    return float(np.mean(same)), other


def cosine_stats(data: Sequence[SubjectData]) -> dict[str, float]:
    """Mean cosine distance of global latents: within/between subjects, between/within conditions.

    Uses up to SIMILARITY_PER_CELL evenly spaced windows per (subject, condition).
    """
    vecs, subj, cond = [], [], []
    for s, d in enumerate(data):
        for c in (0, 1):
            take = _spread(np.flatnonzero(d.label == c), SIMILARITY_PER_CELL)
            vecs.append(d.features["latent"][take])
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
    between_s = float(dist[~same_s].mean()) if (~same_s).any() else float("nan")
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


def _histograms(folds: Sequence[FoldResult], k: int, top: int = 8) -> dict[str, Any]:
    out: dict[str, Any] = {}
    counts = {}
    for c in CONDITIONS:
        tok = np.concatenate([f.tokens[c] for f in folds])
        counts[c] = np.bincount(tok, minlength=k)
        share = counts[c] / max(1, counts[c].sum())
        order = np.argsort(-share)[:top]
        out[c] = {
            "windows": int(tok.size),
            "codes_used": int((counts[c] > 0).sum()),
            "perplexity": perplexity(tok, k),
            "top": [[int(i), round(float(share[i]), 3)] for i in order if share[i] > 0],
        }
    p = {c: counts[c] / max(1, counts[c].sum()) for c in CONDITIONS}
    out["total_variation_rest_vs_task"] = float(0.5 * np.abs(p["rest"] - p["task"]).sum())
    return out


def evaluate(
    data_dir: Path | str,
    settings: Settings,
    models: Sequence[Path | str | None] = (None,),
    *,
    subjects: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """All metrics of ``models`` (None = ``settings.encoder``) on the eegmat sessions under ``data_dir``."""
    t0 = time.monotonic()
    sessions = [s for s in discover_sessions(data_dir, subjects) if s.labels == CONDITIONS]
    if len(sessions) < 2:
        raise DataError(
            f"{data_dir} holds {len(sessions)} rest+task session(s); eval encoder needs at least two eegmat "
            "subjects (SubjectNN_1.edf and SubjectNN_2.edf)."
        )
    folds: list[FoldResult] = []
    seen: dict[str, str] = {}
    for path in models:
        enc = settings.encoder if path is None else settings.encoder.model_copy(update={"model": Path(path)})
        model = EncoderModel.load(enc)
        fold = evaluate_fold(model, sessions, settings, progress)
        for s in fold.test:
            if s in seen:
                raise DataError(
                    f"{s} is held out by both {seen[s]} and {fold.model}; cross-validation models must hold out "
                    "disjoint subjects (train them with --val-subjects fold:K/N, K = 0..N-1)."
                )
            seen[s] = fold.model
        folds.append(fold)
    return summarise(folds, data_dir, settings, time.monotonic() - t0)


def summarise(folds: Sequence[FoldResult], data_dir: Path | str, settings: Settings, seconds: float) -> dict[str, Any]:
    """Per-subject table, per-feature summaries, the targets, codebook and distances (JSON-able)."""
    per_subject: dict[str, dict[str, Any]] = {}
    for k, fold in enumerate(folds):
        for s in fold.test:
            per_subject[s] = {"fold": k, **{f: round(fold.bacc[f][s], 4) for f in FEATURES}}
            if s in fold.token_distance:
                same, other = fold.token_distance[s]
                per_subject[s]["token_same"], per_subject[s]["token_other"] = round(same, 4), round(other, 4)
    summary = {}
    for f in FEATURES:
        vals = np.asarray([per_subject[s][f] for s in per_subject])
        y = np.concatenate([fold.pooled[f][0] for fold in folds])
        pred = np.concatenate([fold.pooled[f][1] for fold in folds])
        summary[f] = {
            "mean": round(float(vals.mean()), 4),
            "sd": round(float(vals.std()), 4),
            "min": round(float(vals.min()), 4),
            "pooled": round(balanced_accuracy(y, pred), 4),
        }
    strongest = max(BASELINE_FEATURES, key=lambda f: summary[f]["mean"])
    head = summary[HEADLINE]["mean"]
    k = folds[0].codebook_size
    dist = [v for f in folds for v in f.token_distance.values()]
    result: dict[str, Any] = {
        "data": str(data_dir),
        "models": [
            {"model": f.model, "version": f.version, "held_out": f.test, "trained_on": len(f.train)} for f in folds
        ],
        "subjects": sorted(per_subject),
        "windows": {c: int(sum(f.tokens[c].size for f in folds)) for c in CONDITIONS},
        "per_subject": per_subject,
        "probe": summary,
        "headline": HEADLINE,
        "strongest_baseline": strongest,
        "targets": {
            "bacc": TARGET_BACC,
            "bacc_met": head >= TARGET_BACC,
            "margin": TARGET_MARGIN,
            "margin_over_strongest": round(head - summary[strongest]["mean"], 4),
            "margin_met": head >= summary[strongest]["mean"] + TARGET_MARGIN,
        },
        "codebook": {
            "perplexity_per_fold": [round(f.perplexity, 2) for f in folds],
            "codes_used_per_fold": [f.codes_used for f in folds],
            "per_condition": _histograms(folds, k),
        },
        "token_distance": {
            "same_state": round(float(np.mean([d[0] for d in dist])), 4) if dist else None,
            "other_state": round(float(np.mean([d[1] for d in dist])), 4) if dist else None,
            "subjects_same_closer": int(sum(d[0] < d[1] for d in dist)),
            "subjects": len(dist),
        },
        "similarity": {
            key: round(float(np.nanmean([f.similarity[key] for f in folds])), 4) for key in folds[0].similarity
        },
        "seconds": round(seconds, 1),
        "settings": {
            "window": settings.signal.window,
            "hop": settings.signal.hop,
            "baseline": settings.signal.baseline,
        },
    }
    return result


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def format_report(r: dict[str, Any]) -> str:
    """The metrics as Markdown (printed, and written into the model card)."""
    models = r["models"]
    t = r["targets"]
    summary = r["probe"]
    strongest = r["strongest_baseline"]
    head = summary[r["headline"]]["mean"]
    lines = [
        "## Metrics (from `brainharmonic eval encoder`)",
        "",
        f"Data `{r['data']}`: {len(r['subjects'])} subjects tested, each by a model that never saw it "
        f"(self-supervised training included); {r['windows']['rest']} rest and {r['windows']['task']} task "
        f"windows after calibration ({r['settings']['window']:g} s windows every {r['settings']['hop']:g} s, "
        f"baseline {r['settings']['baseline']:g} s at the start of each rest+task session).",
        "",
        "| model | version | trained on (eegmat subjects) | held out |",
        "|---|---|---|---|",
        *(
            f"| `{Path(m['model']).name}` | {m['version']} | {m['trained_on']} | {', '.join(m['held_out'])} |"
            for m in models
        ),
        "",
        "### Rest vs mental arithmetic on never-seen subjects: linear probe, balanced accuracy",
        "",
        "Probe fitted on the windows of the subjects each model trained on, tested on its held-out subjects; "
        "every row uses the same probe, subjects and windows.",
        "",
        "| features | mean over subjects ± sd | worst subject | pooled windows |",
        "|---|---|---|---|",
    ]
    for f, desc in FEATURES.items():
        p = summary[f]
        mark = " (headline)" if f == r["headline"] else " (strongest baseline)" if f == strongest else ""
        lines.append(f"| {desc}{mark} | {p['mean']:.3f} ± {p['sd']:.3f} | {p['min']:.3f} | {p['pooled']:.3f} |")
    lines += [
        "",
        f"Strongest band-power baseline: {FEATURES[strongest]} ({summary[strongest]['mean']:.3f}). "
        f"Headline {head:.3f}: target >= {t['bacc']:.2f} **{'met' if t['bacc_met'] else 'missed'}**; "
        f"target >= strongest baseline + {t['margin']:.2f} ({summary[strongest]['mean'] + t['margin']:.3f}) "
        f"**{'met' if t['margin_met'] else 'missed'}** (margin {t['margin_over_strongest']:+.3f}).",
        "",
        "### Per subject (balanced accuracy; token distances = mean cosine distance between code vectors)",
        "",
        "| subject | fold | " + " | ".join(FEATURES) + " | tokens same state | tokens other state |",
        "|---|---|" + "---|" * len(FEATURES) + "---|---|",
    ]
    for s in r["subjects"]:
        row = r["per_subject"][s]
        lines.append(
            f"| {s} | {row['fold']} | "
            + " | ".join(f"{row[f]:.2f}" for f in FEATURES)
            + f" | {_fmt(row.get('token_same'))} | {_fmt(row.get('token_other'))} |"
        )
    cb = r["codebook"]
    td = r["token_distance"]
    lines += [
        "",
        "### Brain tokens on never-seen subjects",
        "",
        "Codebook perplexity per model on its held-out subjects: "
        + ", ".join(f"{p:.1f}" for p in cb["perplexity_per_fold"])
        + f" (codes used: {', '.join(map(str, cb['codes_used_per_fold']))}; target >= 16).",
        "",
        "| condition | windows | codes used | perplexity | most used tokens (share) |",
        "|---|---|---|---|---|",
    ]
    for c in CONDITIONS:
        h = cb["per_condition"][c]
        top = ", ".join(f"{i} ({s:.2f})" for i, s in h["top"])
        lines.append(f"| {c} | {h['windows']} | {h['codes_used']} | {h['perplexity']:.1f} | {top} |")
    lines += [
        "",
        f"Total variation distance between the rest and task token histograms: "
        f"{cb['per_condition']['total_variation_rest_vs_task']:.3f}.",
        f"Within a subject, tokens of the same state lie {_fmt(td['same_state'])} apart and tokens of the other "
        f"state {_fmt(td['other_state'])} (cosine distance of their code vectors, mean over subjects); "
        f"same state closer in {td['subjects_same_closer']} of {td['subjects']} subjects.",
    ]
    s = r["similarity"]
    lines += [
        "",
        "### Latent distances on never-seen subjects (cosine distance of global latents, mean over models)",
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
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="ONNX", help="Encoder to evaluate on the subjects it never saw.")
    which.add_argument(
        "--cv",
        nargs="+",
        metavar="ONNX",
        help="Cross-validation: models of one recipe, each trained with --val-subjects fold:K/N; "
        "every subject is tested by the model that held it out.",
    )
    p.add_argument("--subjects", metavar="LIST", help="Comma-separated subject names (default: all).")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: [encoder] threads).")
    p.add_argument("--json", metavar="OUT.json", help="Also write the metrics as JSON.")
    p.add_argument("--card", metavar="CARD.md", help="Write the metrics into this model card's metrics section.")
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")


def eval_encoder(args: argparse.Namespace) -> int:
    """`brainharmonic eval encoder`: print the metrics (optionally write JSON and the card)."""
    enc: dict[str, Any] = {"threads": args.threads} if args.threads else {}
    settings = load_settings(getattr(args, "config", None), **({"encoder": enc} if enc else {}))
    subjects = [s.strip() for s in args.subjects.split(",")] if args.subjects else None
    models: list[Path | str | None] = list(args.cv) if args.cv else [args.model]
    result = evaluate(args.data, settings, models, subjects=subjects, progress=not args.no_progress)
    parts = ["brainharmonic eval encoder", f"--data {args.data}"]
    if args.cv:
        parts.append("--cv " + " ".join(args.cv))
    elif args.model:
        parts.append(f"--model {args.model}")
    if args.subjects:
        parts.append(f"--subjects {args.subjects}")
    result["command"] = " ".join(parts)
    report = format_report(result)
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.card:
        write_section(args.card, "metrics", report)
    return 0
