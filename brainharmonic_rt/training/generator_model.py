"""The note generator (torch): a bar-latent VAE around a conditioned GRU language model.

* :class:`BarEncoder` – the tokens of one bar → ``mu, logvar`` of shape (latent_dim,): a bag of
  token embeddings (sum / sqrt(n), plus log token count) through an MLP. Cheap, order-free within
  the bar except through the Position tokens, which is enough to capture density, register,
  pitch classes and rhythm.
* :class:`Generator` – token embedding, then ``n_layers`` single-layer GRUs; every layer's input
  gets ``W_l [z, has_latent] + P_l[program]`` added (MuseMorphose's "in-attention" idea for a GRU),
  so the bar latent and the instrument steer every layer. ``has_latent`` = 0 with ``z`` = 0 is the
  unconditioned mode (conditioning dropout trains it).
* :class:`StepModel` – one decoding step with explicit GRU cells sharing the weights, exported to
  ONNX: ``(token, latent, has_latent, program, logit_bias, state) → (logits, state)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..music.tokens import N_PROGRAMS


@dataclass(frozen=True)
class GenConfig:
    vocab_size: int
    latent_dim: int = 32
    hidden: int = 256
    n_layers: int = 2
    enc_dim: int = 128

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class BarEncoder(nn.Module):
    """Bars → posterior parameters. Input: token ids (B, T), bar index per token (B, T) and bars (B, n_bars)."""

    def __init__(self, cfg: GenConfig) -> None:
        super().__init__()
        self.emb = nn.Embedding(cfg.vocab_size, cfg.enc_dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.enc_dim + 1, 256),
            nn.GELU(),
            nn.Linear(256, 256),
            nn.GELU(),
            nn.Linear(256, 2 * cfg.latent_dim),
        )

    def forward(self, ids: torch.Tensor, bar: torch.Tensor, n_bars: int) -> tuple[torch.Tensor, torch.Tensor]:
        """ids, bar: (B, T) int64 (bar < n_bars; -1 = padding) → mu, logvar: (B, n_bars, D)."""
        b, t = ids.shape
        e = self.emb(ids)  # (B, T, E)
        valid = (bar >= 0).unsqueeze(-1).to(e.dtype)
        idx = (bar.clamp(min=0) + torch.arange(b, device=ids.device).unsqueeze(1) * n_bars).reshape(-1)
        sums = torch.zeros(b * n_bars, e.shape[-1], device=ids.device).index_add_(
            0, idx, (e * valid).reshape(b * t, -1)
        )
        counts = torch.zeros(b * n_bars, device=ids.device).index_add_(0, idx, valid.reshape(-1))
        feat = torch.cat([sums / counts.clamp(min=1).sqrt().unsqueeze(-1), torch.log1p(counts).unsqueeze(-1)], -1)
        mu, logvar = self.mlp(feat).reshape(b, n_bars, -1).chunk(2, dim=-1)
        return mu, logvar.clamp(-8.0, 4.0)


class Generator(nn.Module):
    def __init__(self, cfg: GenConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.emb = nn.Embedding(cfg.vocab_size, h)
        self.cond = nn.ModuleList([nn.Linear(cfg.latent_dim + 1, h) for _ in range(cfg.n_layers)])
        self.prog = nn.ModuleList([nn.Embedding(N_PROGRAMS, h) for _ in range(cfg.n_layers)])
        self.grus = nn.ModuleList([nn.GRU(h, h, batch_first=True) for _ in range(cfg.n_layers)])
        self.norm = nn.LayerNorm(h)
        self.head = nn.Linear(h, cfg.vocab_size)
        self.encoder = BarEncoder(cfg)

    def forward(
        self, ids: torch.Tensor, cond: torch.Tensor, program: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) int64; cond (B, T, D+1) = [z, has_latent]; program (B,) → logits (B, T, V), h (L, B, H)."""
        x = self.emb(ids)
        hs = []
        for i, gru in enumerate(self.grus):
            x = x + self.cond[i](cond) + self.prog[i](program).unsqueeze(1)
            out, hn = gru(x, None if h0 is None else h0[i : i + 1].contiguous())
            x = out if i == 0 else out + x
            hs.append(hn)
        return self.head(self.norm(x)), torch.cat(hs, 0)


class StepModel(nn.Module):
    """One token per call with the GRU state as input and output (for ONNX incremental decoding)."""

    def __init__(self, gen: Generator) -> None:
        super().__init__()
        self.gen = gen

    def forward(
        self,
        token: torch.Tensor,  # (B,) int64
        latent: torch.Tensor,  # (B, D) float32
        has_latent: torch.Tensor,  # (B, 1) float32
        program: torch.Tensor,  # (B,) int64
        logit_bias: torch.Tensor,  # (B, V) float32, added to the logits (-inf / -1e9 forbids a token)
        state: torch.Tensor,  # (L, B, H) float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gen
        cond = torch.cat([latent, has_latent], -1)
        x = g.emb(token)
        new = []
        for i, gru in enumerate(g.grus):
            x = x + g.cond[i](cond) + g.prog[i](program)
            h = state[i]
            assert isinstance(gru, nn.GRU)
            w_ih, w_hh, b_ih, b_hh = gru.all_weights[0]  # PyTorch's gate order: r, z, n
            gi = F.linear(x, w_ih, b_ih)
            gh = F.linear(h, w_hh, b_hh)
            ir, iz, in_ = gi.chunk(3, -1)
            hr, hz, hn = gh.chunk(3, -1)
            r = torch.sigmoid(ir + hr)
            z = torch.sigmoid(iz + hz)
            n = torch.tanh(in_ + r * hn)
            h2 = (1 - z) * n + z * h
            x = h2 if i == 0 else h2 + x
            new.append(h2)
        return g.head(g.norm(x)) + logit_bias, torch.stack(new, 0)
