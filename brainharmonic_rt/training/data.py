"""Training batches: temporal-neighbour pairs, each side seen through a different random montage.

Every item of a batch is a pair of windows from the same recording, ``min_lag``..``max_lag``
seconds apart (brain states change over seconds to minutes, so neighbours share a state).
The two sides go through independent augmentations that mimic what differs between
headsets and sessions: a random subset of 2..C channels (so the same weights must work
for 4 and 19 channels), region ids hidden for a whole view (names that are not 10-20),
per-channel gains (electrode impedance), polarity flips (reference choice) and noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..brain.encoder import REGION_NAMES
from ..evaluation.sessions import SessionArrays

N_GROUPS = len(REGION_NAMES) - 1  # one group per scalp region (the runtime default)


@dataclass(frozen=True)
class AugmentConfig:
    """How different the two views of a pair are (saved in the model card)."""

    min_lag: float = 2.0
    max_lag: float = 8.0
    p_all_channels: float = 0.3
    min_channels: int = 2
    p_hide_regions: float = 0.25
    gain_sd: float = 0.15
    p_flip: float = 0.5
    noise_sd: float = 0.05


@dataclass
class View:
    """One side of a batch: x (B, C, T) float32, region (B, C) int64, group_mask (B, G, C) float32."""

    x: torch.Tensor
    region: torch.Tensor
    group_mask: torch.Tensor

    def to(self, device: torch.device) -> View:
        return View(self.x.to(device), self.region.to(device), self.group_mask.to(device))


@dataclass
class Batch:
    """A batch of pairs; ``segment`` (global recording id) and ``t`` (s) per side, for the loss masks."""

    a: View
    b: View
    segment_a: torch.Tensor
    segment_b: torch.Tensor
    t_a: torch.Tensor
    t_b: torch.Tensor


class PairSampler:
    """Draws batches of temporal-neighbour pairs from prepared sessions (one headset per batch)."""

    def __init__(self, sessions: Sequence[SessionArrays], aug: AugmentConfig) -> None:
        if not sessions:
            raise ValueError("PairSampler needs at least one session")
        self.sessions = list(sessions)
        self.aug = aug
        anchors: list[tuple[int, int, int, int, int, int]] = []
        self.segment_id: list[np.ndarray] = []
        seg_base = 0
        for s, sess in enumerate(self.sessions):
            gid = np.where(sess.segment >= 0, sess.segment + seg_base, -1)
            self.segment_id.append(gid)
            seg_base += int(sess.segment.max()) + 1 if sess.segment.size else 0
            for seg in np.unique(sess.segment[sess.segment >= 0]):
                idx = np.flatnonzero(sess.segment == seg)
                t = sess.t_end[idx]
                for j, w in enumerate(idx):
                    lo1 = np.searchsorted(t, t[j] - aug.max_lag, "left")
                    hi1 = np.searchsorted(t, t[j] - aug.min_lag, "right")
                    lo2 = np.searchsorted(t, t[j] + aug.min_lag, "left")
                    hi2 = np.searchsorted(t, t[j] + aug.max_lag, "right")
                    n_before, n_after = max(hi1 - lo1, 0), max(hi2 - lo2, 0)
                    if n_before + n_after:
                        # (session, window, first row before, how many, first row after, how many)
                        anchors.append(
                            (
                                s,
                                int(w),
                                int(idx[lo1]) if n_before else 0,
                                int(n_before),
                                int(idx[lo2]) if n_after else 0,
                                int(n_after),
                            )
                        )
        if not anchors:
            raise ValueError(
                f"no window has a neighbour {aug.min_lag:g}-{aug.max_lag:g} s away in the same recording; "
                "use longer recordings"
            )
        self.anchors = np.asarray(anchors, dtype=np.int64)
        # A batch holds one channel count (a headset), so a 19-channel cap is not cut to a Muse's 4
        # whenever one Muse window is drawn; each headset gets the same share of batches.
        n_ch = np.asarray([self.sessions[s].x.shape[1] for s in self.anchors[:, 0]])
        self.pools = [np.flatnonzero(n_ch == c) for c in np.unique(n_ch)]

    @property
    def n_windows(self) -> int:
        return int(sum(s.x.shape[0] for s in self.sessions))

    def sample(self, rng: np.random.Generator, n_pairs: int) -> Batch:
        pool = self.pools[int(rng.integers(0, len(self.pools)))] if len(self.pools) > 1 else self.pools[0]
        rows = self.anchors[pool[rng.integers(0, len(pool), n_pairs)]]
        a_items = [(int(r[0]), int(r[1])) for r in rows]
        b_items = []
        for s, _w, lo1, n1, lo2, n2 in rows:
            k = int(rng.integers(0, n1 + n2))
            b_items.append((int(s), int(lo1 + k if k < n1 else lo2 + k - n1)))
        seg_a, t_a = self._keys(a_items)
        seg_b, t_b = self._keys(b_items)
        return Batch(self._view(a_items, rng), self._view(b_items, rng), seg_a, seg_b, t_a, t_b)

    def _keys(self, items: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        seg = torch.tensor([int(self.segment_id[s][w]) for s, w in items], dtype=torch.int64)
        t = torch.tensor([float(self.sessions[s].t_end[w]) for s, w in items], dtype=torch.float64)
        return seg, t

    def _view(self, items: list[tuple[int, int]], rng: np.random.Generator) -> View:
        return augment_view([self.sessions[s] for s, _ in items], [np.asarray([w]) for _, w in items], self.aug, rng)


def augment_view(
    sessions: Sequence[SessionArrays], rows: Sequence[np.ndarray], aug: AugmentConfig, rng: np.random.Generator
) -> View:
    """Windows ``rows[i]`` of ``sessions[i]``, each group seen through one random montage.

    One channel count k for the whole view (2..the fewest channels present, or all of them);
    per group a random subset of k channels, per-channel gains and a polarity flip (what a
    cap and its impedances do to a whole session); per window independent noise. Regions are
    hidden for the whole view with probability ``p_hide_regions``.
    """
    c_min = min(s.x.shape[1] for s in sessions)
    lo = min(aug.min_channels, c_min)
    k = c_min if rng.random() < aug.p_all_channels else int(rng.integers(lo, c_min + 1))
    hide = rng.random() < aug.p_hide_regions
    t_len = sessions[0].x.shape[2]
    n = sum(len(r) for r in rows)
    x = np.empty((n, k, t_len), dtype=np.float32)
    region = np.empty((n, k), dtype=np.int64)
    mask = np.zeros((n, N_GROUPS, k), dtype=np.float32)
    i = 0
    for sess, idx in zip(sessions, rows, strict=True):
        ch = rng.choice(sess.x.shape[1], size=k, replace=False)
        gain = np.exp(rng.normal(0.0, aug.gain_sd, size=(k, 1))).astype(np.float32)
        if rng.random() < aug.p_flip:
            gain = -gain
        m = len(idx)
        noise = rng.normal(0.0, aug.noise_sd, size=(m, k, t_len)).astype(np.float32)
        x[i : i + m] = sess.x[idx][:, ch] * gain + noise
        true_region = sess.region[ch]
        region[i : i + m] = 0 if hide else true_region
        for g in range(N_GROUPS):
            mask[i : i + m, g] = true_region == g + 1
        i += m
    return View(torch.from_numpy(x), torch.from_numpy(region), torch.from_numpy(mask))


def full_view(sess: SessionArrays, rows: np.ndarray) -> View:
    """Windows ``rows`` of a session with all channels and true regions (validation, parity)."""
    x = torch.from_numpy(np.ascontiguousarray(sess.x[rows]))
    region = torch.from_numpy(sess.region).unsqueeze(0).expand(len(rows), -1).contiguous()
    mask = np.stack([sess.region == g + 1 for g in range(N_GROUPS)]).astype(np.float32)
    gm = torch.from_numpy(mask).unsqueeze(0).expand(len(rows), -1, -1).contiguous()
    return View(x, region, gm)
