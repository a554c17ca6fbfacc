"""One way to open an ONNX model: provider choice, thread settings and a metadata check.

Why one place: every model the runtime loads (the EEG encoder now, a music generator
later) should fail the same way when it is missing, corrupt, of the wrong kind or from
an incompatible export, with one sentence that names the file and the fix, never an
onnxruntime traceback in the middle of a live session.

Provider: CUDA when onnxruntime offers it (``device="auto"``), else CPU. Threads: the
intra-op pool size (1 by default: a live pipeline has other work on the other cores,
and small models gain nothing from more threads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from .errors import ConfigError, ModelError

Device = Literal["auto", "cpu", "cuda"]

KIND_KEY = "brainharmonic.kind"
FORMAT_KEY = "brainharmonic.format"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def choose_providers(device: Device = "auto") -> list[str]:
    """Execution providers for ``device``: CUDA first when present (auto) or required (cuda)."""
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise ModelError(
            "Device 'cuda' was requested but this onnxruntime has no CUDA provider "
            f"(it offers {', '.join(available)}); install onnxruntime-gpu "
            "or set the device to 'auto' or 'cpu'."
        )
    return [CPU]


@dataclass(frozen=True)
class OnnxModel:
    """An opened model: its session, the provider actually used and its metadata (strings)."""

    path: Path
    session: ort.InferenceSession
    provider: str
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.session.get_inputs())

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.session.get_outputs())

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the model; ``feeds`` maps input name → array. Returns outputs in graph order."""
        return list(self.session.run(None, dict(feeds)))


def model_kind(path: str | Path) -> str | None:
    """The ``brainharmonic.kind`` metadata of an ONNX file (None: missing, unreadable or not ours), so a
    caller can choose how to open it."""
    path = Path(path).expanduser()
    if not path.is_file():
        return None
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception:
        return None
    return dict(session.get_modelmeta().custom_metadata_map).get(KIND_KEY)


def open_model(
    path: str | Path,
    *,
    kind: str,
    formats: Sequence[str] = ("1",),
    required: Sequence[str] = (),
    threads: int = 1,
    device: Device = "auto",
    hint: str = "",
) -> OnnxModel:
    """Open ``path`` and check that it is a brainharmonic model of ``kind``.

    Parameters
    ----------
    kind : expected value of the ``brainharmonic.kind`` metadata entry (e.g. ``"eeg-encoder"``).
    formats : accepted values of ``brainharmonic.format`` (the I/O contract version).
    required : further metadata keys the caller reads.
    threads : intra-op threads (>= 1).
    device : "auto" (CUDA when present, else CPU), "cpu" or "cuda".
    hint : how to get a suitable file, appended to the missing-file message.

    Raises
    ------
    ModelError naming the file and the fix; ConfigError for a bad thread count.
    """
    path = Path(path).expanduser()
    if not (isinstance(threads, int) and 1 <= threads <= 256):
        raise ConfigError(f"Model threads must be an integer from 1 to 256, got {threads!r}; fix [encoder] threads.")
    if not path.is_file():
        raise ModelError(f"Model file {path} does not exist; {hint or 'pass the path of an existing .onnx file'}.")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: warnings about unused initialisers are noise here
    providers = choose_providers(device)
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ModelError(
            f"Could not load {path} as an ONNX model ({detail}); the file is truncated or not ONNX: "
            "export it again (`brainharmonic export`) or restore it from the repository."
        ) from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    got_kind = meta.get(KIND_KEY)
    if got_kind != kind:
        what = f"a '{got_kind}' model" if got_kind else "not a brainharmonic model (no brainharmonic.kind metadata)"
        raise ModelError(f"{path} is {what}, not a '{kind}' model; pass a {kind} model file.")
    got_format = meta.get(FORMAT_KEY)
    if got_format not in formats:
        raise ModelError(
            f"{path} uses model format {got_format!r} but this brainharmonic reads format "
            f"{' or '.join(formats)}; export the model again with this version (`brainharmonic export`)."
        )
    missing = [k for k in required if k not in meta]
    if missing:
        raise ModelError(
            f"{path} lacks the metadata {', '.join(missing)}; it was not exported by brainharmonic: "
            "export it again with `brainharmonic export`."
        )
    used = session.get_providers()[0] if session.get_providers() else CPU
    return OnnxModel(path=path, session=session, provider=used, meta=meta)
