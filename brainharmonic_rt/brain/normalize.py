"""Robust z-scores of features against a baseline taken at the start of a session.

Why robust: a blink or a cable tug produces a few huge band powers; a median and a MAD
ignore them where a mean and a std would not.

Calibration: the first ``baseline_s`` seconds of windows (and at least :data:`MIN_WINDOWS`)
form the baseline; meanwhile each window is scored against the estimate so far.
After that the baseline is frozen (``adapt_s == 0``) or follows the signal with an
exponential time constant of ``adapt_s`` seconds, using Huber-clipped residuals so a
burst of artefacts barely moves it. Slow adaptation keeps a sustained change of state
audible for about ``adapt_s`` seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAD_TO_STD = 1.4826  # MAD of a normal distribution × this = its std
MEAN_ABS_TO_STD = float(np.sqrt(np.pi / 2))  # mean |x - mu| of a normal × this = its std
HUBER_K = 3.0  # residuals clipped at this many scales during adaptation
MIN_WINDOWS = 5


class BaselineNormalizer:
    """Scores feature vectors (any fixed length) as robust z-scores clipped to ±``z_clip``.

    NaN features (e.g. a group whose channels are all bad) are skipped: they score 0
    and do not update the baseline.
    """

    def __init__(self, baseline_s: float, adapt_s: float, z_clip: float) -> None:
        self.baseline_s = baseline_s
        self.adapt_s = adapt_s
        self.z_clip = z_clip
        self.reset()

    def reset(self) -> None:
        """Start calibrating again from the next window."""
        self._samples: list[np.ndarray] = []
        self._t_first: float | None = None
        self._t_last: float | None = None
        self._center: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        self.calibrating = True

    @property
    def progress(self) -> float:
        """Fraction of the calibration done, 0..1."""
        if not self.calibrating:
            return 1.0
        if self._t_first is None or self._t_last is None:
            return 0.0
        by_time = (self._t_last - self._t_first) / self.baseline_s if self.baseline_s > 0 else 1.0
        return float(min(by_time, len(self._samples) / MIN_WINDOWS, 1.0))

    @property
    def center(self) -> np.ndarray | None:
        """Current baseline median per feature (``None`` before the first window)."""
        return self._center

    @property
    def scale(self) -> np.ndarray | None:
        """Current baseline robust std per feature."""
        return self._scale

    def update(self, t: float, x: np.ndarray) -> np.ndarray:
        """Score features ``x`` (1-D) of the window ending at session time ``t`` (s).

        Returns z-scores of the same shape; also advances calibration or adaptation.
        """
        x = np.asarray(x, dtype=np.float64)
        if self._t_first is None:
            self._t_first = t
        dt = 0.0 if self._t_last is None else max(t - self._t_last, 0.0)
        self._t_last = t
        if self.calibrating:
            self._samples.append(x.copy())
            stack = np.vstack(self._samples)
            self._center, self._scale = _median_mad(stack)
            z = self._score(x)
            if t - self._t_first >= self.baseline_s and len(self._samples) >= MIN_WINDOWS:
                self.calibrating = False
                self._samples = []
            return z
        z = self._score(x)
        if self.adapt_s > 0 and dt > 0:
            self._adapt(x, 1.0 - np.exp(-dt / self.adapt_s))
        return z

    def _score(self, x: np.ndarray) -> np.ndarray:
        assert self._center is not None and self._scale is not None
        diff = x - self._center
        with np.errstate(divide="ignore", invalid="ignore"):
            z = diff / self._scale
        # Zero scale (a single window, or a constant feature): no spread known, so only the sign counts.
        zero = ~(self._scale > 0)
        if zero.any():
            tiny = 1e-12 * (1.0 + np.abs(np.nan_to_num(self._center[zero])))
            d = diff[zero]
            z[zero] = np.where(np.abs(d) <= tiny, 0.0, np.sign(d) * self.z_clip)
        z = np.nan_to_num(z, nan=0.0)
        return np.clip(z, -self.z_clip, self.z_clip)

    def _adapt(self, x: np.ndarray, alpha: float) -> None:
        assert self._center is not None and self._scale is not None
        ok = np.isfinite(x) & np.isfinite(self._center)
        scale = self._scale[ok]
        limit = np.where(scale > 0, HUBER_K * scale, np.inf)
        resid = np.clip(x[ok] - self._center[ok], -limit, limit)
        self._center[ok] += alpha * resid
        self._scale[ok] = (1.0 - alpha) * scale + alpha * MEAN_ABS_TO_STD * np.abs(resid)

    def stats(self) -> dict[str, Any]:
        """Calibration state for telemetry."""
        return {
            "calibrating": self.calibrating,
            "progress": round(self.progress, 3),
            "baseline_s": self.baseline_s,
            "adapt_s": self.adapt_s,
        }


def _median_mad(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column median and robust std (1.4826 × MAD) of ``stack`` (n_windows, n_features), NaN-aware."""
    all_nan = np.isnan(stack).all(axis=0)
    safe = np.where(all_nan[None, :], 0.0, stack)
    center = np.nanmedian(safe, axis=0)
    scale = MAD_TO_STD * np.nanmedian(np.abs(safe - center), axis=0)
    center[all_nan] = np.nan
    scale[all_nan] = 0.0
    return center, scale
