"""Corpus likeness: how close generated music is to real pieces, feature by feature (after MGEval).

Both sets are cut into segments of ``SEGMENT_BEATS`` beats; each segment gets six features:

============  ==================================================================
pitch_range   highest − lowest pitched note (semitones)
ioi           mean inter-onset interval (beats) of the segment's distinct onsets
note_length   histogram of note lengths (9 bins, sixteenths to > 4 beats), normalised
pitch_class   pitch-class histogram (12), normalised
interval      histogram of melodic intervals within each track's top line (|Δ| 0..12, > 12), normalised
polyphony     mean number of notes sounding at the segment's onsets
============  ==================================================================

As in MGEval (Yang & Lerch 2018), per feature the *intra-set* distances of the reference set
(real pieces, pairwise Euclidean) and the *inter-set* distances (generated × reference) are each
smoothed by a Gaussian kernel density; their **overlap** (the area under the smaller density, 0..1)
says how much a generated segment looks like one more real segment. The mean over features is
the likeness score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .music_metrics import PieceNotes
from .voice_leading import top_lines

SEGMENT_BEATS = 32.0
FEATURES = ("pitch_range", "ioi", "note_length", "pitch_class", "interval", "polyphony")
_LENGTH_EDGES = np.array([0.0, 0.3, 0.6, 0.9, 1.2, 1.7, 2.5, 3.5, 4.5, np.inf])
MAX_PAIRS = 20_000


def segments(notes: PieceNotes, beats: float = SEGMENT_BEATS, min_notes: int = 8) -> list[PieceNotes]:
    """The piece cut into consecutive windows of ``beats`` (notes by onset), those with ``min_notes`` or more."""
    out: list[PieceNotes] = []
    if notes.onset.size == 0:
        return out
    start = float(notes.onset.min())
    n = int(np.ceil((float(notes.onset.max()) - start + 1e-9) / beats)) or 1
    for k in range(n):
        sel = (notes.onset >= start + k * beats) & (notes.onset < start + (k + 1) * beats)
        if sel.sum() >= min_notes:
            out.append(
                PieceNotes(notes.onset[sel], notes.duration[sel], notes.pitch[sel], notes.drum[sel], notes.track[sel])
            )
    return out


def features(seg: PieceNotes) -> dict[str, np.ndarray]:
    """The six features of one segment (each a vector; scalars have shape (1,))."""
    pitched = ~seg.drum
    pi = seg.pitch[pitched]
    on = np.unique(np.round(seg.onset, 4))
    ioi = np.diff(on)
    lengths = np.histogram(seg.duration[pitched], _LENGTH_EDGES)[0].astype(float)
    pcs = np.bincount(pi % 12, minlength=12).astype(float)
    iv = np.zeros(14)
    for _, _, line in top_lines(seg):
        d = np.minimum(np.abs(np.diff(line)), 13)
        iv += np.bincount(d, minlength=14)[:14]
    end = seg.onset + seg.duration
    poly = [int(((seg.onset <= t + 1e-6) & (end > t + 1e-6)).sum()) for t in on]
    return {
        "pitch_range": np.array([float(pi.max() - pi.min()) if pi.size else 0.0]),
        "ioi": np.array([float(ioi.mean()) if ioi.size else 0.0]),
        "note_length": lengths / max(lengths.sum(), 1.0),
        "pitch_class": pcs / max(pcs.sum(), 1.0),
        "interval": iv / max(iv.sum(), 1.0),
        "polyphony": np.array([float(np.mean(poly)) if poly else 0.0]),
    }


def _distances(a: np.ndarray, b: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Euclidean distances of rows: all pairs within ``a`` (b None) or between a and b, at most MAX_PAIRS."""
    if b is None:
        i, j = np.triu_indices(a.shape[0], 1)
    else:
        i, j = (x.ravel() for x in np.meshgrid(np.arange(a.shape[0]), np.arange(b.shape[0]), indexing="ij"))
    if i.size > MAX_PAIRS:
        keep = rng.choice(i.size, MAX_PAIRS, replace=False)
        i, j = i[keep], j[keep]
    other = a if b is None else b
    return np.asarray(np.linalg.norm(a[i] - other[j], axis=1))


def overlap(x: np.ndarray, y: np.ndarray, grid: int = 512) -> float:
    """Overlapping area (0..1) of the Gaussian kernel densities of the samples x and y (Scott's bandwidth)."""
    from scipy.stats import gaussian_kde

    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 2 or y.size < 2:
        return float("nan")
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    if hi - lo < 1e-12:
        return 1.0
    pad = 0.25 * (hi - lo)
    z = np.linspace(lo - pad, hi + pad, grid)

    def density(s: np.ndarray) -> np.ndarray:
        if np.ptp(s) < 1e-12:  # a constant sample: a narrow bump at its value
            return np.asarray(np.exp(-0.5 * ((z - s[0]) / (0.01 * (hi - lo))) ** 2))
        return np.asarray(gaussian_kde(s)(z))

    p, q = density(x), density(y)
    dz = z[1] - z[0]
    p, q = p / (p.sum() * dz), q / (q.sum() * dz)
    return float(np.minimum(p, q).sum() * dz)


def likeness(generated: Sequence[PieceNotes], reference: Sequence[PieceNotes], seed: int = 0) -> dict[str, float]:
    """Per-feature overlap of the inter-set (generated × reference) and the reference intra-set distance
    densities over segments, and their mean (``mean``)."""
    rng = np.random.default_rng(seed)
    gen = [features(s) for p in generated for s in segments(p)]
    ref = [features(s) for p in reference for s in segments(p)]
    out: dict[str, float] = {}
    if len(gen) < 2 or len(ref) < 3:
        return {f: float("nan") for f in (*FEATURES, "mean")}
    for f in FEATURES:
        g = np.stack([x[f] for x in gen])
        r = np.stack([x[f] for x in ref])
        out[f] = overlap(_distances(r, None, rng), _distances(g, r, rng))
    out["mean"] = float(np.nanmean([out[f] for f in FEATURES]))
    out["segments_generated"] = float(len(gen))
    out["segments_reference"] = float(len(ref))
    return out
