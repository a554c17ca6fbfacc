"""Self-supervised training of the EEG encoder: temporal-neighbour contrast + EMA VQ codebook.

Objective (no labels): windows a few seconds apart in the same recording, each seen
through a different random montage, must have similar latents; windows from *other*
recordings are the negatives. Windows of the same recording further apart are neither
(they may or may not share a state, so they are left out of the contrast). The same
contrast is applied to the group latents of matching regions. Recording boundaries are
the only structure used: any EEG collection provides them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..evaluation.sessions import SessionArrays
from .data import AugmentConfig, Batch, PairSampler, View, full_view
from .model import Codebook, EEGEncoder, ModelConfig, perplexity
from .supervised import LabelledSampler, StateHead, SupervisedConfig, centred, state_loss


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation hyperparameters (saved in the checkpoint and the model card)."""

    steps: int = 6000
    pairs: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup: int = 100
    temperature: float = 0.1
    group_weight: float = 0.5
    commit_weight: float = 0.02
    restart_every: int = 25
    eval_every: int = 250
    grad_clip: float = 1.0
    seed: int = 0


@dataclass
class TrainResult:
    """The trained encoder and what happened."""

    encoder: EEGEncoder
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    restarts: int = 0
    device: str = "cpu"


class Heads(nn.Module):
    """Projection heads used only by the contrastive loss.

    As in SimCLR, the latent *before* the head is what transfers best, so that is what is exported.
    """

    def __init__(self, dim: int, out: int = 32) -> None:
        super().__init__()
        self.glob = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, out))
        self.group = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, out))


def contrastive(
    emb: torch.Tensor, segment: torch.Tensor, t: torch.Tensor, max_lag: float, temperature: float
) -> torch.Tensor:
    """Multi-positive InfoNCE over items (N, d).

    Positives: other items of the same recording at most ``max_lag`` s apart.
    Negatives: items of other recordings. Same recording further apart: ignored.
    """
    n = emb.shape[0]
    z = F.normalize(emb, dim=-1)
    sim = z @ z.T / temperature
    same = segment[:, None] == segment[None, :]
    near = (t[:, None] - t[None, :]).abs() <= max_lag + 1e-6
    eye = torch.eye(n, dtype=torch.bool, device=emb.device)
    pos = same & near & ~eye
    valid = (pos | ~same) & ~eye
    logits = sim.masked_fill(~valid, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = pos.sum(1)
    has = n_pos > 0
    per_item = -(log_prob.masked_fill(~pos, 0.0)).sum(1)[has] / n_pos[has]
    return per_item.mean()


def _group_items(
    zg_a: torch.Tensor, zg_b: torch.Tensor, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group latents present on both sides, with keys that make regions distinct recordings."""
    both = (batch.a.group_mask.sum(-1) > 0) & (batch.b.group_mask.sum(-1) > 0)  # (B, G)
    pair, grp = torch.nonzero(both, as_tuple=True)
    n_groups = zg_a.shape[1]
    dp, dg = pair.to(zg_a.device), grp.to(zg_a.device)
    emb = torch.cat([zg_a[dp, dg], zg_b[dp, dg]])
    seg = torch.cat([batch.segment_a[pair], batch.segment_b[pair]]) * n_groups + torch.cat([grp, grp])
    t = torch.cat([batch.t_a[pair], batch.t_b[pair]])
    return emb, seg, t


def _lr(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))


def _forward(encoder: EEGEncoder, view: View) -> tuple[torch.Tensor, torch.Tensor]:
    return encoder(view.x, view.region, view.group_mask)


@torch.no_grad()
def evaluate_tokens(encoder: EEGEncoder, sessions: Sequence[SessionArrays], device: torch.device) -> np.ndarray:
    """Tokens of every window of ``sessions`` with all channels (for perplexity)."""
    encoder.eval()
    out = []
    for sess in sessions:
        for a in range(0, sess.x.shape[0], 256):
            view = full_view(sess, np.arange(a, min(a + 256, sess.x.shape[0]))).to(device)
            z, _ = _forward(encoder, view)
            out.append(encoder.tokens(z).cpu().numpy())
    encoder.train()
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def train(
    train_sessions: Sequence[SessionArrays],
    val_sessions: Sequence[SessionArrays],
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    aug: AugmentConfig,
    sup: SupervisedConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train an encoder; deterministic for a seed on a given device and thread count.

    With ``sup.weight > 0`` the rest/task labels of the training sessions add a supervised term
    (see :mod:`.supervised`); validation sessions are never used for it.
    """
    dev = torch.device(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    encoder = EEGEncoder(model_cfg).to(dev)
    heads = Heads(model_cfg.latent_dim).to(dev)
    codebook = Codebook(encoder)
    params = list(encoder.parameters()) + list(heads.parameters())
    sup = sup or SupervisedConfig()
    labelled: LabelledSampler | None = None
    state_head: StateHead | None = None
    if sup.weight > 0:
        labelled = LabelledSampler(train_sessions, sup, aug)
        state_head = StateHead(model_cfg.latent_dim).to(dev)
        params += list(state_head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = PairSampler(train_sessions, aug)
    val_sampler = PairSampler(val_sessions, aug) if val_sessions else None
    history: list[dict[str, float]] = []
    t0 = time.monotonic()
    bar = tqdm(range(cfg.steps), desc="train encoder", disable=not progress, unit="step")
    running: dict[str, float] = {}
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg)
        batch = sampler.sample(rng, cfg.pairs)
        losses = _losses(encoder, heads, codebook, batch, cfg, aug, dev)
        if labelled is not None and state_head is not None:
            lbatch = labelled.sample(rng)
            z_s, _ = _forward(encoder, lbatch.view.to(dev))
            l_state, acc = state_loss(state_head, z_s, lbatch)
            losses["total"] = losses["total"] + sup.weight * l_state
            losses["state"], losses["state_acc"] = l_state.detach(), acc
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        z_all = losses.pop("z").detach()
        losses["total"] = losses["total"].detach()
        if step + 1 == cfg.warmup:
            codebook.seed(z_all, gen)  # data-dependent start: every code on a real latent
        codebook.update(z_all, gen)
        if (step + 1) % cfg.restart_every == 0 and cfg.warmup < step + 1 < cfg.steps:
            codebook.restart_dead(z_all, gen)
        for k, v in losses.items():
            running[k] = 0.95 * running.get(k, float(v)) + 0.05 * float(v)
        bar.set_postfix(loss=f"{running['total']:.3f}", refresh=False)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            row = {"step": float(step + 1), **{f"train_{k}": v for k, v in running.items()}}
            row["seconds"] = time.monotonic() - t0
            row["restarts"] = float(codebook.restarts)
            if val_sampler is not None:
                row.update(_validate(encoder, heads, codebook, val_sampler, val_sessions, cfg, aug, dev))
                if state_head is not None:
                    row.update(_validate_state(encoder, state_head, val_sessions, sup, dev))
            history.append(row)
            if log is not None:
                log(" ".join(f"{k}={v:.4g}" for k, v in row.items()))
    bar.close()
    encoder.eval()
    return TrainResult(encoder, history, time.monotonic() - t0, codebook.restarts, str(dev))


def _losses(
    encoder: EEGEncoder,
    heads: Heads,
    codebook: Codebook,
    batch: Batch,
    cfg: TrainConfig,
    aug: AugmentConfig,
    dev: torch.device,
) -> dict[str, Any]:
    z_a, zg_a = _forward(encoder, batch.a.to(dev))
    z_b, zg_b = _forward(encoder, batch.b.to(dev))
    seg = torch.cat([batch.segment_a, batch.segment_b]).to(dev)
    t = torch.cat([batch.t_a, batch.t_b]).to(dev)
    z = torch.cat([z_a, z_b])
    l_glob = contrastive(heads.glob(z), seg, t, aug.max_lag, cfg.temperature)
    g_emb, g_seg, g_t = _group_items(zg_a, zg_b, batch)
    l_group = contrastive(heads.group(g_emb), g_seg.to(dev), g_t.to(dev), aug.max_lag, cfg.temperature)
    l_commit = codebook.commitment(z)
    total = l_glob + cfg.group_weight * l_group + cfg.commit_weight * l_commit
    return {
        "total": total,
        "global": l_glob.detach(),
        "group": l_group.detach(),
        "commit": l_commit.detach(),
        "z": z,
    }


@torch.no_grad()
def _validate(
    encoder: EEGEncoder,
    heads: Heads,
    codebook: Codebook,
    sampler: PairSampler,
    sessions: Sequence[SessionArrays],
    cfg: TrainConfig,
    aug: AugmentConfig,
    dev: torch.device,
) -> dict[str, float]:
    """Loss on held-out subjects (fixed batches) and codebook perplexity on all their windows."""
    encoder.eval()
    rng = np.random.default_rng(cfg.seed + 1)
    vals = [_losses(encoder, heads, codebook, sampler.sample(rng, cfg.pairs), cfg, aug, dev) for _ in range(4)]
    encoder.train()
    tokens = evaluate_tokens(encoder, sessions, dev)
    k = encoder.cfg.codebook_size
    return {
        "val_global": float(np.mean([float(v["global"]) for v in vals])),
        "val_group": float(np.mean([float(v["group"]) for v in vals])),
        "val_perplexity": perplexity(torch.from_numpy(tokens), k),
        "val_codes_used": float(len(np.unique(tokens))),
    }


@torch.no_grad()
def _validate_state(
    encoder: EEGEncoder, head: StateHead, sessions: Sequence[SessionArrays], sup: SupervisedConfig, dev: torch.device
) -> dict[str, float]:
    """Balanced accuracy of the state head on held-out rest+task sessions (all channels, centred latents)."""
    encoder.eval()
    accs = []
    for sess in sessions:
        if tuple(sess.labels) != ("rest", "task"):
            continue
        rows = np.flatnonzero(sess.segment >= 0)
        chunks = [rows[a : a + 256] for a in range(0, rows.size, 256)]
        z = torch.cat([_forward(encoder, full_view(sess, c).to(dev))[0] for c in chunks])
        cal = torch.from_numpy(sess.t_end[rows] - sess.t_end[0] <= sup.baseline).to(dev)
        u = centred(z, torch.zeros(rows.size, dtype=torch.int64, device=dev), cal)
        pred = (head(u) > 0).cpu().numpy()
        y = sess.segment[rows]
        accs.append(0.5 * (np.mean(pred[y == 0] == 0) + np.mean(pred[y == 1] == 1)))
    encoder.train()
    return {"val_state_bacc": float(np.mean(accs))} if accs else {}


def checkpoint(
    result: TrainResult,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    aug: AugmentConfig,
    sup: SupervisedConfig | None = None,
) -> dict[str, Any]:
    """Everything needed to export again or resume inspection (torch.save-able)."""
    return {
        "supervised_config": asdict(sup or SupervisedConfig()),
        "format": 1,
        "state_dict": {k: v.detach().cpu() for k, v in result.encoder.state_dict().items()},
        "model_config": model_cfg.as_dict(),
        "train_config": asdict(cfg),
        "augment_config": asdict(aug),
        "history": result.history,
        "seconds": result.seconds,
        "restarts": result.restarts,
        "device": result.device,
    }


def load_encoder(ckpt: dict[str, Any]) -> EEGEncoder:
    """Rebuild the encoder of a checkpoint made by :func:`checkpoint`."""
    encoder = EEGEncoder(ModelConfig(**ckpt["model_config"]))
    encoder.load_state_dict(ckpt["state_dict"])
    encoder.eval()
    return encoder
