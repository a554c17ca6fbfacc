"""Brain latent → music latent: align two spaces by their principal axes, ranked by variance.

Both spaces are summarised by their mean, principal axes and standard deviations along them
(PCA). A brain vector is centred and projected on the brain axes; coordinate j (the j-th largest
brain variance) lands on the j-th largest music axis. Two scalings:

* ``"whiten"`` – coordinate j is divided by the brain std and multiplied by the music std, so every
  aligned axis has exactly the music latent's spread (same ranges) – distances are preserved up to
  the ratio of the two spectra;
* ``"similarity"`` – one global scale that matches the total variance: a rotation + scale, so the
  ranking of pairwise distances is preserved exactly, while per-axis ranges follow the brain's.

The default is ``"similarity"``: on held-out eegmat subjects the encoder's latent spectrum is far
steeper than the music latent's, so whitening keeps the distance ranking only at Spearman ≈ 0.84,
while the similarity map keeps it at ≈ 0.97 (1.0 before clipping) with the same total variance as
the music latents (see models/generator.md).

**Session centring** (``centred``): a person's latents sit in their own corner of the brain space
(head, cap, impedances), and a map fitted on other people sends that corner to an odd corner of
the music space: on held-out eegmat subjects, pieces generated from their raw latents had
pitch-class entropy 2.06 bits and 16 % empty beats, far outside the corpus. A centred map is fitted
on latents minus each session's own calibration mean (:class:`SessionCentre`) and applied the same
way, so every session starts at the centre of the music space and its changes of state move it.

Outputs are clipped to ±``clip`` music stds per axis so an outlier window cannot push the
generator far outside what it was trained on. Until a learned encoder is loaded, band-power
z-scores can feed the map (:func:`bandpower_features`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import DataError, ModelError
from ..events import BrainState, GroupState

Scaling = Literal["whiten", "similarity"]
DEFAULT_MAP = Path(__file__).resolve().parents[2] / "models" / "latent_map.npz"
_EPS = 1e-8


@dataclass(frozen=True, slots=True)
class Space:
    """PCA summary of a cloud of vectors: mean (d,), axes (r, d) rows orthonormal, std (r,) descending."""

    mean: np.ndarray
    axes: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> Space:
        """Fit on samples x of shape (n, d), n >= 2 (rows with NaN are dropped)."""
        x = np.asarray(x, np.float64)
        if x.ndim != 2:
            raise DataError(f"Latents must be a 2-D array (n, dim), got shape {x.shape}; pass one vector per row.")
        x = x[np.isfinite(x).all(axis=1)]
        if x.shape[0] < 2:
            raise DataError("Need at least two finite latent vectors to fit a latent space; pass more windows.")
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        std = s / np.sqrt(x.shape[0] - 1)
        return cls(mean, vt, std)


@dataclass(frozen=True, slots=True)
class LatentMap:
    """Affine map brain (d_b,) → music (d_m,): ``y = music.mean + W @ (x - brain.mean)``, clipped."""

    brain: Space
    music: Space
    scaling: Scaling = "similarity"
    clip: float = 3.0
    centred: bool = False  #: brain inputs are session-centred (see :class:`SessionCentre`)

    @property
    def rank(self) -> int:
        return int(min(self.brain.axes.shape[0], self.music.axes.shape[0]))

    @property
    def weight(self) -> np.ndarray:
        """W of shape (d_m, d_b)."""
        r = self.rank
        sb, sm = np.maximum(self.brain.std[:r], _EPS), self.music.std[:r]
        total = np.sqrt((sm**2).sum() / (sb**2).sum())
        scale = sm / sb if self.scaling == "whiten" else np.full(r, total)
        return np.asarray(self.music.axes[:r].T @ (scale[:, None] * self.brain.axes[:r]))

    @property
    def brain_dim(self) -> int:
        return int(self.brain.mean.shape[0])

    @property
    def music_dim(self) -> int:
        return int(self.music.mean.shape[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Map x of shape (d_b,) or (n, d_b) → (d_m,) or (n, d_m), float32."""
        x = np.asarray(x, np.float64)
        if x.shape[-1] != self.brain_dim:
            raise DataError(
                f"Brain latent has {x.shape[-1]} values but the latent map expects {self.brain_dim}; "
                "fit the map again for this encoder (fit_latent_map)."
            )
        y = (x - self.brain.mean) @ self.weight.T
        # clip in music-axis coordinates (± clip stds), then back
        r = self.rank
        coords = y @ self.music.axes[:r].T
        lim = self.clip * np.maximum(self.music.std[:r], _EPS)
        coords = np.clip(coords, -lim, lim)
        return (self.music.mean + coords @ self.music.axes[:r]).astype(np.float32)

    @classmethod
    def fit(
        cls,
        brain: np.ndarray,
        music: np.ndarray | Space,
        scaling: Scaling = "similarity",
        clip: float = 3.0,
        centred: bool = False,
    ) -> LatentMap:
        """Fit from brain latents (n, d_b) and music latents (m, d_m) (or their :class:`Space`).

        ``centred``: the brain latents are already session-centred, and so must inputs be."""
        m = music if isinstance(music, Space) else Space.of(music)
        return cls(Space.of(brain), m, scaling, clip, centred)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            brain_mean=self.brain.mean,
            brain_axes=self.brain.axes,
            brain_std=self.brain.std,
            music_mean=self.music.mean,
            music_axes=self.music.axes,
            music_std=self.music.std,
            scaling=np.asarray(self.scaling),
            clip=np.asarray(self.clip),
            centred=np.asarray(self.centred),
        )
        return path

    @classmethod
    def load(cls, path: str | Path = DEFAULT_MAP) -> LatentMap:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"Latent map {path} does not exist; fit one (fit_latent_map) or restore models/.")
        try:
            d = np.load(path)
            scaling = str(d["scaling"])
            if scaling not in ("whiten", "similarity"):
                raise ValueError(f"unknown scaling {scaling!r}")
            return cls(
                Space(d["brain_mean"], d["brain_axes"], d["brain_std"]),
                Space(d["music_mean"], d["music_axes"], d["music_std"]),
                scaling,  # type: ignore[arg-type]
                float(d["clip"]),
                bool(d["centred"]) if "centred" in d else False,
            )
        except (KeyError, ValueError, OSError) as exc:
            raise ModelError(f"{path} is not a latent map ({exc}); fit it again with fit_latent_map.") from None


class SessionCentre:
    """The centre of one session's brain latents: the mean of its calibration windows.

    Without calibration windows (a recording whose baseline came from elsewhere, latents from a
    source that never calibrates), the mean of the first ``warmup`` windows, used as it grows.
    Frozen afterwards, like a frozen band-power baseline, so the music keeps following slow
    changes of state.
    """

    def __init__(self, warmup: int = 80) -> None:
        self.warmup = warmup
        self.n = 0
        self._sum: np.ndarray | None = None
        self._calibrated = False
        self._last: int | None = None
        self.frozen = False

    def observe(self, x: np.ndarray, calibrating: bool, index: int | None = None) -> None:
        """Take one window's latent (d,) (NaN rows are ignored; a window ``index`` seen already is skipped,
        so several voices reading one latent count it once)."""
        if self.frozen or not np.all(np.isfinite(x)) or (index is not None and index == self._last):
            return
        self._last = index
        if calibrating or (not self._calibrated and self.n < self.warmup):
            self._sum = np.asarray(x, np.float64).copy() if self._sum is None else self._sum + x
            self.n += 1
            self._calibrated |= calibrating
        if not calibrating and (self._calibrated or self.n >= self.warmup):
            self.frozen = True

    @property
    def mean(self) -> np.ndarray | None:
        return None if self._sum is None else self._sum / self.n

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x minus the centre (x itself until a window has been observed)."""
        m = self.mean
        return np.asarray(x, np.float64) if m is None else np.asarray(x, np.float64) - m

    @classmethod
    def apply_to(cls, x: np.ndarray, calibrating: np.ndarray, warmup: int = 80) -> np.ndarray:
        """Centre a whole session (n, d), windows in time order, as a live run would: (n, d)."""
        c = cls(warmup)
        out = np.empty(x.shape, np.float64)
        for i in range(x.shape[0]):
            c.observe(x[i], bool(calibrating[i]))
            out[i] = c(x[i])
        return out


class SessionCentres:
    """One :class:`SessionCentre` per latent source of a session: the global latent (key ``""``) and
    each group's. Fed with every brain state, whichever composer is playing, so a live switch to
    learned mode finds the calibration already taken; a state seen twice counts once."""

    def __init__(self, warmup: int = 80) -> None:
        self.warmup = warmup
        self.sources: dict[str, SessionCentre] = {}

    def observe(self, state: BrainState) -> None:
        pairs = [(g.name, g.latent) for g in state.groups] + [("", state.latent)]
        for key, vec in pairs:
            if vec is not None:
                self.sources.setdefault(key, SessionCentre(self.warmup)).observe(vec, state.calibrating, state.index)

    def __call__(self, key: str, x: np.ndarray) -> np.ndarray:
        """x minus the centre of source ``key`` (x itself for a source never observed)."""
        c = self.sources.get(key)
        return np.asarray(x, np.float64) if c is None else c(x)


def distance_spearman(x: np.ndarray, y: np.ndarray, max_points: int = 400, seed: int = 0) -> float:
    """Spearman correlation between the pairwise Euclidean distances of rows of x (n, a) and y (n, b)."""
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr

    if x.shape[0] != y.shape[0]:
        raise ValueError("x and y must have the same number of rows")
    idx = np.arange(x.shape[0])
    if idx.size > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_points, replace=False))
    return float(spearmanr(pdist(x[idx]), pdist(y[idx])).statistic)


def bandpower_features(group: GroupState | BrainState, bands: Sequence[str] | None = None) -> np.ndarray:
    """Band z-scores (of a group, or the group mean of a state) as a vector: the bands the brain computes,
    in its order (or ``bands``, 0 where absent). Only computed bands count, so every dimension moves: the
    map puts the first on the music latent's largest-variance axis."""
    z = group.z_mean if isinstance(group, BrainState) else group.z
    names = tuple(z) if bands is None else tuple(bands)
    return np.array([float(z.get(b, 0.0)) for b in names], np.float32)
