"""The musical latent space, measured: style separation, controllability, and its summary file.

* **style separation** – 4-bar segments (mean of the 4 bar posterior means) of classical and
  jazz tracks, 5-nearest-neighbour vote, 5 folds grouped by file (no piece in both the neighbour
  pool and the scored fold); accuracy and balanced accuracy, next to 26 hand-made features
  measured the same way. The headline scores only segments of val + test files (the encoder never
  saw them) against a pool of every file; see :func:`style_separation` for the other protocols.
Controllability and the PCA summary use val + test bars only:

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
from .generator_data import SPLITS, Corpus
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

    def subset(self, rows: np.ndarray) -> BarTable:
        return BarTable(
            self.mu[rows], self.attrs[rows], self.track[rows], self.file[rows], self.style[rows], self.split[rows]
        )


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


@dataclass
class Segments:
    """Non-overlapping 4-bar segments with notes in every bar: latent features (mean of the bar
    posterior means), style, file, split, and where they start (track, first bar row of the table)."""

    feats: np.ndarray
    style: np.ndarray
    file: np.ndarray
    split: np.ndarray
    track: np.ndarray
    first: np.ndarray


def segments(t: BarTable, length: int = 4) -> Segments:
    rows: list[tuple[int, int]] = []  # (track, row of its first bar in the table)
    for tr in np.unique(t.track):
        idx = np.flatnonzero(t.track == tr)
        for s in range(0, idx.size - length + 1, length):
            seg = idx[s : s + length]
            if np.all(t.attrs[seg, 0] > 0):
                rows.append((int(tr), int(seg[0])))
    first = np.asarray([r for _, r in rows], dtype=np.int64)
    feats = np.stack([t.mu[f : f + length].mean(axis=0) for f in first]) if rows else np.zeros((0, t.mu.shape[1]))
    return Segments(
        feats,
        t.style[first],
        t.file[first],
        t.split[first],
        np.asarray([tr for tr, _ in rows], dtype=np.int64),
        first,
    )


def _notes(ids: np.ndarray, vocab: Vocab) -> np.ndarray:
    """(n, 5) per note: bar, sixteenth position, pitch, velocity, duration (beats)."""
    kinds = [vocab.KINDS[k] for k in vocab.kind[ids]]
    out: list[tuple[float, float, float, float, float]] = []
    bar, pos, pitch, vel = -1, 0.0, None, 0.0
    for tok, kind in zip(ids, kinds, strict=True):
        if kind == "bar":
            bar += 1
            pos = 0.0
        elif kind == "position":
            pos = vocab.value[tok]
        elif kind == "pitch":
            pitch = vocab.value[tok]
        elif kind == "velocity":
            vel = vocab.value[tok]
        elif kind == "duration" and pitch is not None:
            out.append((max(bar, 0), pos, pitch, vel, vocab.value[tok]))
            pitch = None
    return np.asarray(out, dtype=np.float64).reshape(-1, 5)


def handmade_features(notes: np.ndarray, bars: int = 4) -> np.ndarray:
    """26 descriptive features of a passage's notes (n, 5), the baseline the latent is compared with.

    Pitch-class profile sorted by weight (12, key-free), pitch-class entropy, notes per bar, mean /
    std / range of pitch, notes per onset, mean / std of duration, mean velocity, share of onsets on
    the beat / the off-beat eighth / the sixteenths, mean top-line interval, mean inter-onset gap.
    """
    if len(notes) == 0:
        return np.zeros(26)
    pitch = notes[:, 2]
    pc = np.bincount((pitch % 12).astype(int), minlength=12) / len(notes)
    nz = pc[pc > 0]
    onset = notes[:, 0] * 16 + notes[:, 1]
    uniq = np.unique(onset)
    sub = notes[:, 1] % 4
    top = np.array([pitch[onset == o].max() for o in uniq])
    interval = float(np.abs(np.diff(top)).mean()) if uniq.size > 1 else 0.0
    gap = float(np.diff(uniq).mean()) if uniq.size > 1 else 0.0
    return np.r_[
        np.sort(pc)[::-1],
        -(nz * np.log2(nz)).sum(),
        len(notes) / bars,
        pitch.mean(),
        pitch.std(),
        np.ptp(pitch),
        len(notes) / uniq.size,
        notes[:, 4].mean(),
        notes[:, 4].std(),
        notes[:, 3].mean(),
        np.mean(sub == 0),
        np.mean(sub == 2),
        np.mean(sub % 2 == 1),
        interval,
        gap,
    ]


def handmade_table(seg: Segments, t: BarTable, corpus: Corpus, vocab: Vocab, length: int = 4) -> np.ndarray:
    """:func:`handmade_features` of every segment (n_segments, 26)."""
    out = np.zeros((seg.first.size, 26))
    for tr in np.unique(seg.track):
        notes = _notes(corpus.track(int(tr)).astype(np.int64), vocab)
        row0 = int(np.flatnonzero(t.track == tr)[0])
        for i in np.flatnonzero(seg.track == tr):
            b = int(seg.first[i]) - row0
            out[i] = handmade_features(notes[(notes[:, 0] >= b) & (notes[:, 0] < b + length)], length)
    return out


def knn_grouped_accuracy(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    query: np.ndarray | None = None,
    k: int = 5,
    folds: int = 5,
    seed: int = 0,
) -> tuple[float, float]:
    """k-NN (Euclidean, standardised features) accuracy and balanced accuracy, folds grouped by ``groups``.

    Every row is a possible neighbour of rows in other folds; only rows where ``query`` is true
    (default: all) are classified and scored. Binary labels (0/1); a tie of votes cannot happen (k odd).
    """
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    ug = np.unique(groups)
    fold_of = dict(zip(ug, np.random.default_rng(seed).permutation(ug.size) % folds, strict=True))
    f = np.array([fold_of[g] for g in groups])
    q = np.ones(y.size, bool) if query is None else query
    sq = (x**2).sum(1)
    pred = np.full(y.size, -1)
    for i in range(folds):
        te, tr = np.flatnonzero((f == i) & q), np.flatnonzero(f != i)
        for s in range(0, te.size, 2048):  # chunks keep the distance matrix small
            b = te[s : s + 2048]
            d = sq[b, None] - 2.0 * x[b] @ x[tr].T + sq[None, tr]
            nn = np.argpartition(d, k, axis=1)[:, :k]
            pred[b] = (y[tr][nn].mean(axis=1) > 0.5).astype(int)
    m = pred >= 0
    acc = float((pred[m] == y[m]).mean())
    bal = float(np.mean([(pred[m & (y == c)] == c).mean() for c in np.unique(y[m])]))
    return acc, bal


def style_separation(seg: Segments, hand: np.ndarray, corpus: Corpus) -> dict[str, dict[str, float | int]]:
    """Classical vs jazz 5-NN under three protocols, for the latent and the 26 hand-made features.

    * ``corpus_pool_heldout_queries`` (the headline): neighbours from every file of the corpus,
      scored only on segments of files the generator never trained on (val + test);
    * ``all_files``: every segment scored (the protocol a feature baseline on a corpus uses);
    * ``heldout_only``: neighbours and queries from val + test files alone (a pool of ~90 files).
    Folds are always grouped by file.
    """
    cj = [corpus.styles.index(s) for s in ("classical", "jazz") if s in corpus.styles]
    out: dict[str, dict[str, float | int]] = {}
    if len(cj) < 2:
        return out
    keep = np.isin(seg.style, cj)
    y = (seg.style[keep] == cj[1]).astype(int)
    g = seg.file[keep]
    held = np.isin(seg.split[keep], [SPLITS.index("val"), SPLITS.index("test")])
    protocols = {"corpus_pool_heldout_queries": (None, held), "all_files": (None, None), "heldout_only": (held, None)}
    for name, (subset, query) in protocols.items():
        rows = np.ones(y.size, bool) if subset is None else subset
        qs = None if query is None else query[rows]
        n_q = int(rows.sum() if qs is None else qs.sum())
        if np.unique(g[rows]).size < 5 or n_q < 20 or np.unique(y[rows]).size < 2:
            continue
        for label, x in (("latent", seg.feats[keep]), ("handmade26", hand[keep])):
            acc, bal = knn_grouped_accuracy(x[rows], y[rows], g[rows], qs)
            out.setdefault(name, {"segments": n_q, "files": int(np.unique(g[rows]).size)})
            out[name][f"{label}_acc"] = acc
            out[name][f"{label}_balanced_acc"] = bal
    return out


def controllability(t: BarTable) -> dict[str, dict[str, float]]:
    """Spearman ρ of each attribute with the best latent dim and with a val-fitted direction (on test)."""
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
    heldout = all(corpus.tracks_in(s).size for s in ("val", "test"))
    t = bar_table(model, corpus, vocab, SPLITS)
    report: dict[str, object] = {"bars": int(t.mu.shape[0])}
    seg = segments(t)
    style = style_separation(seg, handmade_table(seg, t, corpus, vocab), corpus)
    if style:
        report["style_knn5"] = style
        head = style.get("corpus_pool_heldout_queries") or style.get("all_files") or {}
        report["style_knn5_acc"] = head.get("latent_acc")
        report["style_knn5_handmade_acc"] = head.get("handmade26_acc")
    ev = t.subset(np.isin(t.split, [SPLITS.index("val"), SPLITS.index("test")])) if heldout else t
    if heldout:
        report["controllability"] = controllability(ev)
    if out is not None:
        mu, attrs = ev.mu, ev.attrs
        space = Space.of(mu)
        dirs = {}
        for j, name in enumerate(ATTRIBUTES):
            ok = np.isfinite(attrs[:, j])
            dirs[f"dir_{name}"] = direction(mu[ok], attrs[ok, j])
        np.savez(out, mean=space.mean, axes=space.axes, std=space.std, **dirs)  # type: ignore[arg-type]
    return report


def main(argv: list[str] | None = None) -> int:
    """Measure the latent space of a trained checkpoint again; ``--update`` rewrites its summary's
    ``latent_space`` entry (the .npz summary is left as training wrote it)."""
    import argparse
    import json

    from ..music.tokens import DEFAULT_TOKENIZER
    from .generator_data import load_or_build

    p = argparse.ArgumentParser(prog="python -m brainharmonic_rt.training.generator_eval", description=main.__doc__)
    p.add_argument("--pt", type=Path, default=DEFAULT_TOKENIZER.with_name("generator.pt"))
    p.add_argument("--midi", type=Path, required=True, help="MIDI corpus folder the checkpoint was trained on")
    p.add_argument("--cache", type=Path, default=None, help="tokenised corpus cache (.npz) to read/write")
    p.add_argument("--update", type=Path, default=None, help="training summary (.train.json) to update")
    args = p.parse_args(argv)
    corpus = load_or_build(args.midi, args.cache)
    report = evaluate_latent_space(args.pt, corpus, Vocab.from_file(DEFAULT_TOKENIZER), None)
    print(json.dumps(report, indent=1))
    if args.update is not None:
        record = json.loads(args.update.read_text())
        record["latent_space"] = report
        args.update.write_text(json.dumps(record, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
