"""Optional supervision from the *training* subjects' rest/task labels, on session-centred latents.

Why centred: the learned composer reads each latent minus its session's calibration mean
(:class:`~brainharmonic_rt.brain.latent_map.SessionCentre`), and a person's latents sit in their
own corner of the space (head, cap, impedances). What should carry the state is therefore the
*move away from that person's own calibration*, the same in every head. Each supervised batch
holds a few subjects; each subject is seen through one random montage (as a real session is),
its calibration windows (the first ``baseline`` seconds of its rest) give its centre, and a
linear head (the shape of the evaluation's probe) must tell rest from task from latent minus
centre, with each subject weighing the same. The head is thrown away; only the encoder ships.

Only sessions whose recordings are labelled ``("rest", "task")`` (eegmat) take part, and only
those of training subjects: validation subjects never reach this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..evaluation.sessions import SessionArrays
from .data import AugmentConfig, View, augment_view

STATES = ("rest", "task")


@dataclass(frozen=True)
class SupervisedConfig:
    """How supervised batches are made (saved in the checkpoint and the card)."""

    weight: float = 0.0  #: loss weight; 0 = purely self-supervised
    subjects: int = 6  #: subjects per batch
    calibration: int = 6  #: calibration windows per subject (its centre)
    per_state: int = 6  #: rest and task windows per subject (rest after the calibration)
    baseline: float = 20.0  #: seconds of calibration at the start of each session (as [signal] baseline)


@dataclass
class LabelledBatch:
    """One supervised batch: view (N, C, T) ordered subject by subject; per window its subject index,
    whether it is a calibration window, and its state (0 rest, 1 task; -1 for calibration windows)."""

    view: View
    subject: torch.Tensor
    calibration: torch.Tensor
    state: torch.Tensor


class LabelledSampler:
    """Draws :class:`LabelledBatch` es from rest+task sessions."""

    def __init__(self, sessions: Sequence[SessionArrays], cfg: SupervisedConfig, aug: AugmentConfig) -> None:
        self.cfg = cfg
        self.aug = aug
        self.sessions: list[SessionArrays] = []
        self.rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # calibration, rest, task
        for sess in sessions:
            if tuple(sess.labels) != STATES:
                continue
            cal = sess.t_end - sess.t_end[0] <= cfg.baseline
            rows = (
                np.flatnonzero(cal & (sess.segment == 0)),
                np.flatnonzero(~cal & (sess.segment == 0)),
                np.flatnonzero(sess.segment == 1),
            )
            if all(r.size for r in rows):
                self.sessions.append(sess)
                self.rows.append(rows)
        if not self.sessions:
            raise ValueError("supervision needs rest+task sessions (eegmat SubjectNN_1/2.edf) among the training data")

    @property
    def subjects(self) -> list[str]:
        return [s.subject for s in self.sessions]

    def sample(self, rng: np.random.Generator) -> LabelledBatch:
        cfg = self.cfg
        n_sub = min(cfg.subjects, len(self.sessions))
        picks = rng.choice(len(self.sessions), size=n_sub, replace=False)
        items: list[tuple[int, np.ndarray]] = []
        subject, calib, state = [], [], []
        for k, s in enumerate(picks):
            cal, rest, task = self.rows[int(s)]
            chosen = [
                rng.choice(cal, cfg.calibration, replace=cal.size < cfg.calibration),
                rng.choice(rest, cfg.per_state, replace=rest.size < cfg.per_state),
                rng.choice(task, cfg.per_state, replace=task.size < cfg.per_state),
            ]
            items.append((int(s), np.concatenate(chosen)))
            subject += [k] * sum(c.size for c in chosen)
            calib += [True] * cfg.calibration + [False] * (2 * cfg.per_state)
            state += [-1] * cfg.calibration + [0] * cfg.per_state + [1] * cfg.per_state
        view = augment_view([self.sessions[s] for s, _ in items], [rows for _, rows in items], self.aug, rng)
        return LabelledBatch(
            view,
            torch.tensor(subject, dtype=torch.int64),
            torch.tensor(calib, dtype=torch.bool),
            torch.tensor(state, dtype=torch.int64),
        )


def centred(z: torch.Tensor, subject: torch.Tensor, calibration: torch.Tensor) -> torch.Tensor:
    """Each latent minus the mean latent of its subject's calibration windows: (N, D) → (N, D)."""
    n_sub = int(subject.max()) + 1
    onehot = F.one_hot(subject, n_sub).to(z.dtype) * calibration[:, None].to(z.dtype)  # (N, S)
    centre = (onehot.T @ z) / onehot.sum(0).clamp_min(1.0)[:, None]  # (S, D)
    return z - centre[subject]


class StateHead(nn.Module):
    """A linear rest/task read-out of the centred latent (the probe's shape), used only in training."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.linear = nn.Linear(dim, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(u)).squeeze(-1)


def state_loss(head: StateHead, z: torch.Tensor, batch: LabelledBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Subject-balanced logistic loss of rest vs task on centred latents, and the balanced accuracy."""
    dev = z.device
    u = centred(z, batch.subject.to(dev), batch.calibration.to(dev))
    keep = ~batch.calibration.to(dev)
    logits = head(u[keep])
    target = batch.state.to(dev)[keep].to(z.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, target)
    pred = logits > 0
    acc = 0.5 * ((pred[target == 0] == 0).float().mean() + (pred[target == 1] == 1).float().mean())
    return loss, acc.detach()
