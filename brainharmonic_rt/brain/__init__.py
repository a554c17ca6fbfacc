"""Understanding the signal: window → brain state (band powers now, learned latents in learned mode)."""

from __future__ import annotations

from .bandpower import BandPower, check_bands, suggest_bands
from .classic import ClassicBrain
from .normalize import BaselineNormalizer

__all__ = ["BandPower", "BaselineNormalizer", "ClassicBrain", "check_bands", "suggest_bands"]
