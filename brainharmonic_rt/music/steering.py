"""How a learned composer hears the brain: a brain state → one music latent per instrument.

Shared by the REMI generator composer (:mod:`.learned`) and the ensemble composer
(:mod:`.ensemble_composer`): each instrument's brain vector (its group's learned latent, else the
global latent, else the group's band-power z-scores) goes through the brain → music
:class:`~brainharmonic_rt.brain.latent_map.LatentMap`, each latent source centred on its session's
calibration when the map is centred.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..brain.latent_map import LatentMap, SessionCentres, Space, bandpower_features
from ..errors import ModelError
from ..events import BrainState


class BrainSteering:
    """The latent map, the session centres and the brain → music latent of an instrument."""

    latent_map: LatentMap | None
    centres: SessionCentres
    _latent_dim: int
    _band_map: LatentMap | None = None

    def _init_steering(
        self,
        latent_map: LatentMap | None,
        path: Path | None,
        default: Path,
        latent_dim: int,
        centres: SessionCentres | None,
    ) -> None:
        """Open the map (``path``, else ``default`` when it exists, else none: band powers only)."""
        if latent_map is None:
            p = path or default
            latent_map = LatentMap.load(p) if (path or p.is_file()) else None
        if latent_map is not None and latent_map.music_dim != latent_dim:
            raise ModelError(
                f"The latent map gives {latent_map.music_dim} values but the model expects "
                f"{latent_dim}; fit the map again for this model."
            )
        self.latent_map = latent_map
        self._latent_dim = latent_dim
        self._band_map = None
        #: the session's latent centres; the pipeline passes its own, fed with every state in any mode
        self.centres = centres if centres is not None else SessionCentres()

    def music_latent(self, state: BrainState, name: str) -> np.ndarray | None:
        """Music latent (latent_dim,) for one instrument (``name``, or "" for the global latent) from a
        brain state, or None (calibrating)."""
        group = next((g for g in state.groups if g.name == name), None) if name else None
        own = group.latent if group is not None else None
        vec = own if own is not None else state.latent
        lmap = self.latent_map
        if vec is not None and lmap is not None and vec.shape[-1] == lmap.brain_dim:
            if lmap.centred:  # each latent source (group or global) has its own centre, fed in compose
                vec = self.centres(name if own is not None else "", vec)
            if state.calibrating or not np.all(np.isfinite(vec)):
                return None
            return lmap(vec)
        if state.calibrating:
            return None
        feats = bandpower_features(group if group is not None else state)
        return self._bands(feats.shape[0])(feats)

    def _bands(self, k: int) -> LatentMap:
        """Band z-scores are already standardised: identity brain space onto the music axes."""
        if self._band_map is None or self._band_map.brain_dim != k:
            d = self._latent_dim
            music = self.latent_map.music if self.latent_map is not None else Space(np.zeros(d), np.eye(d), np.ones(d))
            brain = Space(np.zeros(k), np.eye(k), np.ones(k))
            self._band_map = LatentMap(brain, music, "whiten")
        return self._band_map
