"""`brainharmonic eval fmri-encoder`: what the fMRI latents tell about people the encoder never saw.

Every run of every subject goes through the runtime's chain (fMRI preset) and the ONNX encoder,
one latent per runtime window. Two linear probes (the class-balanced logistic regression of
:mod:`.probe`, one-vs-rest for several classes) are fitted on the encoder's *training* subjects and
tested on each held-out subject (named in the model's metadata): **rest vs task** (8 runs → 2
classes) and **which run** (8 classes: rest + 7 tasks; chance 0.125), both as balanced accuracy.
Next to them, the same probes on a **baseline** of per-network signal statistics over the same
volumes the encoder reads: each network's mean series → its mean, its std, and the network-network
correlations (8 networks: 8 + 8 + 28 features). Several models (``--model a.onnx b.onnx ...``, e.g.
the folds of a leave-two-subjects-out cross-validation) are scored each on its own held-out subjects.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..brain.fmri_encoder import FmriEncoderModel, model_order
from ..config import EncoderSettings
from ..errors import DataError, ModelError
from ..signal.channels import group_channels
from ..sources.fmri import fmri_settings
from .fmri_data import RunSeries, discover_runs, read_run, run_labels
from .modelcard import write_section
from .probe import balanced_accuracy, fit_probe, perplexity

BATCH = 64


@dataclass
class Features:
    """Per runtime window: subject, run class, latent, token and baseline features."""

    subject: np.ndarray
    label: np.ndarray
    latent: np.ndarray
    token: np.ndarray
    baseline: np.ndarray


def network_statistics(x: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """Baseline features of one window x (regions, volumes): per network mean, std; network correlations."""
    m = np.stack([x[list(g)].mean(axis=0) for g in groups])
    c = np.corrcoef(m)[np.triu_indices(len(groups), 1)]
    return np.concatenate([m.mean(axis=1), m.std(axis=1), np.nan_to_num(c)])


def window_features(model: FmriEncoderModel, runs: Sequence[RunSeries], classes: Sequence[str]) -> Features:
    """Latents (ONNX, batched), tokens and baseline features of every runtime window of ``runs``."""
    from ..events import SignalInfo

    spec = model.spec
    first = runs[0]
    info = SignalInfo(name=first.file.run, sfreq=1 / spec.tr, ch_names=first.ch_names, stype="fMRI")
    order = model_order(info, spec)
    groups = [list(g) for g in group_channels(first.ch_names).values()]
    mask = np.zeros((len(groups), spec.n_regions), np.float32)
    position = {int(ch): k for k, ch in enumerate(order)}
    for k, g in enumerate(groups):
        mask[k, [position[i] for i in g]] = 1.0
    subject, label, latent, token, base = [], [], [], [], []
    for r in runs:
        if r.ch_names != first.ch_names:
            raise DataError(f"{r.file.path} has other regions than {first.file.path}; evaluate one layout at a time.")
        xs = np.stack([r.series[:, e - spec.n_volumes : e] for e in r.ends])
        for a in range(0, len(xs), BATCH):
            glob, _, tok = model.encode(np.ascontiguousarray(xs[a : a + BATCH][:, order], np.float32), mask)
            latent.append(glob)
            token.append(tok)
        base.append(np.stack([network_statistics(x, groups) for x in xs]))
        subject += [r.file.subject] * len(xs)
        label += [classes.index(r.file.run)] * len(xs)
    return Features(
        np.asarray(subject), np.asarray(label), np.concatenate(latent), np.concatenate(token), np.concatenate(base)
    )


def multiclass_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n: int) -> np.ndarray:
    """One-vs-rest probes (one :func:`fit_probe` per class), prediction = the largest decision."""
    decisions = np.stack([fit_probe(x_train, (y_train == c).astype(int)).decision(x_test) for c in range(n)], axis=1)
    return np.asarray(decisions.argmax(axis=1))


@dataclass(frozen=True)
class SubjectScore:
    subject: str
    model: str
    rest_latent: float
    rest_baseline: float
    run_latent: float
    run_baseline: float
    perplexity: float
    windows: int


def score_model(model: FmriEncoderModel, f: Features, n_classes: int) -> list[SubjectScore]:
    """Probe scores on each of ``model``'s held-out subjects (probes fitted on its training subjects)."""
    train = [s for s in model.model.meta.get("train_subjects", "").split(",") if s]
    test = [s for s in model.model.meta.get("test_subjects", "").split(",") if s]
    if not train or not test:
        raise ModelError(
            f"{model.model.path} names no held-out subjects in its metadata; train it with --test-subjects."
        )
    is_train = np.isin(f.subject, train)
    rest = (f.label > 0).astype(int)
    out = []
    for s in test:
        t = f.subject == s
        if not t.any():
            raise DataError(f"Held-out subject {s} of {model.model.path.name} is not in the data; pass its --data.")
        scores = []
        for x in (f.latent, f.baseline):
            rest_pred = fit_probe(x[is_train], rest[is_train]).predict(x[t])
            run_pred = multiclass_predict(x[is_train], f.label[is_train], x[t], n_classes)
            scores += [balanced_accuracy(rest[t], rest_pred), balanced_accuracy(f.label[t], run_pred)]
        out.append(
            SubjectScore(
                s, model.model.path.name, scores[0], scores[2], scores[1], scores[3],
                perplexity(f.token[t], model.spec.codebook_size), int(t.sum()),
            )
        )  # fmt: skip
    return out


def add_eval_fmri_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="DIR", help="Folder of <subject>/<run>.npy HCP region series.")
    p.add_argument(
        "--model", nargs="+", metavar="ONNX", help="fMRI encoder(s) to score (default: models/fmri_encoder.onnx)."
    )
    p.add_argument("--card", metavar="MD", help="Also write the metrics section of this model card.")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default 1).")


def eval_fmri_encoder(args: argparse.Namespace) -> int:
    settings = fmri_settings()
    paths = args.model or [None]
    models = [FmriEncoderModel.load(EncoderSettings(fmri_model=p, threads=args.threads)) for p in paths]
    files = discover_runs(args.data)
    classes = run_labels(files)
    runs = [read_run(f, settings.signal) for f in files]
    scores: list[SubjectScore] = []
    for model in models:
        scores += score_model(model, window_features(model, runs, classes), len(classes))
    text = metrics_section(scores, classes, args.data, [str(p or "models/fmri_encoder.onnx") for p in paths])
    print(text)
    if args.card:
        write_section(Path(args.card), "metrics", text, title="# fMRI encoder: model card")
    return 0


def metrics_section(scores: Sequence[SubjectScore], classes: Sequence[str], data: str, models: Sequence[str]) -> str:
    rows = [
        f"| {s.subject} | {s.model} | {s.windows} | {s.rest_latent:.3f} | {s.rest_baseline:.3f} | "
        f"{s.run_latent:.3f} | {s.run_baseline:.3f} | {s.perplexity:.1f} |"
        for s in scores
    ]

    def mean(attr: str) -> str:
        v = np.array([getattr(s, attr) for s in scores])
        return f"{v.mean():.3f} ± {v.std():.3f}"

    return "\n".join(
        [
            "## Metrics (from `brainharmonic eval fmri-encoder`)",
            "",
            f"Command: `brainharmonic eval fmri-encoder --data {data} --model {' '.join(models)}`. Each subject below "
            "was held out of all training of the model named next to it; the probes were fitted on that model's "
            f"training subjects. Classes: {', '.join(classes)} (rest vs task: 1 vs 7 runs; run: 8-way, chance "
            "0.125). Balanced accuracy per runtime window (fMRI preset: 100 s windows every 1.44 s).",
            "",
            "| held-out subject | model | windows | rest vs task: latent | rest vs task: network stats | "
            "run (8-way): latent | run (8-way): network stats | token perplexity |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            f"| **mean ± sd** | | | **{mean('rest_latent')}** | {mean('rest_baseline')} | **{mean('run_latent')}** | "
            f"{mean('run_baseline')} | {mean('perplexity')} |",
        ]
    )
