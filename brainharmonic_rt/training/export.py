"""Torch encoder → ONNX (dynamic batch, channel and group axes) with metadata, checked for parity.

Parity is checked on every export: random inputs of several shapes (1 and many
channels, one and several groups, batch 1 and 3) through torch and through
onnxruntime must agree within ``PARITY_ATOL`` and give the same tokens.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from ..brain.encoder import CODEBOOK_KEY, EncoderSpec, encode_codebook
from ..errors import ModelError
from .model import EEGEncoder, ExportWrapper

PARITY_ATOL = 1e-4
OPSET = 18
PARITY_SHAPES = ((1, 4, 1), (3, 19, 5), (2, 1, 1), (1, 64, 5))  # (batch, channels, groups)


@contextmanager
def _quiet_loggers() -> Iterator[None]:
    """The exporter logs every optimisation pass at INFO; keep only errors."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _example(spec: EncoderSpec, b: int, c: int, g: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, spec.n_samples, generator=gen)
    region = torch.randint(0, len(spec.regions), (c,), generator=gen)
    mask = torch.zeros(g, c)
    for ch in range(c):  # every channel in one group, every group non-empty
        mask[ch % g, ch] = 1.0
    return x, region, mask


def export_onnx(encoder: EEGEncoder, spec: EncoderSpec, out: Path | str) -> float:
    """Write ``out`` (a single file) with ``spec``'s metadata; return the parity max abs difference."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(encoder.cpu().eval()).eval()
    b, c, g = (
        torch.export.Dim("batch", min=1),
        torch.export.Dim("channels", min=1),
        torch.export.Dim("groups", min=1),
    )
    return write_onnx(
        wrapper,
        _example(spec, 2, 7, 3, seed=0),
        out,
        inputs=["x", "region", "group_mask"],
        outputs=["global_latent", "group_latents", "token"],
        dynamic_shapes={"x": {0: b, 1: c}, "region": {0: c}, "group_mask": {0: g, 1: c}},
        meta={**spec.to_meta(), CODEBOOK_KEY: encode_codebook(encoder.codebook.detach().cpu().numpy())},
        parity=lambda path: parity(encoder, path, spec),
    )


def write_onnx(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    out: Path,
    *,
    inputs: Sequence[str],
    outputs: Sequence[str],
    dynamic_shapes: Mapping[str, Mapping[int, Any]],
    meta: Mapping[str, str],
    parity: Callable[[Path], float],
) -> float:
    """Export ``module`` to one ONNX file with ``meta``, keep it only if ``parity`` passes; return its result.

    Written to ``out.part`` first and renamed, so a failed check never leaves a model behind.
    """
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), _quiet_loggers():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_shapes=dict(dynamic_shapes),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise ModelError("torch.onnx.export returned nothing; check the torch and onnxscript versions.")
    model = program.model_proto
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "brainharmonic-rt"
    onnx.checker.check_model(model)
    tmp = out.with_name(out.name + ".part")
    onnx.save_model(model, str(tmp))
    try:
        diff = parity(tmp)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return diff


@torch.no_grad()
def parity(encoder: EEGEncoder, path: Path | str, spec: EncoderSpec) -> float:
    """Max abs difference torch vs onnxruntime over :data:`PARITY_SHAPES`; ModelError above the tolerance."""
    wrapper = ExportWrapper(encoder.cpu().eval()).eval()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for k, (b, c, g) in enumerate(PARITY_SHAPES):
        x, region, mask = _example(spec, b, c, g, seed=100 + k)
        ref = [t.numpy() for t in wrapper(x, region, mask)]
        got = sess.run(None, {"x": x.numpy(), "region": region.numpy(), "group_mask": mask.numpy()})
        for r, o in zip(ref[:2], got[:2], strict=True):
            if r.shape != o.shape:
                raise ModelError(f"ONNX output shape {o.shape} differs from torch {r.shape} for input {(b, c, g)}.")
            worst = max(worst, float(np.max(np.abs(r - o))))
        if not np.array_equal(ref[2], got[2]):
            raise ModelError(f"ONNX tokens {got[2]} differ from torch {ref[2]} for input shape {(b, c, g)}.")
    if worst > PARITY_ATOL:
        raise ModelError(f"ONNX export differs from torch by {worst:.2e} (> {PARITY_ATOL:g}); do not ship it.")
    logging.getLogger(__name__).info("parity torch vs onnxruntime: max abs diff %.2e", worst)
    return worst
