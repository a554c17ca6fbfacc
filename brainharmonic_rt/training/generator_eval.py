"""The musical latent space, measured: style separation, controllability, and its summary file.

Everything here runs on files the generator never trained on (val + test splits):

* **style separation** – 4-bar segments (mean of the 4 bar posterior means) of classical and
  jazz tracks, 5-nearest-neighbour vote, 5 folds grouped by file (no piece in both train and
  test folds); accuracy and balanced accuracy.
* **controllability** – per bar: note density (notes / bar), register (mean pitch), polyphony
  (notes per distinct onset). Spearman ρ of each with (a) the best single latent dimension and
  (b) a linear direction fitted on the val split and measured on the test split.
* the aggregate posterior's PCA (:class:`~brainharmonic_rt.brain.latent_map.Space`) and the three
  unit directions, written to ``models/generator_latent.npz`` for the latent map and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from ..brain.latent_map import Space
from ..music.tokens import Vocab, bar_index
from .generator_data import Corpus
from .generator_model import GenConfig, Generator

ATTRIBUTES = ("density", "register", "polyphony")


def load_checkpoint(path: Path) -> Generator:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = Generator(GenConfig(**ck["config"]))
    model.load_state_dict(ck["state"])
    return model.eval()


@dataclass
class BarTable:
    """Per bar of the tracks of some splits: mu (n, D), attributes (n, 3), track, file, style, split."""

    mu: np.ndarray
    attrs: np.ndarray
    track: np.ndarray
    file: np.ndarray
    style: np.ndarray
    split: np.ndarray


def bar_attributes(ids: np.ndarray, vocab: Vocab) -> np.ndarray:
    """(n_bars, 3): notes per bar, mean pitch (NaN if none), notes per distinct onset (NaN if none)."""
    bars = bar_index(ids, vocab.bar)
    n = int(bars.max()) + 1 if ids.size else 0
    kinds = vocab.kind[ids]
    pitch_k = vocab.KINDS.index("pitch")
    pos_k = vocab.KINDS.index("position")
    out = np.full((n, 3), np.nan)
    dens = np.bincount(bars[kinds == pitch_k], minlength=n).astype(float)
    out[:, 0] = dens
    psum = np.bincount(bars[kinds == pitch_k], weights=vocab.value[ids[kinds == pitch_k]], minlength=n)
    onsets = np.bincount(bars[kinds == pos_k], minlength=n).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, 1] = np.where(dens > 0, psum / dens, np.nan)
        out[:, 2] = np.where(onsets > 0, dens / onsets, np.nan)
    return out


@torch.no_grad()
def bar_table(model: Generator, corpus: Corpus, vocab: Vocab, splits: tuple[str, ...]) -> BarTable:
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("mu", "attrs", "track", "file", "style", "split")}
    for sp in splits:
        for tr in corpus.tracks_in(sp):
            ids = corpus.track(int(tr)).astype(np.int64)
            if ids.size < 8 or corpus.program[tr] == 128:
                continue
            bars = bar_index(ids, vocab.bar)
            nb = int(bars.max()) + 1
            mu, _ = model.encoder(torch.from_numpy(ids)[None], torch.from_numpy(bars)[None], nb)
            rows["mu"].append(mu[0].numpy())
            rows["attrs"].append(bar_attributes(ids, vocab))
            for k, val in (
                ("track", tr),
                ("file", corpus.file[tr]),
                ("style", corpus.style[tr]),
                ("split", corpus.split[tr]),
            ):
                rows[k].append(np.full(nb, val))
    return BarTable(*(np.concatenate(rows[k]) for k in ("mu", "attrs", "track", "file", "style", "split")))


def segments(t: BarTable, length: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-overlapping ``length``-bar segments with notes in every bar: features (mean mu), style, file."""
    feats, style, file = [], [], []
    for tr in np.unique(t.track):
        idx = np.flatnonzero(t.track == tr)
        for s in range(0, idx.size - length + 1, length):
            seg = idx[s : s + length]
            if np.all(t.attrs[seg, 0] > 0):
                feats.append(t.mu[seg].mean(axis=0))
                style.append(t.style[seg[0]])
                file.append(t.file[seg[0]])
    return np.asarray(feats), np.asarray(style), np.asarray(file)


def knn_grouped_accuracy(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int = 5, folds: int = 5, seed: int = 0
) -> tuple[float, float]:
    """k-NN (Euclidean, standardised features) accuracy and balanced accuracy, folds grouped by ``groups``."""
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    ug = np.unique(groups)
    fold_of = dict(zip(ug, np.random.default_rng(seed).permutation(ug.size) % folds, strict=True))
    f = np.array([fold_of[g] for g in groups])
    pred = np.empty_like(y)
    for i in range(folds):
        te, tr = f == i, f != i
        d = ((x[te, None, :] - x[None, tr, :]) ** 2).sum(-1)
        nn = np.argsort(d, axis=1)[:, :k]
        votes = y[tr][nn]
        pred[te] = np.array([np.bincount(v).argmax() for v in votes])
    acc = float((pred == y).mean())
    bal = float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))
    return acc, bal


def controllability(t: BarTable) -> dict[str, dict[str, float]]:
    """Spearman ρ of each attribute with the best latent dim and with a val-fitted direction (on test)."""
    from ..training.generator_data import SPLITS

    out: dict[str, dict[str, float]] = {}
    for j, name in enumerate(ATTRIBUTES):
        ok = np.isfinite(t.attrs[:, j])
        rhos = [spearmanr(t.mu[ok, d], t.attrs[ok, j]).statistic for d in range(t.mu.shape[1])]
        best = int(np.nanargmax(np.abs(rhos)))
        val = ok & (t.split == SPLITS.index("val"))
        test = ok & (t.split == SPLITS.index("test"))
        w = direction(t.mu[val], t.attrs[val, j])
        rho_dir = spearmanr(t.mu[test] @ w, t.attrs[test, j]).statistic
        out[name] = {"best_dim": best, "rho_best_dim": float(rhos[best]), "rho_direction_test": float(rho_dir)}
    return out


def direction(mu: np.ndarray, y: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """Unit vector w (D,) of the ridge regression of ranks of y on mu."""
    from scipy.stats import rankdata

    r = rankdata(y) / y.size - 0.5
    xc = mu - mu.mean(0)
    w = np.linalg.solve(xc.T @ xc + ridge * np.eye(mu.shape[1]), xc.T @ r)
    return w / np.linalg.norm(w)


def evaluate_latent_space(pt: Path, corpus: Corpus, vocab: Vocab, out: Path | None) -> dict[str, object]:
    """Compute the latent-space report; write the summary .npz when ``out`` is given."""
    torch.set_num_threads(1)
    model = load_checkpoint(pt)
    splits = ("val", "test") if all(corpus.tracks_in(s).size for s in ("val", "test")) else ("train", "val", "test")
    t = bar_table(model, corpus, vocab, splits)
    report: dict[str, object] = {"splits": list(splits), "bars": int(t.mu.shape[0])}
    cj = [corpus.styles.index(s) for s in ("classical", "jazz") if s in corpus.styles]
    x, y, g = segments(t)
    keep = np.isin(y, cj) if x.size else np.zeros(0, bool)
    if len(cj) == 2 and np.unique(g[keep]).size >= 5 and keep.sum() >= 20:
        acc, bal = knn_grouped_accuracy(x[keep], (y[keep] == cj[-1]).astype(int), g[keep])
        report.update(
            segments=int(keep.sum()),
            files=int(np.unique(g[keep]).size),
            style_knn5_acc=acc,
            style_knn5_balanced_acc=bal,
        )
    if splits == ("val", "test"):
        report["controllability"] = controllability(t)
    if out is not None:
        space = Space.of(t.mu)
        dirs = {}
        for j, name in enumerate(ATTRIBUTES):
            ok = np.isfinite(t.attrs[:, j])
            dirs[f"dir_{name}"] = direction(t.mu[ok], t.attrs[ok, j])
        np.savez(out, mean=space.mean, axes=space.axes, std=space.std, **dirs)  # type: ignore[arg-type]
    return report
