"""Composing: scales, the ensemble (one instrument per channel group), the classic composer, the clock."""

from __future__ import annotations

from .classic import ClassicComposer
from .clock import Scheduler
from .ensemble import resolve_instruments
from .scales import SCALES, quantize, scale_pitches

__all__ = ["SCALES", "ClassicComposer", "Scheduler", "quantize", "resolve_instruments", "scale_pitches"]
