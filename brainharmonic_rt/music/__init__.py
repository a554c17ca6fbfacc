"""Composing: scales, the ensemble (one instrument per channel group), the classic composer."""

from __future__ import annotations

from .classic import ClassicComposer
from .ensemble import resolve_instruments
from .scales import SCALES, quantize, scale_pitches

__all__ = ["SCALES", "ClassicComposer", "quantize", "resolve_instruments", "scale_pitches"]
