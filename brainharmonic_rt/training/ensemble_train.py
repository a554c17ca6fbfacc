"""Train the ensemble model on the multi-track corpus, export it to ONNX and check parity.

``brainharmonic train ensemble [--corpus DIR] [--out models/ensemble.onnx] [--minutes M] ...``:
windows of ``--steps-per-window`` grid steps starting on a bar line of a training piece (pieces
drawn with a weight per source, so the multi-voice repertoires are not drowned by the ~9000 folk
tunes); every voice of the window is a stream, voices ordered by mean pitch (bass first, the
order the runtime decides them in). Loss = next-event cross-entropy (with the learned pair and
motion terms) + onset-length cross-entropy + β · KL of both bar latents (free bits, β ramped).
Conditioning dropout: whole windows without latents (``--cond-drop``) and voices without their
own latent. Seeded; one thread by default; a log line per validation with the curves written to
``models/ensemble.train.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import DataError
from ..music.ensemble_grid import LOW_PITCH, N_PITCH, ROLES, register_features
from .ensemble_corpus import CorpusArrays, bar_positions, corpus_paths
from .ensemble_model import EnsembleConfig, EnsembleNet, interaction

#: sampling weight of a piece, by source (then × voices): balances chorales and polyphony against folk tunes
SOURCE_WEIGHT = {
    "bach": 3.0,
    "palestrina": 1.5,
    "monteverdi": 3.0,
    "trecento": 2.0,
    "quartets": 3.0,
    "essen": 0.15,
    "ryans": 0.3,
    "oneills": 0.2,
    "midi": 0.6,
}
MAX_BARS = 16


@dataclass
class PieceGrid:
    """Dense per-voice arrays of one piece (V, n_steps): onset event, length class, held event, last onset."""

    ev: np.ndarray
    dur: np.ndarray
    held: np.ndarray
    last: np.ndarray
    pos: np.ndarray  # (n_steps,)
    downbeats: np.ndarray
    role: np.ndarray  # (V,)
    program: np.ndarray
    register: np.ndarray  # (V, 2)
    mode: int
    source: str


def grid_of(c: CorpusArrays, k: int) -> PieceGrid:
    """Piece ``k`` of the corpus as dense grids, voices ordered by mean pitch (bass first)."""
    lines = c.piece_lines(k)
    n = int(c.n_steps[k]) + 1
    rows = []
    for li in lines:
        sel = c.line_notes(int(li))
        rows.append((c.onset[sel].astype(np.int64), c.dur[sel].astype(np.int64), c.pitch[sel].astype(np.int64), li))
    rows.sort(key=lambda r: float(r[2].mean()))
    v = len(rows)
    ev = np.zeros((v, n), np.int64)
    dur = np.full((v, n), -100, np.int64)
    held = np.zeros((v, n), np.int64)
    last = np.zeros((v, n), np.int64)
    reg = np.zeros((v, 2), np.float32)
    for i, (on, du, pi, _) in enumerate(rows):
        e = pi - LOW_PITCH + 1
        ev[i, on] = e
        dur[i, on] = du - 1
        # held: steps on+1 .. on+du-1 carry the note
        lens = np.maximum(du - 1, 0)
        idx = np.repeat(on, lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)) + 1
        held[i, np.minimum(idx, n - 1)] = np.repeat(e, lens)
        # last onset strictly before t
        mark = np.zeros(n, np.int64)
        mark[on] = e
        filled = np.maximum.accumulate(np.where(mark > 0, np.arange(n), -1))
        prev = np.where(filled >= 0, mark[np.maximum(filled, 0)], 0)
        last[i, 1:] = prev[:-1]
        reg[i] = register_features(float(pi.min()), float(pi.max()))
    db = c.piece_downbeats(k)
    return PieceGrid(
        ev,
        dur,
        held,
        last,
        bar_positions(db, n),
        db[(db >= 0) & (db < n - 8)],
        c.role[[r[3] for r in rows]].astype(np.int64),
        c.program[[r[3] for r in rows]].astype(np.int64),
        reg,
        int(c.mode[k]),
        c.sources[int(c.piece_source[k])],
    )


@dataclass
class Batch:
    ev: torch.Tensor  # (B, V, T)
    dur: torch.Tensor
    held: torch.Tensor
    last: torch.Tensor
    prev: torch.Tensor
    pos: torch.Tensor  # (B, T)
    bar: torch.Tensor  # (B, T)
    valid: torch.Tensor  # (B, V) bool
    role: torch.Tensor  # (B, V)
    program: torch.Tensor
    register: torch.Tensor  # (B, V, 2)
    mode: torch.Tensor  # (B,)
    n_bars: int


class Sampler:
    """Random windows starting on bar lines of one split's pieces."""

    def __init__(self, grids: list[PieceGrid], window: int, seed: int) -> None:
        self.grids = [g for g in grids if g.ev.shape[1] > window // 2]
        if not self.grids:
            raise DataError("No piece of this split is long enough for a training window; build a larger corpus.")
        w = np.array([SOURCE_WEIGHT.get(g.source, 1.0) * g.ev.shape[0] for g in self.grids], float)
        self.p = w / w.sum()
        self.window = window
        self.rng = np.random.default_rng(seed)
        self.max_v = max(g.ev.shape[0] for g in self.grids)

    def batch(self, size: int) -> Batch:
        t, vmax = self.window, self.max_v
        arr = {k: np.zeros((size, vmax, t), np.int64) for k in ("ev", "held", "last", "prev")}
        arr["dur"] = np.full((size, vmax, t), -100, np.int64)
        pos = np.zeros((size, t), np.int64)
        valid = np.zeros((size, vmax), bool)
        role = np.zeros((size, vmax), np.int64)
        prog = np.zeros((size, vmax), np.int64)
        reg = np.zeros((size, vmax, 2), np.float32)
        mode = np.zeros(size, np.int64)
        for i in range(size):
            g = self.grids[int(self.rng.choice(len(self.grids), p=self.p))]
            n = g.ev.shape[1]
            starts = g.downbeats if g.downbeats.size else np.array([0])
            s = int(self.rng.choice(starts))
            e = min(s + t, n)
            v = g.ev.shape[0]
            for key, src in (("ev", g.ev), ("dur", g.dur), ("held", g.held), ("last", g.last)):
                arr[key][i, :v, : e - s] = src[:, s:e]
            arr["prev"][i, :v, 1 : e - s] = g.ev[:, s : e - 1]
            if s > 0:
                arr["prev"][i, :v, 0] = g.ev[:, s - 1]
            arr["dur"][i, :, e - s :] = -100
            pos[i, : e - s] = g.pos[s:e]
            valid[i, :v] = True
            role[i, :v], prog[i, :v], reg[i, :v] = g.role, g.program, g.register
            mode[i] = g.mode
            arr["ev"][i, :, e - s :] = -1  # past the end: ignored (set back to 0 for the inputs below)
        bar = np.cumsum(pos == 0, axis=1) - 1
        bar = np.clip(bar, 0, MAX_BARS - 1)
        return Batch(
            **{k: torch.from_numpy(v) for k, v in arr.items()},
            pos=torch.from_numpy(pos),
            bar=torch.from_numpy(bar),
            valid=torch.from_numpy(valid),
            role=torch.from_numpy(role),
            program=torch.from_numpy(prog),
            register=torch.from_numpy(reg),
            mode=torch.from_numpy(mode),
            n_bars=int(bar.max()) + 1,
        )


def forward(
    net: EnsembleNet, b: Batch, cond_drop: float, free_bits: float, sample: bool = True
) -> dict[str, torch.Tensor]:
    """Event CE (nats per voice-step), length CE (per onset), KL per bar (global + voice), event accuracy."""
    bsz, v, t = b.ev.shape
    target = b.ev
    ev = target.clamp(min=0)
    mu_g, lv_g, mu_v, lv_v = net.encoder(ev, b.dur, b.pos, b.bar, b.valid, b.n_bars)

    def draw(mu: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * (0.5 * lv).exp() if sample else mu

    zg, zv = draw(mu_g, lv_g), draw(mu_v, lv_v)  # (B, n, D), (B, V, n, D)
    idx = b.bar[:, None, :, None].expand(-1, v, -1, zg.shape[-1])
    zg_t = torch.gather(zg[:, None].expand(-1, v, -1, -1), 2, idx)
    zv_t = torch.gather(zv, 2, idx)
    keep = torch.ones(bsz, 1, 1, 1)
    keep_v = torch.ones(bsz, v, 1, 1)
    if cond_drop > 0:
        keep = (torch.rand(bsz, 1, 1, 1) >= cond_drop).float()
        keep_v = (torch.rand(bsz, v, 1, 1) >= cond_drop).float()
    cond = torch.cat([zg_t * keep, zv_t * keep * keep_v, keep.expand(-1, v, t, 1)], -1)  # (B, V, T, 2D+1)
    others_oh = F.one_hot(b.held, N_PITCH + 1)[..., 1:].float() * b.valid[:, :, None, None].float()
    others = others_oh.sum(1, keepdim=True) - others_oh  # (B, V, T, P): other voices' held pitches
    flat = bsz * v
    x = net.inputs(
        b.prev.reshape(flat, t),
        b.held.reshape(flat, t),
        others.reshape(flat, t, N_PITCH),
        b.pos[:, None].expand(-1, v, -1).reshape(flat, t),
        b.role.reshape(flat),
        b.program.reshape(flat),
        b.register.reshape(flat, 2),
        b.mode[:, None].expand(-1, v).reshape(flat),
    )
    logits, dur_logits = net.core(x, cond.reshape(flat, t, -1))
    logits = logits.reshape(bsz, v, t, -1)
    extra = interaction(net, ev, b.held, b.last, b.role, b.valid)
    logits = torch.cat([logits[..., :1], logits[..., 1:] + extra], -1)
    mask = b.valid[:, :, None] & (target >= 0)
    tgt = torch.where(mask, target, torch.full_like(target, -100))
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100)
    dce = F.cross_entropy(dur_logits.reshape(-1, dur_logits.shape[-1]), b.dur.reshape(-1), ignore_index=-100)
    present = torch.zeros(bsz, b.n_bars)
    present.scatter_(1, b.bar, torch.ones_like(b.bar, dtype=torch.float32))

    def kl(mu: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
        return (0.5 * (mu.pow(2) + lv.exp() - 1.0 - lv)).clamp(min=free_bits).sum(-1)

    kl_g = (kl(mu_g, lv_g) * present).sum() / present.sum().clamp(min=1)
    pv = present[:, None] * b.valid[:, :, None].float()
    kl_v = (kl(mu_v, lv_v) * pv).sum() / pv.sum().clamp(min=1)
    acc = ((logits.argmax(-1) == target) & mask).float().sum() / mask.float().sum().clamp(min=1)
    return {"ce": ce, "dur_ce": dce, "kl_g": kl_g, "kl_v": kl_v, "acc": acc}


@torch.no_grad()
def validate(net: EnsembleNet, sampler: Sampler, n: int = 6, batch: int = 16) -> dict[str, float]:
    net.eval()
    state = sampler.rng.bit_generator.state
    sampler.rng = np.random.default_rng(12345)
    rows = [forward(net, sampler.batch(batch), 0.0, 0.0, sample=False) for _ in range(n)]
    sampler.rng.bit_generator.state = state
    net.train()
    return {k: float(np.mean([float(r[k]) for r in rows])) for k in rows[0]}


def load_grids(corpus: CorpusArrays, split: str) -> list[PieceGrid]:
    return [grid_of(corpus, int(k)) for k in corpus.pieces_in(split)]


def train(args: argparse.Namespace, corpus: CorpusArrays) -> tuple[EnsembleNet, dict[str, Any]]:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t_load = time.monotonic()
    tr = Sampler(load_grids(corpus, "train"), args.window, args.seed)
    va = Sampler(load_grids(corpus, "val"), args.window, args.seed + 1)
    load_s = time.monotonic() - t_load
    cfg = EnsembleConfig(args.hidden, args.layers, args.latent_dim)
    net = EnsembleNet(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    t0 = time.monotonic()
    deadline = t0 + 60 * args.minutes if args.minutes else math.inf
    history: list[dict[str, float]] = []
    step = 0
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        beta = args.beta * min(1.0, step / max(1, 0.3 * args.steps))
        out = forward(net, tr.batch(args.batch), args.cond_drop, args.free_bits)
        # KL per bar → per voice-step (about 8 steps a bar; the global latent is shared by ~4 voices)
        loss = out["ce"] + out["dur_ce"] * 0.5 + beta * (out["kl_v"] + out["kl_g"] / 4.0) / 8.0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        done = time.monotonic() > deadline
        if step % args.val_every == 0 or step == args.steps or done:
            val = validate(net, va)
            row = {"step": float(step), "seconds": time.monotonic() - t0}
            row |= {f"train_{k}": float(v.detach()) for k, v in out.items()}
            row |= {f"val_{k}": v for k, v in val.items()}
            history.append(row)
            print(
                f"step {step} ce {row['train_ce']:.3f} dur {row['train_dur_ce']:.3f} kl {row['train_kl_v']:.2f}/"
                f"{row['train_kl_g']:.2f} | val ce {val['ce']:.3f} dur {val['dur_ce']:.3f} acc {val['acc']:.3f} "
                f"t {row['seconds']:.0f}s",
                flush=True,
            )
        if done:
            break
    net.eval()
    summary = {
        "steps": step,
        "train_seconds": time.monotonic() - t0,
        "load_seconds": load_s,
        "train_windows_pieces": len(tr.grids),
        "val_pieces": len(va.grids),
        "params": sum(p.numel() for n, p in net.named_parameters() if not n.startswith("encoder.")),
        "encoder_params": sum(p.numel() for p in net.encoder.parameters()),
        "history": history,
    }
    return net, summary


@torch.no_grad()
def latent_summary(net: EnsembleNet, corpus: CorpusArrays, window: int, n_batches: int = 20) -> dict[str, np.ndarray]:
    """PCA of held-out bar latents (posterior means, global and voice pooled): what the latent map aligns to."""
    from ..brain.latent_map import Space

    grids = load_grids(corpus, "val") + load_grids(corpus, "test")
    s = Sampler(grids, window, 7)
    zs = []
    for _ in range(n_batches):
        b = s.batch(16)
        mu_g, _, mu_v, _ = net.encoder(b.ev.clamp(min=0), b.dur, b.pos, b.bar, b.valid, b.n_bars)
        present = torch.zeros(16, b.n_bars, dtype=torch.bool)
        present.scatter_(1, b.bar, True)
        zs.append(mu_g[present].numpy())
        zs.append(mu_v[present[:, None] & b.valid[:, :, None]].numpy())
    sp = Space.of(np.concatenate(zs))
    return {"mean": sp.mean, "axes": sp.axes, "std": sp.std}


def programs_seen(corpus: CorpusArrays, min_lines: int = 20) -> list[int]:
    """Programs of at least ``min_lines`` training lines, most lines first: the runtime conditions other
    programs as one of these (an embedding seen on a handful of lines is untrained and derails decoding)."""
    train = np.isin(corpus.line_piece, corpus.pieces_in("train"))
    counts = np.bincount(corpus.program[train].astype(np.int64), minlength=129)
    order = [int(p) for p in np.argsort(-counts, kind="stable") if counts[p] > 0]
    return [p for p in order if counts[p] >= min_lines] or order[:1]


def train_ensemble(args: argparse.Namespace) -> int:
    """``brainharmonic train ensemble``: train, export + parity, write the latent summary and the curves."""
    from .ensemble_export import export_ensemble

    npz, card = corpus_paths(args.corpus)
    corpus = CorpusArrays.load(npz)
    net, summary = train(args, corpus)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    hp = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "no_progress"}
    torch.save({"config": net.cfg.to_dict(), "state": net.state_dict(), "hparams": hp}, out.with_suffix(".pt"))
    programs = programs_seen(corpus)
    summary["parity_max_abs"] = export_ensemble(net, out, programs)
    summary["onnx_bytes"] = out.stat().st_size
    latent: dict[str, Any] = latent_summary(net, corpus, args.window)
    np.savez(out.with_name(out.stem + "_latent.npz"), **latent)
    summary["hparams"] = hp
    summary["corpus"] = json.loads(card.read_text()) if card.is_file() else {}
    summary["roles"] = list(ROLES)
    out.with_suffix(".train.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"wrote {out} ({summary['onnx_bytes'] / 1e6:.2f} MB, parity {summary['parity_max_abs']:.1e})")
    return 0
