"""The fMRI encoder network (torch): a window of region signals → global latent, group latents, token.

Why this shape: what a window of BOLD tells about a state is which regions move together and how
strongly each moves (task blocks raise the variance of the regions they engage). So, inside the graph:

1. each region is z-scored over the window (the run's offset and scale drop out) and its log amplitude
   is kept relative to the window's mean log amplitude (an amplitude *pattern*, scale-free);
2. a learned spatial projection (regions → ``components``) gives component time series whose
   correlation matrix (upper triangle), lag-1 autocorrelations and log amplitudes summarise the
   co-activation; a second projection summarises the amplitude pattern;
3. an MLP maps these to the global latent;
4. each group (network) gets its own latent from the same components: the correlation of the group's
   mean series with each component, and the group's amplitude pattern through a learned region
   embedding, through a small shared head (groups differ between atlases, so no per-group weights);
5. the token is the nearest (cosine) of K codebook vectors, fitted by k-means after training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

EPS = 1e-5


@dataclass(frozen=True)
class FmriModelConfig:
    n_regions: int = 379
    n_volumes: int = 139
    components: int = 48
    hidden: int = 128
    group_hidden: int = 64
    latent_dim: int = 32
    codebook_size: int = 32

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class FmriEncoder(nn.Module):
    iu0: torch.Tensor
    iu1: torch.Tensor
    codebook: torch.Tensor

    def __init__(self, cfg: FmriModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.components
        self.proj = nn.Parameter(torch.randn(c, cfg.n_regions) / cfg.n_regions**0.5)
        self.amp = nn.Linear(cfg.n_regions, c)
        self.embed = nn.Parameter(torch.randn(cfg.n_regions, c) * 0.1)
        iu = torch.triu_indices(c, c, offset=1)
        self.register_buffer("iu0", iu[0], persistent=False)
        self.register_buffer("iu1", iu[1], persistent=False)
        n_in = iu.shape[1] + 3 * c
        self.mlp = nn.Sequential(
            nn.Linear(n_in, cfg.hidden),
            nn.GELU(),
            nn.LayerNorm(cfg.hidden),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, cfg.latent_dim),
        )
        self.group_head = nn.Sequential(
            nn.Linear(2 * c + 1, cfg.group_hidden),
            nn.GELU(),
            nn.Linear(cfg.group_hidden, cfg.latent_dim),
        )
        self.register_buffer("codebook", torch.zeros(cfg.codebook_size, cfg.latent_dim))

    @staticmethod
    def _standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, R, W) → z-scored series and log amplitude relative to the window's mean (B, R).

        A region that is all zeros (bad, or missing) gives a zero series and amplitude 0."""
        xc = x - x.mean(dim=-1, keepdim=True)
        var = (xc * xc).mean(dim=-1)
        alive = (var > 1e-12).to(x.dtype)
        sd = torch.sqrt(var + EPS)
        z = xc / sd.unsqueeze(-1)
        log_sd = torch.log(sd) * alive
        n_alive = alive.sum(dim=-1, keepdim=True).clamp(min=1.0)
        rel = (log_sd - (log_sd.sum(dim=-1, keepdim=True) / n_alive)) * alive
        return z, rel

    def components(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Component series normalised to unit power (B, C, W) and their log amplitudes (B, C)."""
        p = torch.einsum("cr,brw->bcw", self.proj, z)
        p = p - p.mean(dim=-1, keepdim=True)
        power = (p * p).mean(dim=-1)
        pn = p / torch.sqrt(power + EPS).unsqueeze(-1)
        return pn, 0.5 * torch.log(power + EPS)

    def forward(self, x: torch.Tensor, group_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, R, W), group_mask (G, R) → global (B, D), groups (B, G, D), token (B,)."""
        z, rel = self._standardise(x)
        pn, log_amp = self.components(z)
        w = pn.shape[-1]
        corr = torch.einsum("bcw,bdw->bcd", pn, pn) / w
        tri = corr[:, self.iu0, self.iu1]
        lag1 = (pn[..., 1:] * pn[..., :-1]).mean(dim=-1)
        feats = torch.cat([tri, lag1, log_amp, self.amp(rel)], dim=-1)
        glob = self.mlp(feats)
        weights = group_mask / group_mask.sum(dim=-1, keepdim=True).clamp(min=1.0)  # (G, R)
        s = torch.einsum("gr,brw->bgw", weights, z)
        s = s - s.mean(dim=-1, keepdim=True)
        s_amp = torch.sqrt((s * s).mean(dim=-1) + EPS)  # (B, G)
        gcorr = torch.einsum("bgw,bcw->bgc", s / s_amp.unsqueeze(-1), pn) / w
        gemb = torch.einsum("gr,br,rc->bgc", weights, rel, self.embed)
        group = self.group_head(torch.cat([gcorr, gemb, torch.log(s_amp).unsqueeze(-1)], dim=-1))
        token = self.tokens(glob)
        return glob, group, token

    def tokens(self, glob: torch.Tensor) -> torch.Tensor:
        unit = glob / torch.sqrt((glob * glob).sum(dim=-1, keepdim=True) + 1e-12)
        return torch.argmax(unit @ self.codebook.T, dim=-1)
