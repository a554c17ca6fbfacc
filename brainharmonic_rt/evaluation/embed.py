"""`brainharmonic embed INPUT --out latents.npz`: the learned latents of every window of an input.

The input is any offline source `render` accepts (the CLI opens it); its chunks go through
the same :class:`SignalChain` and :class:`LearnedBrain` as a live run, so the latents are
exactly those the live pipeline would compute.

The ``.npz`` holds, per window (n windows, G groups, D latent size):

* ``times`` (n,) seconds from the start of INPUT to the window's last sample;
* ``global_latent`` (n, D) float32; where no channel was good, the last good latent (zeros before one);
* ``group_latents`` (n, G, D) float32; for a group without a good channel, its last good latent (zeros before);
* ``global_ok`` (n,) bool and ``group_ok`` (n, G) bool: whether that latent was computed from this window
  (False flags a held value: a flat tail, a bad electrode group); no array holds NaN;
* ``group_names`` (G,) str; ``tokens`` (n,) int64, -1 where none; ``calibrating`` (n,) bool;
* ``model_version`` and ``ch_names`` for provenance.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..brain.learned_brain import learned_brain
from ..config import Settings
from ..errors import DataError
from ..signal import SignalChain


@dataclass
class Embeddings:
    """What :func:`embed_source` computed (see the module notes for the arrays)."""

    times: np.ndarray
    global_latent: np.ndarray
    group_latents: np.ndarray
    global_ok: np.ndarray
    group_ok: np.ndarray
    group_names: tuple[str, ...]
    tokens: np.ndarray
    calibrating: np.ndarray
    model_version: str
    ch_names: tuple[str, ...]

    def save(self, path: Path | str) -> Path:
        """Write the arrays to ``path`` (.npz); DataError when it cannot be written."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as fh:
                np.savez(
                    fh,
                    times=self.times,
                    global_latent=self.global_latent,
                    group_latents=self.group_latents,
                    global_ok=self.global_ok,
                    group_ok=self.group_ok,
                    group_names=np.asarray(self.group_names, dtype=str),
                    tokens=self.tokens,
                    calibrating=self.calibrating,
                    model_version=np.asarray(self.model_version),
                    ch_names=np.asarray(self.ch_names, dtype=str),
                )
        except OSError as exc:
            raise DataError(f"Could not write {path} ({exc}); choose a writable --out path.") from None
        return path


async def embed_source(source: Any, settings: Settings, *, model: Any = None) -> Embeddings:
    """Latents of every window of an offline ``source`` (an entered-once async context manager)."""
    times: list[float] = []
    glob: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    tokens: list[int] = []
    calib: list[bool] = []
    ok: list[list[bool]] = []
    async with source:
        info = source.info
        brain = learned_brain(info, settings.signal, settings.bands, settings.encoder, model=model)
        chain = SignalChain(info, settings.signal)
        d = brain.spec.latent_dim
        n_groups = len(brain.groups)
        held = np.zeros((1 + n_groups, d), np.float32)  # last good latent: global, then each group
        async for chunk in source.chunks():
            for window in chain.push(chunk):
                state = brain.process(window)
                times.append(window.t_end)
                calib.append(state.calibrating)
                row_ok = [state.latent is not None] + [g.latent is not None for g in state.groups]
                for k, lat in enumerate([state.latent] + [g.latent for g in state.groups]):
                    if lat is not None:
                        held[k] = lat
                glob.append(held[0].copy())
                groups.append(held[1:].copy())
                ok.append(row_ok)
                tokens.append(-1 if state.token is None else state.token)
    if not times:
        raise DataError(
            f"Input '{info.name}' is shorter than one {settings.signal.window:g} s window; pass a longer recording."
        )
    return Embeddings(
        times=np.asarray(times),
        global_latent=np.stack(glob).astype(np.float32),
        group_latents=np.stack(groups).astype(np.float32).reshape(len(times), n_groups, d),
        global_ok=np.asarray([r[0] for r in ok], dtype=bool),
        group_ok=np.asarray([r[1:] for r in ok], dtype=bool).reshape(len(times), n_groups),
        group_names=tuple(brain.groups),
        tokens=np.asarray(tokens, dtype=np.int64),
        calibrating=np.asarray(calib, dtype=bool),
        model_version=brain.spec.version,
        ch_names=tuple(info.ch_names),
    )


def embed(source: Any, settings: Settings, out: Path | str, *, model: Any = None) -> Embeddings:
    """Compute the latents of ``source`` and write them to ``out`` (.npz)."""
    result = asyncio.run(embed_source(source, settings, model=model))
    result.save(out)
    return result


def add_embed_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `brainharmonic embed` besides INPUT and the CLI's input options (--seconds, --start, BIDS).

    (The CLI adds INPUT and its usual input options itself.)
    """
    p.add_argument("--out", required=True, metavar="OUT.npz", help="Where to write the latents.")
    p.add_argument("--model", metavar="ONNX", help="Encoder to use (default: [encoder] model).")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: [encoder] threads).")


def embed_command(args: argparse.Namespace, source: Any, settings: Settings) -> int:
    """`brainharmonic embed`: ``source`` and ``settings`` come from the CLI's input handling."""
    update: dict[str, Any] = {}
    if getattr(args, "model", None):
        # --model names the encoder for this input's modality (fMRI inputs use [encoder] fmri_model)
        update["fmri_model" if source.info.stype == "fMRI" else "model"] = Path(args.model)
    if getattr(args, "threads", None):
        update["threads"] = args.threads
    if update:
        settings = settings.model_copy(update={"encoder": settings.encoder.model_copy(update=update)})
    result = embed(source, settings, args.out)
    print(
        f"wrote {args.out}: {result.times.size} windows, latent {result.global_latent.shape[1]}, "
        f"groups {', '.join(result.group_names)}, "
        f"{len(np.unique(result.tokens[result.tokens >= 0]))} distinct tokens"
    )
    return 0
