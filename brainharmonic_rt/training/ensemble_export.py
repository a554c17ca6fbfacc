"""Ensemble model (torch) → ONNX step model with metadata, checked for parity with onnxruntime.

Contract (kind ``music-ensemble``, format "1"), one grid step for B voices::

    prev         int64   (B,)        the voice's event at the previous step (0 none, 1 + pitch - LOW)
    held         int64   (B,)        event of the pitch it still holds from an earlier onset (0 none)
    others       float32 (B, P)      multi-hot of the pitches the other voices hold
    pos          int64   (B,)        grid steps since the bar line (0..15)
    role         int64   (B,)        0 bass, 1 inner, 2 melody, 3 texture
    program      int64   (B,)        GM program (0..127, 128 drums)
    register     float32 (B, 2)      (low - 60) / 24, (high - 60) / 24
    mode         int64   (B,)        0 major centre, 1 minor centre
    latent       float32 (B, 2D)     [global bar latent, the voice's bar latent]
    has_latent   float32 (B, 1)      0 = unsteered (latent zeros)
    state        float32 (L, B, H)
    → event_logits (B, 1 + P), length_logits (B, 16), state_out (L, B, H),
      pair (4, 73), motion (13, 12)  (constants: the runtime adds them, see music.ensemble_grid)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ..errors import ModelError
from ..music.ensemble_grid import LOW_PITCH, N_PITCH, N_POS, N_ROLES, motion_bias, pair_bias
from ..music.ensemble_model import FORMAT, INPUTS, KIND, OUTPUTS
from ..onnx_models import FORMAT_KEY, KIND_KEY
from .ensemble_model import EnsembleNet, StepModel, interaction
from .export import write_onnx

PARITY_ATOL = 1e-4


def _example(net: EnsembleNet, b: int, seed: int) -> tuple[torch.Tensor, ...]:
    cfg = net.cfg
    g = torch.Generator().manual_seed(seed)
    others = (torch.rand(b, N_PITCH, generator=g) > 0.95).float()
    return (
        torch.randint(0, N_PITCH + 1, (b,), generator=g),
        torch.randint(0, N_PITCH + 1, (b,), generator=g),
        others,
        torch.randint(0, N_POS, (b,), generator=g),
        torch.randint(0, N_ROLES, (b,), generator=g),
        torch.randint(0, 129, (b,), generator=g),
        torch.randn(b, 2, generator=g) * 0.5,
        torch.randint(0, 2, (b,), generator=g),
        torch.randn(b, 2 * cfg.latent_dim, generator=g),
        torch.ones(b, 1),
        torch.randn(cfg.n_layers, b, cfg.hidden, generator=g) * 0.1,
    )


def export_ensemble(net: EnsembleNet, out: Path | str, programs: Sequence[int] = ()) -> float:
    """Write ``out`` with metadata; return the parity max abs difference (raises ModelError beyond the tolerance)."""
    out = Path(out)
    step = StepModel(net.cpu().eval()).eval()
    batch = torch.export.Dim("batch", min=1)
    dyn = {name: {0: batch} for name in INPUTS if name != "state"} | {"state": {1: batch}}
    cfg = net.cfg
    meta = {
        KIND_KEY: KIND,
        FORMAT_KEY: FORMAT,
        "latent_dim": str(cfg.latent_dim),
        "hidden": str(cfg.hidden),
        "n_layers": str(cfg.n_layers),
        "low_pitch": str(LOW_PITCH),
        "n_pitch": str(N_PITCH),
        "programs": json.dumps([int(p) for p in programs]),
    }
    return write_onnx(
        step,
        _example(net, 2, 0),
        out,
        inputs=list(INPUTS),
        outputs=list(OUTPUTS),
        dynamic_shapes=dyn,
        meta=meta,
        parity=lambda path: parity(net, path),
    )


@torch.no_grad()
def parity(net: EnsembleNet, path: Path | str, steps: int = 10, voices: int = 4, seed: int = 3) -> float:
    """The same random ensemble through torch (whole sequence, with the pair and motion terms) and through
    onnxruntime step by step with the terms added in numpy (the runtime's code): max |Δ logit|."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    v, t = voices, steps
    ev = torch.where(
        torch.rand(1, v, t, generator=g) < 0.5,
        torch.randint(1, N_PITCH + 1, (1, v, t), generator=g),
        torch.zeros(1, v, t, dtype=torch.long),
    )
    held = torch.where(ev == 0, torch.randint(0, N_PITCH + 1, (1, v, t), generator=g), torch.zeros_like(ev))
    last = torch.randint(0, N_PITCH + 1, (1, v, t), generator=g)
    prev = torch.cat([torch.zeros(1, v, 1, dtype=torch.long), ev[:, :, :-1]], -1)
    pos = torch.arange(t)[None] % 8
    role = torch.tensor([[0, 1, 3, 2]])[:, :v]
    program = torch.randint(0, 129, (1, v), generator=g)
    register = torch.randn(1, v, 2, generator=g) * 0.5
    mode = torch.tensor([1])
    lat = torch.randn(1, v, 2 * net.cfg.latent_dim, generator=g)
    valid = torch.ones(1, v, dtype=torch.bool)
    oh = torch.nn.functional.one_hot(held, N_PITCH + 1)[..., 1:].float()
    others = oh.sum(1, keepdim=True) - oh
    x = net.inputs(
        prev.reshape(v, t), held.reshape(v, t), others.reshape(v, t, N_PITCH), pos.expand(v, -1),
        role.reshape(v), program.reshape(v), register.reshape(v, 2), mode.expand(v),
    )  # fmt: skip
    cond = torch.cat([lat[0, :, None].expand(-1, t, -1), torch.ones(v, t, 1)], -1)
    ref, ref_dur = net.core(x, cond)
    full = ref.reshape(1, v, t, -1)
    extra = interaction(net, ev, held, last, role, valid)
    expected = torch.cat([full[..., :1], full[..., 1:] + extra], -1)[0].numpy()
    state = np.zeros((net.cfg.n_layers, v, net.cfg.hidden), np.float32)
    worst = 0.0
    for k in range(t):
        feeds = {
            "prev": prev[0, :, k].numpy(),
            "held": held[0, :, k].numpy(),
            "others": others[0, :, k].numpy(),
            "pos": pos[0, k].expand(v).numpy().copy(),
            "role": role[0].numpy(),
            "program": program[0].numpy(),
            "register": register[0].numpy(),
            "mode": mode.expand(v).numpy().copy(),
            "latent": lat[0].numpy(),
            "has_latent": np.ones((v, 1), np.float32),
            "state": state,
        }
        logits, dur, state, pair, motion = sess.run(None, feeds)
        for i in range(v):  # what the runtime adds: the known pitches, and the earlier voices that moved
            known = []
            movers = []
            for u in range(v):
                if u == i:
                    continue
                e = int(ev[0, u, k]) if u < i and int(ev[0, u, k]) > 0 else int(held[0, u, k])
                if e > 0:
                    known.append(LOW_PITCH + e - 1)
                if u < i and int(ev[0, u, k]) > 0 and int(ev[0, u, k]) != int(last[0, u, k]):
                    lu = int(last[0, u, k])
                    movers.append((LOW_PITCH + lu - 1 if lu > 0 else None, LOW_PITCH + int(ev[0, u, k]) - 1))
            li = int(last[0, i, k])
            own = LOW_PITCH + li - 1 if li > 0 else None
            row = logits[i].copy()
            row[1:] += pair_bias(pair, int(role[0, i]), np.asarray(known)) + motion_bias(motion, own, movers)
            worst = max(worst, float(np.abs(row - expected[i, k]).max()))
        worst = max(worst, float(np.abs(dur - ref_dur[:, k].numpy()).max()))
    if not worst <= PARITY_ATOL:
        raise ModelError(
            f"ONNX export of the ensemble model disagrees with torch by {worst:.2e} (> {PARITY_ATOL}); "
            "check the torch/onnxruntime versions and export again."
        )
    return worst
