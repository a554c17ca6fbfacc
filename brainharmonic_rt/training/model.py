"""The channel-count-agnostic EEG encoder (torch) and its vector-quantised token codebook.

Shape of the model (why each part):

1. **Per-channel temporal encoder, shared by all channels** — a learned filter bank
   (16 FIR filters of 200 ms at 125 Hz), squared, averaged over 200 ms and log-compressed
   (a *learned band power over time*, the ShallowConvNet recipe: rhythms are what EEG
   carries), then two small convolutions over that power envelope and pooling over time.
   Sharing it across channels is what makes the model accept 4 or 64 channels.
2. **Region embedding** added to each channel embedding (frontal, central, temporal,
   parietal, occipital, or "unknown" for names that are not 10-20): where a rhythm comes
   from matters (occipital alpha vs frontal theta), but the model must work without names,
   so training hides the regions of a whole view 25 % of the time.
3. **Set context** (DeepSets): each channel embedding sees the mean of all channels, so
   relative quantities (asymmetry, "this channel vs the rest") are expressible, still
   independent of channel count and order.
4. **Attention pooling over channels** with 4 heads: one learned query for the global
   latent (all channels), one shared query for the group latents (channels masked to each
   group: groups differ between headsets, so a per-group query could not transfer).
5. **Vector-quantised token**: the nearest of K unit codebook vectors to the normalised
   global latent (cosine). The codebook is fitted online by EMA k-means with dead-code
   restarts (no collapse), and a small commitment term pulls latents toward their codes.
"""

from __future__ import annotations

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from ..errors import ConfigError

    raise ConfigError(
        "Training needs torch, which is not installed; install the training extra: "
        "pip install 'brainharmonic-rt[train]'."
    ) from exc

from dataclasses import asdict, dataclass

from ..brain.encoder import REGION_NAMES

MASK_FILL = -1e9  # logit of a masked channel (finite, so an empty group never yields NaN)
LOG_EPS = 1e-4  # floor inside the log of the pooled power (inputs are ~unit variance)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyperparameters (saved in checkpoints and the model card)."""

    sfreq: float = 125.0
    n_samples: int = 250
    n_filters: int = 16
    kernel: int = 25
    pool: int = 25
    pool_stride: int = 12
    hidden: int = 32
    embed_dim: int = 32
    latent_dim: int = 32
    heads: int = 4
    codebook_size: int = 64
    n_regions: int = len(REGION_NAMES)
    spectral_bins: int = 0  #: fixed log-spectrum features per channel (bins between 1 Hz and 40 Hz); 0 = none

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


class ChannelEncoder(nn.Module):
    """One channel's window (N, T) → embedding (N, E); shared across channels."""

    dft: torch.Tensor
    bins: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.filters = nn.Conv1d(1, cfg.n_filters, cfg.kernel, padding=cfg.kernel // 2, bias=False)
        self.pool = nn.AvgPool1d(cfg.pool, cfg.pool_stride)
        self.conv1 = nn.Conv1d(cfg.n_filters, cfg.hidden, 3, padding=1)
        self.conv2 = nn.Conv1d(cfg.hidden, cfg.hidden, 3, stride=2, padding=1)
        self.out = nn.Linear(cfg.n_filters + 2 * cfg.hidden + cfg.spectral_bins, cfg.embed_dim)
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.spectral = cfg.spectral_bins > 0
        if self.spectral:
            dft, pool = spectral_matrices(cfg)
            self.register_buffer("dft", dft)
            self.register_buffer("bins", pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.filters(x.unsqueeze(1))  # (N, F, T)
        power = torch.log(self.pool(y * y) + LOG_EPS)  # (N, F, T') learned band power envelope
        h = F.gelu(self.conv1(power))
        h = F.gelu(self.conv2(h))
        parts = [power.mean(-1), h.mean(-1), h.amax(-1)]
        if self.spectral:
            coef = (x - x.mean(-1, keepdim=True)) @ self.dft  # (N, 2 × frequencies): Hann-tapered DFT
            n = coef.shape[-1] // 2
            psd = coef[:, :n] ** 2 + coef[:, n:] ** 2
            parts.append(torch.log(psd @ self.bins + LOG_EPS))  # (N, spectral_bins) log band powers
        return self.norm(self.out(torch.cat(parts, dim=-1)))


def spectral_matrices(cfg: ModelConfig, low: float = 1.0, high: float = 40.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed matrices of the spectral features: a Hann-tapered DFT (T, 2 × n_freq) on the window's
    frequencies in [low, high) Hz, and an averaging matrix (n_freq, spectral_bins) into log-spaced bins.

    Why fixed: band powers are what EEG state is known to move; handing them to the model exactly
    (rather than hoping 16 learned filters find every band) costs one small matrix product per channel.
    """
    t = torch.arange(cfg.n_samples, dtype=torch.float64)
    freqs = torch.fft.rfftfreq(cfg.n_samples, 1.0 / cfg.sfreq).double()
    freqs = freqs[(freqs >= low) & (freqs < high)]
    taper = torch.hann_window(cfg.n_samples, periodic=True, dtype=torch.float64)
    phase = 2 * torch.pi * freqs[None, :] * t[:, None] / cfg.sfreq
    scale = 1.0 / taper.square().sum().sqrt()
    dft = torch.cat([taper[:, None] * torch.cos(phase), taper[:, None] * torch.sin(phase)], dim=1) * scale
    edges = torch.logspace(torch.log10(torch.tensor(low)), torch.log10(torch.tensor(high)), cfg.spectral_bins + 1)
    pool = torch.zeros(freqs.numel(), cfg.spectral_bins, dtype=torch.float64)
    for b in range(cfg.spectral_bins):
        inside = (freqs >= edges[b]) & (freqs < edges[b + 1])
        if not inside.any():  # a bin narrower than the resolution takes its nearest frequency
            inside = (freqs - (edges[b] + edges[b + 1]) / 2).abs() == (
                freqs - (edges[b] + edges[b + 1]) / 2
            ).abs().min()
        pool[inside, b] = 1.0 / inside.sum()
    return dft.float(), pool.float()


class EEGEncoder(nn.Module):
    """Batched encoder used in training: per-item regions and group masks.

    forward(x (B, C, T), region (B, C) int64, group_mask (B, G, C) float)
    → global latent (B, D), group latents (B, G, D).
    """

    codebook: torch.Tensor  # (K, D) unit vectors; a buffer, so it is exported with the weights

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        e, h = cfg.embed_dim, cfg.heads
        if e % h:
            raise ValueError(f"embed_dim ({e}) must be a multiple of heads ({h})")
        self.channel = ChannelEncoder(cfg)
        self.region = nn.Embedding(cfg.n_regions, e)
        self.context = nn.Sequential(nn.Linear(2 * e, e), nn.GELU(), nn.Linear(e, e))
        self.key = nn.Linear(e, e)
        self.value = nn.Linear(e, e)
        self.q_global = nn.Parameter(torch.randn(h, e // h) / (e // h) ** 0.5)
        self.q_group = nn.Parameter(torch.randn(h, e // h) / (e // h) ** 0.5)
        self.out_global = nn.Sequential(nn.Linear(e, cfg.latent_dim), nn.LayerNorm(cfg.latent_dim))
        self.out_group = nn.Sequential(nn.Linear(e, cfg.latent_dim), nn.LayerNorm(cfg.latent_dim))
        self.register_buffer("codebook", F.normalize(torch.randn(cfg.codebook_size, cfg.latent_dim), dim=-1))

    def channel_embeddings(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        emb = self.channel(x.reshape(b * c, t)).reshape(b, c, -1) + self.region(region)
        ctx = emb.mean(dim=1, keepdim=True).expand_as(emb)
        return emb + self.context(torch.cat([emb, ctx], dim=-1))  # (B, C, E)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, c, e = t.shape
        return t.reshape(b, c, self.cfg.heads, e // self.cfg.heads)

    def forward(
        self, x: torch.Tensor, region: torch.Tensor, group_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.channel_embeddings(x, region)
        k, v = self._heads(self.key(emb)), self._heads(self.value(emb))  # (B, C, H, dh)
        scale = k.shape[-1] ** -0.5
        # Global: softmax over all channels per head.
        a = torch.softmax((k * self.q_global).sum(-1) * scale, dim=1)  # (B, C, H)
        pooled = (a.unsqueeze(-1) * v).sum(1).flatten(1)  # (B, E)
        z = self.out_global(pooled)
        # Groups: the same scores with the channels outside each group masked out.
        s = (k * self.q_group).sum(-1) * scale  # (B, C, H)
        logits = s.unsqueeze(1) + (1.0 - group_mask).unsqueeze(-1) * MASK_FILL  # (B, G, C, H)
        ag = torch.softmax(logits, dim=2)
        pooled_g = torch.einsum("bgch,bchd->bghd", ag, v).flatten(2)  # (B, G, E)
        return z, self.out_group(pooled_g)

    def tokens(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest codebook entry (cosine) of each latent: (B, D) → (B,) int64."""
        return torch.argmax(F.normalize(z, dim=-1) @ self.codebook.T, dim=-1)


class ExportWrapper(nn.Module):
    """The runtime contract: shared region (C,) and group_mask (G, C); outputs include the token."""

    def __init__(self, encoder: EEGEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, x: torch.Tensor, region: torch.Tensor, group_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        reg = region.unsqueeze(0).expand(b, -1)
        mask = group_mask.unsqueeze(0).expand(b, -1, -1)
        z, zg = self.encoder(x, reg, mask)
        return z, zg, self.encoder.tokens(z)


class Codebook:
    """EMA spherical k-means over normalised latents, with dead-code restarts.

    Why not a learned codebook with straight-through gradients: EMA k-means is stable on
    a CPU budget of a few thousand steps, and restarting rarely used codes from current
    latents keeps every entry in use (the K/4 perplexity target).
    """

    def __init__(self, encoder: EEGEncoder, decay: float = 0.99, restart_below: float = 0.1) -> None:
        self.encoder = encoder
        k = encoder.codebook.shape[0]
        self.decay = decay
        self.restart_below = restart_below
        self.count = torch.full((k,), 1.0 / k, device=encoder.codebook.device)
        self.sums = encoder.codebook.clone() * self.count[:, None]
        self.restarts = 0

    @torch.no_grad()
    def update(self, z: torch.Tensor, generator: torch.Generator) -> None:
        zn = F.normalize(z.detach(), dim=-1)
        k = self.count.shape[0]
        idx = torch.argmax(zn @ self.encoder.codebook.T, dim=-1)
        onehot = F.one_hot(idx, k).to(zn.dtype)
        frac = onehot.mean(0)
        self.count.mul_(self.decay).add_(frac, alpha=1 - self.decay)
        self.sums.mul_(self.decay).add_(onehot.T @ zn / zn.shape[0], alpha=1 - self.decay)
        self.encoder.codebook.copy_(F.normalize(self.sums / self.count[:, None].clamp_min(1e-8), dim=-1))

    @torch.no_grad()
    def seed(self, z: torch.Tensor, generator: torch.Generator) -> None:
        """Put every code on a distinct random latent of ``z`` (repeats when z has fewer rows than K)."""
        k = self.count.shape[0]
        zn = F.normalize(z.detach(), dim=-1)
        order = torch.randperm(zn.shape[0], generator=generator)
        pick = order[torch.arange(k) % zn.shape[0]].to(zn.device)
        noise = 0.01 * torch.randn(k, zn.shape[1], generator=generator).to(zn.device)
        self.encoder.codebook.copy_(F.normalize(zn[pick] + noise, dim=-1))
        self.count.fill_(1.0 / k)
        self.sums.copy_(self.encoder.codebook / k)

    @torch.no_grad()
    def restart_dead(self, z: torch.Tensor, generator: torch.Generator) -> int:
        """Move codes used far below 1/K of the time onto random current latents."""
        k = self.count.shape[0]
        dead = torch.nonzero(self.count < self.restart_below / k).flatten()
        if dead.numel() == 0:
            return 0
        zn = F.normalize(z.detach(), dim=-1)
        pick = torch.randint(0, zn.shape[0], (dead.numel(),), generator=generator).to(zn.device)
        noise = 0.01 * torch.randn(dead.numel(), zn.shape[1], generator=generator).to(zn.device)
        new = F.normalize(zn[pick] + noise, dim=-1)
        self.encoder.codebook[dead] = new
        self.count[dead] = 1.0 / k
        self.sums[dead] = new / k
        self.restarts += int(dead.numel())
        return int(dead.numel())

    def commitment(self, z: torch.Tensor) -> torch.Tensor:
        """Mean cosine distance between each normalised latent and its (fixed) code."""
        zn = F.normalize(z, dim=-1)
        code = self.encoder.codebook[self.encoder.tokens(z)].detach()
        return (1.0 - (zn * code).sum(-1)).mean()


def perplexity(tokens: torch.Tensor, k: int) -> float:
    """exp(entropy) of the token histogram: K when all codes are used evenly, 1 at collapse."""
    p = torch.bincount(tokens.flatten(), minlength=k).double()
    p = p / p.sum().clamp_min(1)
    nz = p[p > 0]
    return float(torch.exp(-(nz * nz.log()).sum()))
