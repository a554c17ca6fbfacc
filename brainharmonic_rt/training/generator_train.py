"""Train the note generator (bar-latent VAE + conditioned GRU) on the tokenised MIDI corpus.

``brainharmonic train generator --midi DIR --out models/generator.onnx`` lands in
:func:`train_generator`. Windows of ``--seq`` tokens start on a Bar token of a random training
track (tracks drawn in proportion to their length); each bar's tokens give a posterior over its
latent; the generator predicts every next token from the sampled latents. Loss = cross-entropy
+ beta · KL (per bar, with free bits per dimension, beta ramped up over the first 30 % of the
steps); conditioning dropout (``--cond-drop``) zeroes the latent and its flag for whole windows.
Seeded (numpy and torch); CUDA when present.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import DataError
from ..music.tokens import DEFAULT_TOKENIZER, Vocab, bar_index
from .generator_data import Corpus, load_or_build, programs_seen
from .generator_model import GenConfig, Generator

log = logging.getLogger(__name__)
DEFAULT_MIDI = Path(__file__).resolve().parents[3] / "shared" / "data" / "midi"
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "models" / "generator.onnx"


def add_train_generator_args(p: argparse.ArgumentParser) -> None:
    """Options of ``brainharmonic train generator``."""
    p.add_argument("--midi", type=Path, default=DEFAULT_MIDI, help="MIDI corpus folder (subfolders = styles)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="ONNX step model to write")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer file (default: beside --out)")
    p.add_argument("--cache", type=Path, default=None, help="tokenised corpus cache (.npz) to read/write")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--minutes", type=float, default=None, help="stop after this wall time (minutes)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=256, help="tokens per training window")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--beta", type=float, default=0.5, help="KL weight after the ramp")
    p.add_argument("--free-bits", type=float, default=0.1, help="nats per latent dimension not penalised")
    p.add_argument("--cond-drop", type=float, default=0.1, help="probability of an unconditioned window")
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-progress", action="store_true")


@dataclass
class Batch:
    ids: torch.Tensor  # (B, T+1) int64
    bar: torch.Tensor  # (B, T+1) int64 (-1 padding)
    program: torch.Tensor  # (B,) int64
    n_bars: int


class Sampler:
    """Random windows starting on Bar tokens of the tracks of one split."""

    def __init__(self, corpus: Corpus, split: str, vocab: Vocab, seq: int, seed: int) -> None:
        self.c = corpus
        self.seq = seq
        self.vocab = vocab
        self.tracks = corpus.tracks_in(split)
        self.tracks = self.tracks[corpus.length[self.tracks] >= 8]
        if self.tracks.size == 0:
            raise DataError(f"The {split} split holds no track of 8 tokens or more; pass a larger MIDI corpus.")
        lengths = corpus.length[self.tracks].astype(np.float64)
        self.p = lengths / lengths.sum()
        self.rng = np.random.default_rng(seed)
        self._bars = {int(t): np.flatnonzero(corpus.track(int(t)) == vocab.bar) for t in self.tracks}

    def batch(self, size: int) -> Batch:
        t1 = self.seq + 1
        ids = np.full((size, t1), self.vocab.pad, dtype=np.int64)
        bar = np.full((size, t1), -1, dtype=np.int64)
        prog = np.zeros(size, dtype=np.int64)
        for i in range(size):
            tr = int(self.rng.choice(self.tracks, p=self.p))
            toks = self.c.track(tr)
            starts = self._bars[tr]
            s = int(self.rng.choice(starts)) if starts.size else 0
            w = toks[s : s + t1].astype(np.int64)
            ids[i, : w.size] = w
            bar[i, : w.size] = bar_index(w, self.vocab.bar)
            prog[i] = self.c.program[tr]
        n_bars = int(bar.max()) + 1
        return Batch(torch.from_numpy(ids), torch.from_numpy(bar), torch.from_numpy(prog), n_bars)


def losses(
    model: Generator, b: Batch, device: torch.device, cond_drop: float, free_bits: float, sample: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token cross-entropy (nats) and mean KL per bar (with free bits)."""
    ids, bar, prog = b.ids.to(device), b.bar.to(device), b.program.to(device)
    mu, logvar = model.encoder(ids, bar, b.n_bars)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
    keep = torch.ones(ids.shape[0], 1, 1, device=device)
    if cond_drop > 0:
        keep = (torch.rand(ids.shape[0], 1, 1, device=device) >= cond_drop).float()
    zt = torch.gather(z, 1, bar.clamp(min=0).unsqueeze(-1).expand(-1, -1, z.shape[-1]))  # (B, T+1, D)
    cond = torch.cat([zt, torch.ones_like(zt[..., :1])], -1) * keep
    logits, _ = model(ids[:, :-1], cond[:, :-1], prog)
    target = ids[:, 1:].clone()
    target[bar[:, 1:] < 0] = -100
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)  # (B, n_bars, D)
    present = torch.zeros(ids.shape[0], b.n_bars, device=device)
    present.scatter_(1, bar.clamp(min=0), (bar >= 0).float())
    kl_bar = (kl.clamp(min=free_bits).sum(-1) * present).sum() / present.sum().clamp(min=1)
    return ce, kl_bar


@torch.no_grad()
def validate(model: Generator, sampler: Sampler, device: torch.device, n: int = 8, batch: int = 32) -> float:
    """Mean cross-entropy (nats / token) on ``n`` fixed-seed batches, latents = posterior means."""
    model.eval()
    rng_state = sampler.rng.bit_generator.state
    sampler.rng = np.random.default_rng(12345)
    vals = [float(losses(model, sampler.batch(batch), device, 0.0, 0.0, sample=False)[0]) for _ in range(n)]
    sampler.rng.bit_generator.state = rng_state
    model.train()
    return float(np.mean(vals))


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def train(args: argparse.Namespace, corpus: Corpus, vocab: Vocab) -> tuple[Generator, dict[str, float]]:
    """The training loop; returns the model (on CPU, eval mode) and a summary."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cfg = GenConfig(len(vocab), args.latent_dim, args.hidden, args.layers)
    model = Generator(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    train_s = Sampler(corpus, "train", vocab, args.seq, args.seed)
    val_split = "val"
    if corpus.tracks_in("val").size == 0:
        log.warning("No file of the corpus fell in the validation split; validating on training files.")
        val_split = "train"
    val_s = Sampler(corpus, val_split, vocab, args.seq, args.seed + 1)
    t0 = time.monotonic()
    deadline = t0 + 60 * args.minutes if args.minutes else math.inf
    history: list[tuple[int, float]] = []
    step = 0
    last_val = float("nan")
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=args.steps, desc="train generator", unit="step")
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        beta = args.beta * min(1.0, step / max(1, 0.3 * args.steps))
        ce, kl = losses(model, train_s.batch(args.batch), device, args.cond_drop, args.free_bits)
        loss = ce + beta * kl / 24.0  # about 24 tokens per bar: KL per bar → per token
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(ce=f"{float(ce.detach()):.3f}", kl=f"{float(kl.detach()):.2f}", val=f"{last_val:.3f}")
        if step % args.val_every == 0 or step == args.steps or time.monotonic() > deadline:
            v = last_val = validate(model, val_s, device)
            history.append((step, v))
            log.info(
                "step %d  train ce %.3f  kl/bar %.2f  val ce %.3f  (%.0f s)",
                step,
                float(ce.detach()),
                float(kl.detach()),
                v,
                time.monotonic() - t0,
            )
            if args.no_progress:
                print(
                    f"step {step} ce {float(ce.detach()):.3f} kl {float(kl.detach()):.2f} val {v:.3f} "
                    f"t {time.monotonic() - t0:.0f}s",
                    flush=True,
                )
        if time.monotonic() > deadline:
            break
    if bar is not None:
        bar.close()
    model = model.cpu().eval()
    summary = {
        "steps": float(step),
        "train_seconds": time.monotonic() - t0,
        "val_ce": history[-1][1] if history else float("nan"),
        "params": float(sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder."))),
        "encoder_params": float(sum(p.numel() for p in model.encoder.parameters())),
    }
    return model, summary


def train_generator(args: argparse.Namespace) -> int:
    """``brainharmonic train generator``: tokenise (or load the cache), train, export, write the card."""
    from .generator_eval import evaluate_latent_space
    from .generator_export import export_generator

    out: Path = args.out
    tok_path: Path = args.tokenizer or out.with_name(DEFAULT_TOKENIZER.name)
    corpus = load_or_build(args.midi, args.cache, tok_path)
    vocab = Vocab.from_file(tok_path)
    model, summary = train(args, corpus, vocab)
    hp = {k: v for k, v in vars(args).items() if k not in ("midi", "out", "tokenizer", "cache", "no_progress")}
    torch.save(
        {"config": model.cfg.to_dict(), "state": model.state_dict(), "summary": summary, "hparams": hp},
        out.with_suffix(".pt"),
    )
    diff = export_generator(model, vocab, out, programs_seen(corpus))
    summary["parity_max_abs"] = diff
    latent = evaluate_latent_space(out.with_suffix(".pt"), corpus, vocab, out.with_name("generator_latent.npz"))
    record = {"summary": summary, "latent_space": latent, "hparams": hp}
    out.with_suffix(".train.json").write_text(json.dumps(record, indent=1, default=str))
    print(json.dumps({"summary": summary, "latent_space": latent}, indent=1, default=str))
    return 0
