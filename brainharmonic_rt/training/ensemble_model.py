"""The ensemble model (torch): per-voice GRU decoders that hear each other, plus a learned pair term.

At grid step t every voice v gets as input its own previous event, the pitch it still holds, the
pitches every *other* voice holds at t (a multi-hot over pitches and its pitch-class chroma), the
position in the bar, and its conditioning (role, GM program, register, mode, the bar's global and
own latent with a has-latent flag). Two GRU layers (conditioning added to each layer's input, as in
the note generator) give the logits of its event (none or an onset pitch) and of the onset's length.

Voices decide one after the other inside a step (bass first, melody last), so the model adds, for
every candidate pitch p of voice v, two learned tables over what is already known at t:

* ``pair[role_v, clip(p − q)]`` for every pitch q sounding in another voice (held from before t, or
  just chosen at t by a voice earlier in the order): spacing, crossing and consonance;
* ``motion[prev interval class, new interval class]`` for every earlier voice that moved at t, when p
  moves too: parallel and hidden fifths/octaves, contrary motion.

The GRU step is exported to ONNX (one call for the whole ensemble); the two tables are exported as
constant outputs and applied by the runtime in numpy (:func:`brainharmonic_rt.music.ensemble_grid.pair_bias`).

A bar encoder (bag of the bar's onsets → μ, log σ²) gives each voice's bar latent and the global bar
latent (all voices' onsets pooled); they are trained as a VAE with conditioning dropout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..music.ensemble_grid import (
    INTERVAL_RANGE,
    LOW_PITCH,
    MAX_DUR,
    N_EVENT,
    N_PITCH,
    N_POS,
    N_PROGRAMS,
    N_ROLES,
    NO_PREVIOUS,
)


@dataclass(frozen=True)
class EnsembleConfig:
    hidden: int = 160
    n_layers: int = 2
    latent_dim: int = 16  # per latent (global and voice): the model reads 2 * latent_dim
    enc_dim: int = 96

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _chroma() -> torch.Tensor:
    m = torch.zeros(N_PITCH, 12)
    m[torch.arange(N_PITCH), (torch.arange(N_PITCH) + LOW_PITCH) % 12] = 1.0
    return m


class BarEncoder(nn.Module):
    """Per bar: each voice's onsets and the pooled onsets of all voices → (μ, log σ²) of both latents."""

    def __init__(self, cfg: EnsembleConfig) -> None:
        super().__init__()
        e = cfg.enc_dim
        self.ev = nn.Embedding(N_EVENT, e)
        self.pos = nn.Embedding(N_POS, e)
        self.dur = nn.Embedding(MAX_DUR, e)
        self.voice = nn.Sequential(nn.Linear(e + 1, 192), nn.GELU(), nn.Linear(192, 2 * cfg.latent_dim))
        self.glob = nn.Sequential(nn.Linear(e + 2, 192), nn.GELU(), nn.Linear(192, 2 * cfg.latent_dim))

    def forward(
        self,
        ev: torch.Tensor,
        dur: torch.Tensor,
        pos: torch.Tensor,
        bar: torch.Tensor,
        valid: torch.Tensor,
        n_bars: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """ev, dur (B, V, T) (dur: class, ignored where ev = 0); pos, bar (B, T); valid (B, V) bool.

        Returns mu_g, logvar_g (B, n_bars, D) and mu_v, logvar_v (B, V, n_bars, D)."""
        _b, _v, _t = ev.shape
        onset = ((ev > 0) & valid[:, :, None]).float()
        x = (self.ev(ev) + self.pos(pos)[:, None] + self.dur(dur.clamp(min=0))) * onset[..., None]  # (B,V,T,E)
        oh = F.one_hot(bar.clamp(0, n_bars - 1), n_bars).float()  # (B, T, n_bars)
        sums = torch.einsum("bvte,btn->bvne", x, oh)
        counts = torch.einsum("bvt,btn->bvn", onset, oh)
        feat_v = torch.cat([sums / counts.clamp(min=1).sqrt()[..., None], torch.log1p(counts)[..., None]], -1)
        mu_v, lv_v = self.voice(feat_v).chunk(2, -1)
        gs, gc = sums.sum(1), counts.sum(1)
        nv = valid.float().sum(1)[:, None, None].expand(-1, n_bars, 1)
        feat_g = torch.cat([gs / gc.clamp(min=1).sqrt()[..., None], torch.log1p(gc)[..., None], nv / 4.0], -1)
        mu_g, lv_g = self.glob(feat_g).chunk(2, -1)
        return mu_g, lv_g.clamp(-8.0, 4.0), mu_v, lv_v.clamp(-8.0, 4.0)


class EnsembleNet(nn.Module):
    def __init__(self, cfg: EnsembleConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.prev = nn.Embedding(N_EVENT, h)
        self.held = nn.Embedding(N_EVENT, h)
        self.others = nn.Linear(N_PITCH, h, bias=False)
        self.others_pc = nn.Linear(12, h, bias=False)
        self.register_buffer("chroma", _chroma(), persistent=False)
        self.pos = nn.Embedding(N_POS, h)
        self.role = nn.Embedding(N_ROLES, h)
        self.program = nn.Embedding(N_PROGRAMS, h)
        self.mode = nn.Embedding(2, h)
        self.reg = nn.Linear(2, h)
        self.cond = nn.ModuleList([nn.Linear(2 * cfg.latent_dim + 1, h) for _ in range(cfg.n_layers)])
        self.grus = nn.ModuleList([nn.GRU(h, h, batch_first=True) for _ in range(cfg.n_layers)])
        self.norm = nn.LayerNorm(h)
        self.head = nn.Linear(h, N_EVENT)
        self.dur_head = nn.Linear(h, MAX_DUR)
        self.pair = nn.Parameter(torch.zeros(N_ROLES, 2 * INTERVAL_RANGE + 1))
        self.motion = nn.Parameter(torch.zeros(NO_PREVIOUS + 1, 12))
        self.encoder = BarEncoder(cfg)

    def inputs(
        self,
        prev: torch.Tensor,
        held: torch.Tensor,
        others: torch.Tensor,
        pos: torch.Tensor,
        role: torch.Tensor,
        program: torch.Tensor,
        register: torch.Tensor,
        mode: torch.Tensor,
    ) -> torch.Tensor:
        """Input embedding of every (stream, step): prev, held, pos (N, T); others (N, T, P); role, program,
        mode (N,); register (N, 2) → (N, T, H)."""
        chroma: torch.Tensor = self.chroma  # type: ignore[assignment]
        x = self.prev(prev) + self.held(held) + self.others(others) + self.others_pc(others @ chroma)
        x = x + self.pos(pos)
        static = self.role(role) + self.program(program) + self.mode(mode) + self.reg(register)
        return x + static[:, None]

    def core(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, T, H), cond (N, T, 2D+1) → event logits (N, T, N_EVENT), length logits (N, T, MAX_DUR)."""
        for i, gru in enumerate(self.grus):
            y, _ = gru(x + self.cond[i](cond))
            x = y if i == 0 else y + x
        z = self.norm(x)
        return self.head(z), self.dur_head(z)


def interaction(
    net: EnsembleNet, ev: torch.Tensor, held: torch.Tensor, last: torch.Tensor, role: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """The pair and motion terms (B, V, T, N_PITCH) for every voice's candidate pitches.

    ev, held, last (B, V, T): onset event at t, event of the pitch held at t from earlier onsets (0 none),
    event of the last onset before t (0 none); role (B, V); valid (B, V). Voice order = index order.
    """
    _b, v, _t = ev.shape
    dev = ev.device
    order = torch.arange(v, device=dev)
    earlier = (order[None, :] < order[:, None]).float()  # [target, other]: other decides first
    other = 1.0 - torch.eye(v, device=dev)
    known_now = torch.where(ev > 0, ev, held)  # what an earlier voice sounds at t
    pv = valid.float()
    # multi-hot of known pitches per target: earlier voices' known_now, later voices' held
    oh_now = F.one_hot(known_now, N_EVENT)[..., 1:].float() * pv[:, :, None, None]  # (B, V, T, P)
    oh_held = F.one_hot(held, N_EVENT)[..., 1:].float() * pv[:, :, None, None]
    hist = torch.einsum("xu,butp->bxtp", earlier, oh_now) + torch.einsum("xu,butp->bxtp", other - earlier, oh_held)
    cand = torch.arange(N_PITCH, device=dev)
    idx = (cand[None, :] - cand[:, None]).clamp(-INTERVAL_RANGE, INTERVAL_RANGE) + INTERVAL_RANGE  # [q, p]
    toeplitz = net.pair[:, idx]  # (R, P_q, P_p)
    pair = torch.einsum("bvtq,bvqp->bvtp", hist, toeplitz[role])
    # motion: earlier voices that start a different pitch at t (or start with no previous note)
    moved = (ev > 0) & (ev != last) & valid[:, :, None]  # (B, U, T)
    new_pitch = (ev - 1).clamp(min=0)  # index of the new pitch
    row = torch.where(
        (last[:, :, None] > 0) & (last[:, None, :] > 0),  # (B, V, U, T): both had a previous note
        (last[:, :, None] - last[:, None, :]) % 12,
        torch.full_like(last[:, :, None].expand(-1, -1, v, -1), NO_PREVIOUS),
    )
    tab = net.motion[row]  # (B, V, U, T, 12)
    pc_idx = (cand[None, None, None, None, :] - new_pitch[:, None, :, :, None]) % 12  # (B, 1, U, T, P)
    term = torch.gather(tab, -1, pc_idx.expand(-1, v, -1, -1, -1))  # (B, V, U, T, P)
    w = (moved[:, None] & (earlier[None, :, :, None] > 0)).float()  # (B, V, U, T)
    motion = (term * w[..., None]).sum(2)
    stay = F.one_hot((last - 1).clamp(min=0), N_PITCH).bool() & (last > 0)[..., None]
    motion = motion.masked_fill(stay, 0.0)
    return pair + motion


class StepModel(nn.Module):
    """One grid step for a batch of voices (ONNX): the GRU with its state; the tables as constant outputs."""

    def __init__(self, net: EnsembleNet) -> None:
        super().__init__()
        self.net = net

    def forward(
        self,
        prev: torch.Tensor,  # (B,) int64
        held: torch.Tensor,  # (B,) int64
        others: torch.Tensor,  # (B, P) float32
        pos: torch.Tensor,  # (B,) int64
        role: torch.Tensor,  # (B,) int64
        program: torch.Tensor,  # (B,) int64
        register: torch.Tensor,  # (B, 2) float32
        mode: torch.Tensor,  # (B,) int64
        latent: torch.Tensor,  # (B, 2D) float32
        has_latent: torch.Tensor,  # (B, 1) float32
        state: torch.Tensor,  # (L, B, H) float32
    ) -> tuple[torch.Tensor, ...]:
        n = self.net
        x = n.inputs(prev[:, None], held[:, None], others[:, None], pos[:, None], role, program, register, mode)[:, 0]
        cond = torch.cat([latent, has_latent], -1)
        new = []
        for i, gru in enumerate(n.grus):
            xi = x + n.cond[i](cond)
            h = state[i]
            assert isinstance(gru, nn.GRU)
            w_ih, w_hh, b_ih, b_hh = gru.all_weights[0]
            ir, iz, in_ = F.linear(xi, w_ih, b_ih).chunk(3, -1)
            hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, -1)
            r = torch.sigmoid(ir + hr)
            z = torch.sigmoid(iz + hz)
            h2 = (1 - z) * torch.tanh(in_ + r * hn) + z * h
            x = h2 if i == 0 else h2 + x
            new.append(h2)
        zz = n.norm(x)
        return n.head(zz), n.dur_head(zz), torch.stack(new, 0), n.pair * 1.0, n.motion * 1.0
