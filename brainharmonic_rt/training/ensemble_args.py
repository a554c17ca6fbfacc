"""Options of ``brainharmonic train ensemble`` (torch-free, so the CLI can list them without importing torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .ensemble_corpus import DEFAULT_DIR

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "models" / "ensemble.onnx"


def add_train_ensemble_args(p: argparse.ArgumentParser) -> None:
    """Options of ``brainharmonic train ensemble``."""
    p.add_argument("--corpus", type=Path, default=DEFAULT_DIR, help="folder written by `train ensemble-corpus`")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="ONNX step model to write")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--minutes", type=float, default=None, help="stop after this wall time (minutes)")
    p.add_argument("--batch", type=int, default=16, help="windows per batch")
    p.add_argument("--window", type=int, default=64, help="grid steps per window")
    p.add_argument("--hidden", type=int, default=160)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--beta", type=float, default=0.2)
    p.add_argument("--free-bits", type=float, default=0.25)
    p.add_argument("--cond-drop", type=float, default=0.1)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
