"""Which learned brain reads a stream: the EEG encoder, or the fMRI encoder for fMRI sources.

One place decides, so the live pipeline, ``embed`` and the evaluations pick the same model.
"""

from __future__ import annotations

from typing import Any

from ..config import BandSettings, EncoderSettings, SignalSettings
from ..events import SignalInfo

FMRI_TYPE = "fMRI"


def learned_brain(
    info: SignalInfo,
    signal: SignalSettings,
    bands: BandSettings,
    encoder: EncoderSettings | None = None,
    *,
    model: Any = None,
) -> Any:
    """A :class:`~.encoder.LearnedBrain` (EEG) or :class:`~.fmri_encoder.FmriLearnedBrain` (``stype`` fMRI)."""
    if info.stype == FMRI_TYPE:
        from .fmri_encoder import FmriLearnedBrain

        return FmriLearnedBrain(info, signal, bands, encoder, model=model)
    from .encoder import LearnedBrain

    return LearnedBrain(info, signal, bands, encoder, model=model)
