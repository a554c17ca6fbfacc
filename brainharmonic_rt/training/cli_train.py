"""`brainharmonic train encoder` and `brainharmonic export`: argparse options and implementations.

The CLI module imports this lazily (only these commands need torch). Each function
raises :class:`~brainharmonic_rt.errors.BrainharmonicError` subclasses with one clear
sentence; the CLI prints them.
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

from .. import __version__
from ..brain.encoder import EncoderSpec
from ..config import load_settings
from ..errors import ConfigError, DataError, ModelError
from ..evaluation.modelcard import write_section
from ..evaluation.sessions import SessionArrays, SessionFiles, discover_sessions, open_session, prepare_arrays

log = logging.getLogger("brainharmonic.train")

DEFAULT_OUT = Path("models/encoder.onnx")
INPUT_CLIP = 20.0  # inputs are baseline-scaled (~unit std); beyond 20 baseline stds it is artefact


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `brainharmonic train encoder` (--config comes from the CLI's own `_add_config`)."""
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        metavar="DIR",
        help="Folder(s) of recordings (eegmat, muse-cueing, BIDS, EDF/FIF...); several are pooled.",
    )
    p.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        metavar="ONNX",
        help="Model to write (default models/encoder.onnx).",
    )
    p.add_argument("--card", metavar="MD", help="Model card to write (default: OUT with .md).")
    p.add_argument("--checkpoint", metavar="PT", help="Torch checkpoint to write (default: OUT with .pt).")
    p.add_argument("--steps", type=int, default=6000, help="Optimisation steps (default 6000).")
    p.add_argument("--pairs", type=int, default=64, help="Window pairs per batch (default 64).")
    p.add_argument("--lr", type=float, default=2e-3, help="Peak learning rate (default 2e-3).")
    p.add_argument("--latent-dim", type=int, default=32, help="Latent size D (default 32).")
    p.add_argument("--codebook-size", type=int, default=64, help="Brain tokens K (default 64).")
    p.add_argument(
        "--spectral-bins",
        type=int,
        default=0,
        help="Fixed log band powers per channel (log-spaced bins, 1-40 Hz) fed beside the learned filters "
        "(default 0 = none).",
    )
    p.add_argument("--seed", type=int, default=0, help="Seed of every random choice (default 0).")
    p.add_argument(
        "--val-subjects",
        default="auto",
        metavar="LIST",
        help="Comma-separated validation subjects (never trained on, self-supervised included), 'auto' "
        "(every 4th subject), 'fold:K/N' (fold K of N over the rest+task subjects, as `eval encoder --cv` "
        "deals them) or 'none'.",
    )
    p.add_argument(
        "--supervised-weight",
        type=float,
        default=0.0,
        help="Weight of the rest/task term on the training subjects' session-centred latents "
        "(0 = self-supervised only; validation subjects never take part).",
    )
    p.add_argument("--subjects", metavar="LIST", help="Only these subjects (comma-separated; default all).")
    p.add_argument("--seconds", type=float, help="Use only the first S seconds of each recording (quick runs).")
    p.add_argument("--hop", type=float, default=0.5, help="Seconds between training windows (default 0.5).")
    p.add_argument("--eval-every", type=int, default=250, help="Validate every N steps (default 250).")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto = CUDA when present.")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1).")
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")


def _subjects(arg: str | None) -> list[str] | None:
    return [s.strip() for s in arg.split(",") if s.strip()] if arg else None


def split_subjects(sessions: list[SessionFiles], val: str) -> tuple[list[str], list[str]]:
    """(train, validation) subject names: 'auto' = every 4th in sorted order (index 3, 7, ...)."""
    names = sorted({s.subject for s in sessions})
    if len(names) < 2 and val != "none":
        raise DataError(
            f"Training needs at least 2 subjects to hold one out for validation, found {names}; "
            "add recordings or pass --val-subjects none."
        )
    if val == "none":
        return names, []
    if val.startswith("fold:"):
        chosen = _fold(sessions, val)
    elif val == "auto":
        chosen = names[3::4] or names[-1:]
    else:
        chosen = [v.strip() for v in val.split(",") if v.strip()]
        unknown = set(chosen) - set(names)
        if unknown:
            raise DataError(
                f"Validation subject(s) {', '.join(sorted(unknown))} are not in the data "
                f"({', '.join(names[:30])}); fix --val-subjects."
            )
    train = [n for n in names if n not in chosen]
    if not train:
        raise DataError("Every subject is a validation subject; leave at least one for training (--val-subjects).")
    return train, chosen


def _fold(sessions: list[SessionFiles], val: str) -> list[str]:
    """Subjects of 'fold:K/N': the rest+task subjects dealt round-robin into N folds, fold K (0-based)."""
    from ..evaluation.probe import subject_folds

    try:
        k, n = (int(v) for v in val.removeprefix("fold:").split("/"))
    except ValueError:
        raise ConfigError(f"--val-subjects {val} is not of the form fold:K/N (e.g. fold:0/4).") from None
    labelled = sorted({s.subject for s in sessions if s.labels == ("rest", "task")})
    if not (2 <= n <= len(labelled) and 0 <= k < n):
        raise ConfigError(
            f"--val-subjects {val}: need 0 <= K < N and 2 <= N <= {len(labelled)} (the rest+task subjects found)."
        )
    return subject_folds(labelled, n)[k]


def discover_all(dirs: list[str], subjects: list[str] | None) -> list[SessionFiles]:
    """Sessions of every folder in ``dirs``, keeping only ``subjects`` when given (names must exist somewhere)."""
    sessions = [s for d in dirs for s in discover_sessions(d)]
    if subjects is not None:
        unknown = set(subjects) - {s.subject for s in sessions}
        if unknown:
            raise DataError(
                f"Subject(s) {', '.join(sorted(unknown))} not found under {', '.join(dirs)}; fix --subjects."
            )
        sessions = [s for s in sessions if s.subject in set(subjects)]
    return sessions


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (options as given, defaults included)."""
    parts = ["brainharmonic", "train", "encoder"]
    for name in (
        "data",
        "out",
        "steps",
        "pairs",
        "lr",
        "latent_dim",
        "codebook_size",
        "spectral_bins",
        "seed",
        "val_subjects",
        "subjects",
        "supervised_weight",
        "seconds",
        "hop",
        "device",
        "threads",
        "config",
    ):
        value = getattr(args, name, None)
        if isinstance(value, list):
            parts += [f"--{name.replace('_', '-')}", *map(str, value)]
        elif value is not None:
            parts += [f"--{name.replace('_', '-')}", str(value)]
    return shlex.join(parts)


def _device(choice: str) -> str:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but torch sees no CUDA GPU; use --device auto or cpu.")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def _weights_hash(state: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


def _echo(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def train_encoder(args: argparse.Namespace) -> int:
    """`brainharmonic train encoder`: prepare windows, train, export ONNX (+ parity), write the card."""
    import torch
    from tqdm import tqdm

    from .data import AugmentConfig
    from .export import export_onnx
    from .loop import TrainConfig, checkpoint, train
    from .model import ModelConfig
    from .supervised import SupervisedConfig

    t_start = time.monotonic()
    if (
        args.steps < 1
        or args.pairs < 2
        or args.hop <= 0
        or args.threads < 1
        or args.supervised_weight < 0
        or args.spectral_bins < 0
    ):
        raise ConfigError(
            "--steps must be >= 1, --pairs >= 2, --hop > 0, --threads >= 1, --supervised-weight >= 0 and "
            "--spectral-bins >= 0; "
            "fix the option."
        )
    settings = load_settings(getattr(args, "config", None))
    sig = settings.signal.model_copy(update={"hop": args.hop})
    if sig.bandpass is None:
        raise ConfigError("[signal] bandpass is off; the encoder needs band-passed EEG: set it (default [1, 40]).")
    out = Path(args.out)
    card = Path(args.card) if args.card else out.with_suffix(".md")
    ckpt_path = Path(args.checkpoint) if args.checkpoint else out.with_suffix(".pt")
    torch.set_num_threads(args.threads)
    device = _device(args.device)
    sessions = discover_all(args.data, _subjects(args.subjects))
    train_names, val_names = split_subjects(sessions, args.val_subjects)
    mcfg = ModelConfig(latent_dim=args.latent_dim, codebook_size=args.codebook_size, spectral_bins=args.spectral_bins)
    spec = EncoderSpec(mcfg.sfreq, mcfg.n_samples, mcfg.latent_dim, mcfg.codebook_size, sig.bandpass, INPUT_CLIP, "dev")
    arrays: list[SessionArrays] = []
    for files in tqdm(sessions, desc="prepare windows", disable=args.no_progress, unit="session"):
        arrays.append(prepare_arrays(open_session(files, seconds=args.seconds), sig, spec))
    t_prep = time.monotonic() - t_start
    tcfg = TrainConfig(
        steps=args.steps,
        pairs=args.pairs,
        lr=args.lr,
        seed=args.seed,
        eval_every=min(args.eval_every, args.steps),
        warmup=min(100, max(1, args.steps // 10)),
    )
    aug = AugmentConfig()
    sup = SupervisedConfig(weight=args.supervised_weight, baseline=sig.baseline)
    result = train(
        [a for a in arrays if a.subject in train_names],
        [a for a in arrays if a.subject in val_names],
        mcfg,
        tcfg,
        aug,
        sup,
        device=device,
        progress=not args.no_progress,
        log=_echo,
    )
    state = result.encoder.state_dict()
    version = f"{__version__}+{_weights_hash(state)}"
    n_windows = {a.subject: int(a.x.shape[0]) for a in arrays}
    objective = "temporal-neighbour contrastive (2-8 s, same recording) + EMA k-means VQ codebook"
    if sup.weight > 0:
        objective += (
            f" + rest/task logistic term (weight {sup.weight:g}) on session-centred latents of the "
            "training subjects' labelled sessions"
        )
    extra = {
        "trained_on": "; ".join(
            f"{Path(d).name}: "
            f"{len({s.subject for s in sessions if s.subject in train_names and Path(d) in s.paths[0].parents})} "
            "training subjects"
            for d in args.data
        ),
        "train_subjects": ",".join(train_names),
        "val_subjects": ",".join(val_names),
        "seed": str(args.seed),
        "steps": str(args.steps),
        "objective": objective,
        "supervision": "rest/task labels of the training subjects" if sup.weight > 0 else "none",
    }
    spec = EncoderSpec(
        spec.sfreq,
        spec.n_samples,
        spec.latent_dim,
        spec.codebook_size,
        spec.bandpass,
        spec.input_clip,
        version,
        extra=tuple(extra.items()),
    )
    ckpt = checkpoint(result, mcfg, tcfg, aug, sup)
    ckpt["spec_meta"] = spec.to_meta()
    ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, ckpt_path)
    diff = export_onnx(result.encoder, spec, out)
    info = {
        "command": _command(args),
        "data": ", ".join(map(str, args.data)),
        "objective": objective,
        "train_subjects": train_names,
        "val_subjects": val_names,
        "windows": n_windows,
        "skipped_windows": sum(a.skipped for a in arrays),
        "signal": sig.model_dump(mode="json", include={"window", "hop", "bandpass", "notch", "reference", "baseline"}),
        "model_config": mcfg.as_dict(),
        "train_config": ckpt["train_config"],
        "augment_config": ckpt["augment_config"],
        "supervised_config": ckpt["supervised_config"],
        "labelled": sorted({s.subject for s in sessions if s.labels == ("rest", "task")}),
        "device": result.device,
        "threads": args.threads,
        "prepare_seconds": round(t_prep, 1),
        "train_seconds": round(result.seconds, 1),
        "total_seconds": round(time.monotonic() - t_start, 1),
        "parity_max_abs": diff,
        "onnx_bytes": out.stat().st_size,
        "parameters": sum(p.numel() for p in result.encoder.parameters()),
        "history": result.history,
        "version": version,
        "cpu": os.cpu_count(),
    }
    write_section(card, "training", training_section(info), title="# EEG encoder: model card")
    print(
        f"wrote {out} ({info['onnx_bytes'] / 1024:.0f} KiB, v{version}, parity {diff:.1e}), "
        f"{ckpt_path}, {card}; "
        f"training took {info['train_seconds']:.0f} s ({info['total_seconds']:.0f} s in all)"
    )
    return 0


def training_section(info: dict[str, Any]) -> str:
    """The card's training section: what was trained, on what, how, and how long it took."""
    nan = float("nan")
    last = info["history"][-1] if info["history"] else {}
    state = any("val_state_bacc" in h for h in info["history"])
    rows = "\n".join(
        f"| {int(h['step'])} | {h.get('train_global', nan):.3f} | {h.get('val_global', nan):.3f} | "
        f"{h.get('val_perplexity', nan):.1f} | {h.get('val_codes_used', nan):.0f} |"
        + (f" {h.get('train_state', nan):.3f} | {h.get('val_state_bacc', nan):.3f} |" if state else "")
        for h in info["history"]
    )
    train, val = info["train_subjects"], info["val_subjects"]
    secs = info["train_seconds"]
    sup = info.get("supervised_config", {})
    lines = [
        "## Training (written by `brainharmonic train encoder`)",
        "",
        f"- **Version** {info['version']} (the suffix hashes the weights); {info['parameters']:,} parameters, "
        f"ONNX {info['onnx_bytes'] / 1024:.0f} KiB; torch vs onnxruntime max abs difference "
        f"{info['parity_max_abs']:.1e}.",
        f"- **Command** `{info['command']}`",
        f"- **Objective** {info.get('objective', 'self-supervised')}.",
        "- **Supervision** "
        + (
            f"rest/task labels of the {sum(1 for n in train if n in info.get('labelled', train))} training "
            f"subjects' labelled sessions (weight {sup.get('weight', 0):g}); none from validation subjects."
            if sup.get("weight", 0) > 0
            else "none (no labels used; recording boundaries only)."
        ),
        f"- **Data** `{info['data']}`. Train subjects ({len(train)}): {', '.join(train)}.",
        f"  Validation subjects ({len(val)}, never trained on): {', '.join(val) or 'none'}.",
        f"  Windows: {sum(info['windows'].values())} in all ({info['skipped_windows']} skipped for a bad channel).",
        f"- **Windows** from the runtime's own `SignalChain` and `EncoderInput`: {json.dumps(info['signal'])};",
        "  each channel divided by its robust baseline std from the start of its session, clipped at "
        f"±{INPUT_CLIP:g}, resampled to {info['model_config']['sfreq']:g} Hz "
        f"({info['model_config']['n_samples']} samples).",
        f"- **Model** {json.dumps(info['model_config'])}",
        f"- **Optimisation** {json.dumps(info['train_config'])}",
        f"- **Augmentations** {json.dumps(info['augment_config'])}",
        f"- **Supervised batches** {json.dumps(sup)}",
        f"- **Machine** {info['device']}, {info['threads']} torch thread(s) of {info['cpu']} cores. "
        f"Preparing windows took {info['prepare_seconds']:.0f} s, training {secs:.0f} s ({secs / 60:.1f} min), "
        f"{info['total_seconds']:.0f} s in all.",
        "",
        "| step | train loss (global) | validation loss (global) | validation perplexity | codes used |"
        + (" train state loss | validation rest/task (state head) |" if state else ""),
        "|---|---|---|---|---|" + ("---|---|" if state else ""),
        rows,
        "",
        f"Final: {json.dumps({k: round(v, 4) for k, v in last.items()})}",
    ]
    return "\n".join(lines)


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `brainharmonic export`."""
    p.add_argument(
        "--checkpoint",
        default="models/encoder.pt",
        metavar="PT",
        help="Torch checkpoint written by `train encoder` (default models/encoder.pt).",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), metavar="ONNX", help="ONNX file to write.")


def export_encoder(args: argparse.Namespace) -> int:
    """`brainharmonic export`: checkpoint → ONNX with metadata, checked for parity with torch."""
    import torch

    from .export import export_onnx
    from .loop import load_encoder

    path = Path(args.checkpoint)
    if not path.is_file():
        raise ModelError(f"Checkpoint {path} does not exist; train one with `brainharmonic train encoder`.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        encoder = load_encoder(ckpt)
        meta = ckpt["spec_meta"]
    except Exception as exc:
        raise ModelError(
            f"Could not read checkpoint {path} ({exc}); train again with `brainharmonic train encoder`."
        ) from None
    spec = EncoderSpec.from_meta(meta, path)
    core = set(EncoderSpec(1, 2, 1, 1, (1, 2), 1, "").to_meta())
    spec = EncoderSpec(
        spec.sfreq,
        spec.n_samples,
        spec.latent_dim,
        spec.codebook_size,
        spec.bandpass,
        spec.input_clip,
        spec.version,
        extra=tuple((k, v) for k, v in meta.items() if k not in core),
    )
    diff = export_onnx(encoder, spec, args.out)
    print(f"wrote {args.out} (v{spec.version}); torch vs onnxruntime max abs difference {diff:.1e}")
    return 0
