"""Offline training (torch, the ``[train]`` extra): self-supervised EEG encoder → ONNX + model card.

Nothing here is imported by the runtime, and this package imports no torch at import
time, so ``import brainharmonic_rt.training`` works without the extra; the modules that
need torch (``model``, ``loop``, ``export``) say so with one clear sentence when it is missing.
"""

from __future__ import annotations
