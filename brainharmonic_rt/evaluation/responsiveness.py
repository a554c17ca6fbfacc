"""Does the music answer the brain? Per-bar music features, rest/task labels, a classifier, what moves.

A session (eegmat: a subject's rest recording, then their task recording, as lived) is rendered
offline; every bar the composer started becomes one row of music features:

===============  ===========================================================================
density          note onsets per beat (all notes)
register         mean pitch of the pitched notes (MIDI number)
pitch_range      highest − lowest pitched note (semitones)
velocity         mean velocity
duration         mean length of the pitched notes (beats)
polyphony_mean   notes sounding, averaged over the bar's time
polyphony_max    most notes sounding at once in the bar
voices           channels with an onset in the bar
tempo            the bar's tempo (BPM)
mode             1 for a major centre, 0 for minor
===============  ===========================================================================

A bar's label is the recording whose signal made it: the windows that composed it end in
``[start − lookahead − hop, end − lookahead)``; together with the window length and a settling
margin (the smoothing of the brain features) that stretch of signal must lie in one recording,
and no composing window may still be calibrating, else the bar is left out. A class-balanced
logistic probe (:mod:`.probe`, standardised on the training folds only) then tells rest
from task bars of subjects it never saw. :func:`what_moves` says, per feature, how far and how
consistently it moves from rest to task, and with which brain band it goes up and down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from ..config import Settings
from ..errors import DataError
from ..events import BrainState, Note
from ..music.constants import BEATS_PER_BAR, DRUM_CHANNEL
from .music_metrics import TIME_EPS, Metrics, end_retriggers, evaluate, from_notes
from .probe import ProbeScore, leave_subjects_out, subject_folds
from .sessions import SessionFiles, open_session

FEATURES = (
    "density",
    "register",
    "pitch_range",
    "velocity",
    "duration",
    "polyphony_mean",
    "polyphony_max",
    "voices",
    "tempo",
    "mode",
)
SETTLE = 2.0  # s after a change of recording (or calibration) before a bar is labelled


class BarLike(Protocol):
    """What this module needs of a bar record (``music.harmony.BarPlan``)."""

    @property
    def start(self) -> float: ...
    @property
    def tempo(self) -> float: ...
    @property
    def mode(self) -> str: ...


def bar_bounds(bars: Sequence[BarLike]) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (music s) of each bar, shape (n,): a bar ends where the next starts, the last after 4 beats."""
    start = np.array([b.start for b in bars], float)
    end = np.empty_like(start)
    if start.size:
        end[:-1] = start[1:]
        end[-1] = start[-1] + BEATS_PER_BAR * 60.0 / bars[-1].tempo
    return start, end


def bar_features(notes: Sequence[Note], bars: Sequence[BarLike]) -> np.ndarray:
    """Music features (n_bars, len(FEATURES)); NaN where a bar has no note to measure (e.g. register)."""
    start, end = bar_bounds(bars)
    out = np.full((start.size, len(FEATURES)), np.nan)
    if start.size == 0:
        return out
    on = np.array([n.time for n in notes], float)
    du = np.array([n.duration for n in notes], float)
    pi = np.array([n.pitch for n in notes], np.int64)
    ve = np.array([n.velocity for n in notes], float)
    ch = np.array([n.channel for n in notes], np.int64)
    du = end_retriggers(on, du, ch, pi)  # as the scheduler plays them
    order = np.argsort(on, kind="stable")
    on, du, pi, ve, ch = on[order], du[order], pi[order], ve[order], ch[order]
    off = on + du
    off_sorted = np.sort(off)
    pitched = ch != DRUM_CHANNEL
    eps = 1e-6  # s
    lo = np.searchsorted(on, start - eps)
    hi = np.searchsorted(on, end - eps)
    col = {k: i for i, k in enumerate(FEATURES)}
    for k, bar in enumerate(bars):
        a, b = start[k], end[k]
        spb = 60.0 / bar.tempo
        sel = slice(lo[k], hi[k])
        p_on = pi[sel][pitched[sel]]
        row = out[k]
        row[col["density"]] = (hi[k] - lo[k]) / max((b - a) / spb, 1e-9)
        if p_on.size:
            row[col["register"]] = p_on.mean()
            row[col["pitch_range"]] = p_on.max() - p_on.min()
            row[col["duration"]] = du[sel][pitched[sel]].mean() / spb
        if hi[k] > lo[k]:
            row[col["velocity"]] = ve[sel].mean()
        # time-averaged and peak polyphony over [a, b) (all notes, drums included)
        overlap = np.clip(np.minimum(off[: hi[k]], b) - np.maximum(on[: hi[k]], a), 0.0, None)
        row[col["polyphony_mean"]] = overlap.sum() / max(b - a, 1e-9)
        points = np.concatenate([[a], on[sel]])
        sounding = np.searchsorted(on, points + eps, side="right") - np.searchsorted(
            off_sorted, points + TIME_EPS * spb, side="right"
        )
        row[col["polyphony_max"]] = max(int(sounding.max()), 0)
        row[col["voices"]] = np.unique(ch[sel]).size
        row[col["tempo"]] = bar.tempo
        row[col["mode"]] = 1.0 if bar.mode == "major" else 0.0
    return out


def bar_brain(states: Sequence[BrainState], bars: Sequence[BarLike], lookahead: float, hop: float) -> dict[str, Any]:
    """Band z-scores (mean over groups and over the windows that composed each bar): (n_bars, n_bands)."""
    start, end = bar_bounds(bars)
    t = np.array([s.t_end for s in states], float)
    bands: tuple[str, ...] = ()
    for s in states:
        if s.groups:
            bands = tuple(s.z_mean)
            break
    z = np.array([[s.z_mean.get(b, np.nan) if s.groups else np.nan for b in bands] for s in states], float)
    out = np.full((start.size, len(bands)), np.nan)
    if t.size and bands:
        lo = np.searchsorted(t, start - lookahead - hop)
        hi = np.searchsorted(t, end - lookahead)
        for k in range(start.size):
            if hi[k] > lo[k]:
                with np.errstate(all="ignore"):
                    out[k] = np.nanmean(z[lo[k] : hi[k]], axis=0) if np.isfinite(z[lo[k] : hi[k]]).any() else np.nan
    return {"bands": bands, "z": out}


def bar_labels(
    bars: Sequence[BarLike],
    seg_starts: np.ndarray,
    seg_ends: np.ndarray,
    *,
    lookahead: float,
    hop: float,
    window: float,
    calibrated_from: float,
    settle: float = SETTLE,
) -> np.ndarray:
    """Recording index (n_bars,) of each bar, −1 where its signal straddles two recordings or calibration.

    seg_starts, seg_ends : (n_recordings,) session seconds of each recording.
    calibrated_from : session time after the last calibrating window's end.
    """
    start, end = bar_bounds(bars)
    c0 = start - lookahead - hop  # earliest end of a window composing the bar
    c1 = np.minimum(end - lookahead, seg_ends[-1]) if seg_ends.size else end - lookahead
    e0 = c0 - window - settle
    label = np.full(start.size, -1, np.int64)
    for k, (a, b) in enumerate(zip(seg_starts, seg_ends, strict=True)):
        label[(e0 >= a) & (c1 <= b) & (c1 > c0)] = k
    label[c0 - settle <= calibrated_from] = -1
    return label


@dataclass
class SessionRender:
    """One rendered session with what the metrics need."""

    subject: str
    mode: str
    labels: tuple[str, ...]  #: name of each recording, in playing order
    seg_starts: np.ndarray  #: (n_recordings,) session s
    seg_ends: np.ndarray
    notes: list[Note]
    bars: Sequence[BarLike]  #: the plan of every bar (music.harmony.BarPlan)
    states: list[BrainState]
    seconds: float  #: session length (s)
    wall: float  #: render wall time (s)
    arbiter_costs: np.ndarray  #: seconds of arbiter work per bar
    metrics: Metrics
    max_polyphony_cap: int
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, len(FEATURES))))
    brain: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    bands: tuple[str, ...] = ()
    label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    composer_stats: dict[str, Any] = field(default_factory=dict)  #: what the guard did (vetoes, drops)


def render_session(files: SessionFiles, settings: Settings, seconds: float | None = None) -> SessionRender:
    """Render ``files`` back to back (each cropped to ``seconds``) and measure the result."""
    from ..pipeline import render

    session = open_session(files, seconds=seconds)
    t0 = time.perf_counter()
    result = asyncio.run(render(settings, session.source))
    wall = time.perf_counter() - t0
    bars = list(result.bars)
    if not bars:
        raise DataError(
            f"Rendering {files.subject} gave no bar plan; the composer must record its bars (RenderResult.bars)."
        )
    m = settings.music
    calib = [s.t_end for s in result.states if s.calibrating]
    out = SessionRender(
        subject=files.subject,
        mode=m.mode,
        labels=files.labels,
        seg_starts=session.starts,
        seg_ends=session.ends,
        notes=list(result.notes),
        bars=bars,
        states=list(result.states),
        seconds=float(session.source.duration),
        wall=wall,
        arbiter_costs=np.asarray(result.arbiter_costs, float),
        metrics=evaluate(from_notes(result.notes, m.tempo)),
        max_polyphony_cap=m.max_polyphony,
        composer_stats=dict(result.composer_stats),
    )
    sig = settings.signal
    out.features = bar_features(out.notes, bars)
    brain = bar_brain(out.states, bars, m.lookahead, sig.hop)
    out.brain, out.bands = brain["z"], brain["bands"]
    out.label = bar_labels(
        bars,
        out.seg_starts,
        out.seg_ends,
        lookahead=m.lookahead,
        hop=sig.hop,
        window=sig.window,
        calibrated_from=max(calib) if calib else -np.inf,
    )
    return out


def _impute(x: np.ndarray) -> np.ndarray:
    """NaNs → the column's median in this session (0 where a column has no value at all)."""
    x = x.copy()
    for j in range(x.shape[1]):
        bad = ~np.isfinite(x[:, j])
        if bad.any():
            ok = x[~bad, j]
            x[bad, j] = float(np.median(ok)) if ok.size else 0.0
    return x


def classify(renders: Sequence[SessionRender], n_folds: int = 6, *, on: str = "music") -> ProbeScore:
    """Balanced accuracy of telling first- from second-recording bars, folds by subject.

    Uses every labelled bar of sessions with two recordings; ``n_folds`` is capped at the number
    of subjects. The probe standardises with its training folds' mean and sd. ``on="brain"``
    classifies the bars' band z-scores instead: the reference the music can at best pass on.
    """
    xs, ys, subs = [], [], []
    for r in renders:
        keep = (r.label == 0) | (r.label == 1)
        if len(r.labels) < 2 or not ((r.label == 0).any() and (r.label == 1).any()):
            continue
        x = r.features if on == "music" else r.brain
        if x.shape[1] == 0:
            continue
        xs.append(_impute(x)[keep])
        ys.append(r.label[keep])
        subs.append(np.full(int(keep.sum()), r.subject))
    names = sorted({s[0] for s in subs if s.size})
    if len(names) < 2:
        raise DataError(
            "Telling rest from task bars needs at least 2 subjects with labelled bars of both recordings; "
            "render more (or longer) sessions."
        )
    folds = subject_folds(names, max(2, min(n_folds, len(names))))
    return leave_subjects_out(np.concatenate(xs), np.concatenate(ys), np.concatenate(subs), folds)


def cliffs_delta(x: np.ndarray, y: np.ndarray) -> float:
    """P(x > y) − P(x < y) over all pairs (rank-biserial effect size, −1..1); NaN if a side is empty."""
    x, y = np.asarray(x, float), np.sort(np.asarray(y, float))
    x = x[np.isfinite(x)]
    y = y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        return float("nan")
    below = np.searchsorted(y, x, side="left")  # y < x
    above = y.size - np.searchsorted(y, x, side="right")  # y > x
    return float((below.sum() - above.sum()) / (x.size * y.size))


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged."""
    order = np.argsort(a, kind="stable")
    r = np.empty(a.size, float)
    r[order] = np.arange(a.size, dtype=float)
    _, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    return np.asarray(sums[inv] / counts[inv])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Rank correlation of the finite pairs; NaN when either side is constant or fewer than 3 pairs."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    rx, ry = _ranks(x[ok]), _ranks(y[ok])
    rx -= rx.mean()
    ry -= ry.mean()
    den = float(np.sqrt((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


@dataclass(frozen=True, slots=True)
class Move:
    """How one feature moves from the first recording (rest) to the second (task), across subjects.

    shift : median over subjects of (median task − median rest), in the feature's units.
    delta : median over subjects of Cliff's δ (task vs rest bars).
    agree : fraction of subjects whose δ has the sign of the median δ.
    partner, r : for music features, the brain band whose z-score goes with it most across bars
    (median within-subject Spearman r); for brain bands, empty and NaN.
    """

    name: str
    kind: str
    shift: float
    delta: float
    agree: float
    n_subjects: int
    partner: str = ""
    r: float = float("nan")


def _move(name: str, kind: str, per: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, float, int]:
    shifts, deltas = [], []
    for rest, task in per:
        rest, task = rest[np.isfinite(rest)], task[np.isfinite(task)]
        if rest.size and task.size:
            shifts.append(float(np.median(task) - np.median(rest)))
            deltas.append(cliffs_delta(task, rest))
    if not deltas:
        return float("nan"), float("nan"), float("nan"), 0
    d = np.asarray(deltas)
    med = float(np.median(d))
    agree = float(np.mean(np.sign(d) == np.sign(med))) if med != 0 else float(np.mean(d == 0))
    return float(np.median(shifts)), med, agree, len(deltas)


def what_moves(renders: Sequence[SessionRender]) -> list[Move]:
    """Rest → task movement of every music feature and brain band, and each feature's brain partner."""
    rs = [r for r in renders if (r.label == 0).any() and (r.label == 1).any()]
    moves: list[Move] = []
    bands = next((r.bands for r in rs if r.bands), ())
    for j, name in enumerate(FEATURES):
        per = [(r.features[r.label == 0, j], r.features[r.label == 1, j]) for r in rs]
        shift, delta, agree, n = _move(name, "music", per)
        best, best_r = "", float("nan")
        for b, band in enumerate(bands):
            keep = [r for r in rs if r.bands == bands]
            rr = [spearman(r.features[r.label >= 0, j], r.brain[r.label >= 0, b]) for r in keep]
            rr = [v for v in rr if np.isfinite(v)]
            if rr and (not np.isfinite(best_r) or abs(float(np.median(rr))) > abs(best_r)):
                best, best_r = band, float(np.median(rr))
        moves.append(Move(name, "music", shift, delta, agree, n, best, best_r))
    for b, band in enumerate(bands):
        per = [(r.brain[r.label == 0, b], r.brain[r.label == 1, b]) for r in rs if r.bands == bands]
        moves.append(Move(band, "brain", *_move(band, "brain", per)))
    return moves


def format_moves(moves: Sequence[Move], labels: tuple[str, str] = ("rest", "task")) -> list[str]:
    """The "what moves" table as text lines."""
    lines = [
        f"{'feature':16s} {labels[1] + '-' + labels[0]:>10s} {'delta':>7s} {'agree':>6s}  "
        f"{'goes with (median Spearman r)':s}"
    ]
    for m in moves:
        partner = f"{m.partner} z ({m.r:+.2f})" if m.partner else ""
        lines.append(f"{m.kind[0]}:{m.name:14s} {m.shift:+10.3f} {m.delta:+7.2f} {m.agree:6.0%}  {partner}")
    return lines


def _stats(values: Sequence[float] | np.ndarray, *keys: str) -> dict[str, float]:
    """Named summaries of the finite values (NaN when there are none)."""
    a = np.asarray([v for v in values if np.isfinite(v)], float)
    out: dict[str, float] = {}
    for k in keys:
        if not a.size:
            out[k] = float("nan")
        elif k == "p99":
            out[k] = float(np.percentile(a, 99))
        elif k == "median":
            out[k] = float(np.median(a))
        else:
            out[k] = float(getattr(a, k)())  # min, max, mean
    return out


def summarize_mode(renders: Sequence[SessionRender], n_folds: int = 6) -> dict[str, Any]:
    """The ensemble metrics of one mode over its sessions (what ``bench_ensemble`` prints), JSON-ready."""
    if not renders:
        raise DataError("No rendered session to summarise; render at least one.")
    ms = [r.metrics for r in renders]
    costs = np.concatenate([r.arbiter_costs for r in renders]) * 1e3
    labelled = np.concatenate([r.label for r in renders])
    out: dict[str, Any] = {
        "mode": renders[0].mode,
        "subjects": [r.subject for r in renders],
        "dissonant_share": _stats([m.dissonant_share for m in ms], "median", "max"),
        "scale_consistency": _stats([m.scale_consistency for m in ms], "median", "min"),
        "max_polyphony": {"max": max(m.max_polyphony for m in ms), "cap": renders[0].max_polyphony_cap},
        "instruments_active": {"min": min(m.instruments_active for m in ms)},
        "notes": {"median": float(np.median([m.n_notes for m in ms]))},
        "bars": {"all": int(labelled.size), "rest": int((labelled == 0).sum()), "task": int((labelled == 1).sum())},
        "arbiter_ms": _stats(costs, "median", "p99", "max") | {"n": int(costs.size)},
        "render_speed_x": _stats([r.seconds / r.wall for r in renders], "median", "min"),
        "per_subject": {
            r.subject: {
                "dissonant_share": r.metrics.dissonant_share,
                "scale_consistency": r.metrics.scale_consistency,
                "max_polyphony": r.metrics.max_polyphony,
                "instruments_active": r.metrics.instruments_active,
                "notes": r.metrics.n_notes,
                "seconds": r.seconds,
                "wall_s": r.wall,
            }
            for r in renders
        },
        "moves": [asdict(m) for m in what_moves(renders)],
    }
    for key, on in (("classifier", "music"), ("classifier_brain", "brain")):
        try:
            score = classify(renders, n_folds, on=on)
        except DataError as exc:
            out[key] = {"skipped": str(exc)}
        else:
            out[key] = {
                "balanced_accuracy_mean": score.mean,
                "balanced_accuracy_sd": score.sd,
                "pooled": score.pooled,
                "folds": list(score.folds),
            }
    return out
