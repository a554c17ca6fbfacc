"""Small, dependency-free evaluation tools: a linear probe, balanced accuracy, perplexity, folds.

The probe is an L2-regularised, class-balanced logistic regression fitted by Newton's
method on standardised features (numpy only: the runtime must not need scikit-learn).
Its settings are fixed here, once, for every feature set it compares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PROBE_ALPHA = 1e-2  # L2 strength on standardised features (same for every feature set)
NEWTON_ITERS = 50


@dataclass(frozen=True, slots=True)
class Probe:
    """A fitted probe: standardisation and weights. predict(X (n, d)) → labels 0/1."""

    mean: np.ndarray
    std: np.ndarray
    w: np.ndarray
    b: float

    def decision(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(((x - self.mean) / self.std) @ self.w + self.b)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self.decision(x) > 0).astype(np.int64)


def fit_probe(x: np.ndarray, y: np.ndarray, alpha: float = PROBE_ALPHA) -> Probe:
    """Class-balanced L2 logistic regression of binary ``y`` (n,) on ``x`` (n, d)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if set(np.unique(y)) != {0.0, 1.0}:
        raise ValueError("fit_probe needs both classes 0 and 1 in y")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    xs = np.hstack([(x - mean) / std, np.ones((x.shape[0], 1))])
    n1 = y.sum()
    sw = np.where(y == 1, 0.5 / n1, 0.5 / (y.size - n1))  # each class weighs one half
    d = xs.shape[1]
    reg = alpha * np.eye(d)
    reg[-1, -1] = 0.0
    beta = np.zeros(d)
    for _ in range(NEWTON_ITERS):
        p = 1.0 / (1.0 + np.exp(-np.clip(xs @ beta, -30, 30)))
        grad = xs.T @ (sw * (p - y)) + reg @ beta
        hess = (xs * (sw * p * (1 - p))[:, None]).T @ xs + reg + 1e-9 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return Probe(mean, std, beta[:-1], float(beta[-1]))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean of the per-class recalls (0.5 = chance for two classes, whatever the class sizes)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in np.unique(y_true)]
    return float(np.mean(recalls))


def perplexity(tokens: np.ndarray, k: int) -> float:
    """exp(entropy) of the token histogram: k when every code is used equally, 1 at collapse."""
    counts = np.bincount(np.asarray(tokens, dtype=np.int64).ravel(), minlength=k).astype(np.float64)
    if counts.sum() == 0:
        return 0.0
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def subject_folds(subjects: Sequence[str], n_folds: int) -> list[list[str]]:
    """Subjects (sorted) dealt round-robin into ``n_folds`` test folds."""
    names = sorted(set(subjects))
    if not 2 <= n_folds <= len(names):
        raise ValueError(f"n_folds must be between 2 and the number of subjects ({len(names)}), got {n_folds}")
    return [names[k::n_folds] for k in range(n_folds)]


@dataclass(frozen=True, slots=True)
class ProbeScore:
    """Balanced accuracy per test fold, their mean and sd, and over all test windows pooled."""

    folds: tuple[float, ...]
    pooled: float

    @property
    def mean(self) -> float:
        return float(np.mean(self.folds))

    @property
    def sd(self) -> float:
        return float(np.std(self.folds))


def leave_subjects_out(x: np.ndarray, y: np.ndarray, subject: np.ndarray, folds: Sequence[Sequence[str]]) -> ProbeScore:
    """Fit on the other subjects, test on each fold's subjects; x (n, d), y (n,), subject (n,)."""
    scores: list[float] = []
    pred = np.full(y.shape, -1)
    for test in folds:
        is_test = np.isin(subject, list(test))
        probe = fit_probe(x[~is_test], y[~is_test])
        pred[is_test] = probe.predict(x[is_test])
        scores.append(balanced_accuracy(y[is_test], pred[is_test]))
    tested = pred >= 0
    return ProbeScore(tuple(scores), balanced_accuracy(y[tested], pred[tested]))
