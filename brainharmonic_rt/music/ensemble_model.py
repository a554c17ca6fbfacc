"""The ensemble model at run time: one ONNX call advances every voice by one grid step.

See ``training/ensemble_export.py`` for the I/O contract and ``training/ensemble_model.py`` for the
model. :class:`EnsembleModel` opens the file and runs a step for a batch of voices;
the composer samples each voice's event from its logits plus the learned pair/motion terms
(:mod:`.ensemble_grid`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..onnx_models import Device, OnnxModel, open_model
from .ensemble_grid import INTERVAL_RANGE, LOW_PITCH, MAX_DUR, N_EVENT, N_PITCH, N_ROLES, NO_PREVIOUS

KIND = "music-ensemble"
FORMAT = "1"
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "ensemble.onnx"
INPUTS = (
    "prev", "held", "others", "pos", "role", "program", "register", "mode", "latent", "has_latent", "state",
)  # fmt: skip
OUTPUTS = ("event_logits", "length_logits", "state_out", "pair", "motion")
_REQUIRED = ("latent_dim", "hidden", "n_layers", "low_pitch", "n_pitch")
FAMILY_FALLBACK = 52  #: unseen program of an unseen GM family → ensemble voices (choir), the corpus' commonest


class EnsembleModel:
    """The opened ONNX step model, its metadata and its learned pair / motion tables."""

    def __init__(self, path: str | Path | None = None, *, threads: int = 1, device: Device = "cpu") -> None:
        self.onnx: OnnxModel = open_model(
            path or DEFAULT_MODEL,
            kind=KIND,
            formats=(FORMAT,),
            required=_REQUIRED,
            threads=threads,
            device=device,
            hint="train one with `brainharmonic train ensemble` or restore models/ensemble.onnx",
        )
        meta = self.onnx.meta
        try:
            self.latent_dim = int(meta["latent_dim"])
            self.hidden = int(meta["hidden"])
            self.n_layers = int(meta["n_layers"])
            grid = (int(meta["low_pitch"]), int(meta["n_pitch"]))
            self.programs: tuple[int, ...] = tuple(int(p) for p in json.loads(meta.get("programs", "[]")))
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{self.onnx.path} has unreadable ensemble metadata ({exc}); export it again.") from None
        if grid != (LOW_PITCH, N_PITCH):
            raise ModelError(
                f"{self.onnx.path} uses pitch grid {grid}, this runtime {(LOW_PITCH, N_PITCH)}; export again."
            )
        out = self.step(
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
            np.zeros((1, N_PITCH), np.float32),
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
            np.zeros((1, 2), np.float32),
            np.zeros(1, np.int64),
            None,
            self.initial_state(1),
        )
        self.pair, self.motion = out[3].astype(np.float32), out[4].astype(np.float32)
        if self.pair.shape != (N_ROLES, 2 * INTERVAL_RANGE + 1) or self.motion.shape != (NO_PREVIOUS + 1, 12):
            raise ModelError(f"{self.onnx.path} has pair/motion tables of the wrong shape; export it again.")
        if out[0].shape[-1] != N_EVENT or out[1].shape[-1] != MAX_DUR:
            raise ModelError(f"{self.onnx.path} has outputs of the wrong size; export it again.")

    def resolve_program(self, program: int) -> int:
        """The program the model is conditioned on: ``program`` if trained on, else one of its GM family
        (eight programs) that was, else :data:`FAMILY_FALLBACK`. The instrument still sounds as ``program``."""
        if not self.programs or program in self.programs:
            return program
        family = [p for p in self.programs if p // 8 == program // 8 and p < 128]
        return family[0] if family else (FAMILY_FALLBACK if FAMILY_FALLBACK in self.programs else self.programs[0])

    def initial_state(self, batch: int = 1) -> np.ndarray:
        return np.zeros((self.n_layers, batch, self.hidden), np.float32)

    def step(
        self,
        prev: np.ndarray,
        held: np.ndarray,
        others: np.ndarray,
        pos: np.ndarray,
        role: np.ndarray,
        program: np.ndarray,
        register: np.ndarray,
        mode: np.ndarray,
        latent: np.ndarray | None,
        state: np.ndarray,
    ) -> list[np.ndarray]:
        """One grid step for B voices (shapes in the module docstring of ``training/ensemble_export.py``);
        ``latent`` (B, 2D) rows of NaN (or None for all) run that voice unsteered.
        Returns [event logits (B, 1+P), length logits (B, 16), state (L, B, H), pair, motion]."""
        b = prev.shape[0]
        lat = np.zeros((b, 2 * self.latent_dim), np.float32)
        has = np.zeros((b, 1), np.float32)
        if latent is not None:
            ok = np.isfinite(latent).all(axis=1)
            lat[ok] = latent[ok]
            has[ok] = 1.0
        return self.onnx.run(
            {
                "prev": prev.astype(np.int64),
                "held": held.astype(np.int64),
                "others": others.astype(np.float32),
                "pos": pos.astype(np.int64),
                "role": role.astype(np.int64),
                "program": program.astype(np.int64),
                "register": register.astype(np.float32),
                "mode": mode.astype(np.int64),
                "latent": lat,
                "has_latent": has,
                "state": state.astype(np.float32),
            }
        )
