"""Generator (torch) → ONNX step model with metadata, checked for parity with onnxruntime.

Contract (format "1"), one token per call, batch B::

    token        int64   (B,)
    latent       float32 (B, latent_dim)
    has_latent   float32 (B, 1)            0 = unconditioned (latent ignored when 0 and latent = 0)
    program      int64   (B,)              0..127 GM program, 128 = drums
    logit_bias   float32 (B, vocab)        added to the logits (large negative = forbidden)
    state        float32 (layers, B, hidden)
    → logits     float32 (B, vocab)
    → state_out  float32 (layers, B, hidden)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from ..errors import ModelError
from ..music.generator import FORMAT, KIND
from ..music.tokens import Vocab
from ..onnx_models import FORMAT_KEY, KIND_KEY
from .export import write_onnx
from .generator_model import Generator, StepModel

PARITY_ATOL = 1e-4
INPUTS = ["token", "latent", "has_latent", "program", "logit_bias", "state"]


def _example(model: Generator, b: int, seed: int) -> tuple[torch.Tensor, ...]:
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, cfg.vocab_size, (b,), generator=g),
        torch.randn(b, cfg.latent_dim, generator=g),
        torch.ones(b, 1),
        torch.randint(0, 129, (b,), generator=g),
        torch.zeros(b, cfg.vocab_size),
        torch.randn(cfg.n_layers, b, cfg.hidden, generator=g) * 0.1,
    )


def export_generator(model: Generator, vocab: Vocab, out: Path | str, programs: Sequence[int] = ()) -> float:
    """Write ``out`` (a single file) with metadata; return the parity max abs difference.

    ``programs``: the programs with enough training data (the runtime maps others onto the first).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    step = StepModel(model.cpu().eval()).eval()
    batch = torch.export.Dim("batch", min=1)
    dyn = {
        "token": {0: batch},
        "latent": {0: batch},
        "has_latent": {0: batch},
        "program": {0: batch},
        "logit_bias": {0: batch},
        "state": {1: batch},
    }
    cfg = model.cfg
    meta = {
        KIND_KEY: KIND,
        FORMAT_KEY: FORMAT,
        "vocab": json.dumps(vocab.tokens),
        "latent_dim": str(cfg.latent_dim),
        "hidden": str(cfg.hidden),
        "n_layers": str(cfg.n_layers),
        "vocab_size": str(cfg.vocab_size),
        "programs": json.dumps([int(p) for p in programs]),
    }
    return write_onnx(
        step,
        _example(model, 2, 0),
        out,
        inputs=INPUTS,
        outputs=["logits", "state_out"],
        dynamic_shapes=dyn,
        meta=meta,
        parity=lambda path: parity(model, path),
    )


def set_metadata(path: Path | str, key: str, value: str) -> None:
    """Set one metadata entry of an exported model in place (weights untouched)."""
    proto = onnx.load(str(path))
    for e in proto.metadata_props:
        if e.key == key:
            e.value = value
            break
    else:
        e = proto.metadata_props.add()
        e.key, e.value = key, value
    tmp = Path(str(path) + ".part")
    onnx.save_model(proto, str(tmp))
    tmp.replace(path)


@torch.no_grad()
def parity(model: Generator, path: Path | str, steps: int = 12) -> float:
    """Feed the same random token sequence to torch (full sequence) and onnxruntime (step by step)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for b in (1, 3):
        _, lat, has, prog, bias, _ = _example(model, b, seed=b)
        seq = torch.randint(0, model.cfg.vocab_size, (b, steps), generator=torch.Generator().manual_seed(7))
        cond = torch.cat([lat, has], -1).unsqueeze(1).expand(-1, steps, -1)
        ref, _ = model(seq, cond, prog)
        state = np.zeros((model.cfg.n_layers, b, model.cfg.hidden), np.float32)
        for t in range(steps):
            feeds = {
                "token": seq[:, t].numpy(),
                "latent": lat.numpy(),
                "has_latent": has.numpy(),
                "program": prog.numpy(),
                "logit_bias": bias.numpy(),
                "state": state,
            }
            logits, state = sess.run(None, feeds)
            worst = max(worst, float(np.abs(logits - ref[:, t].numpy()).max()))
    if not worst <= PARITY_ATOL:
        raise ModelError(
            f"ONNX export of the generator disagrees with torch by {worst:.2e} (> {PARITY_ATOL}); "
            "check the torch/onnxruntime versions and export again."
        )
    return worst
