"""The learned encoder at run time: window → global latent, group latents and a brain token.

Three parts, each usable alone:

* :class:`EncoderSpec` – what the model expects, read from its ONNX metadata.
* :class:`EncoderInput` – window → model input, the *only* place this happens (training,
  ``embed`` and ``eval encoder`` call it too, so the model always sees data prepared the
  same way): pick the grouped channels that are not bad, divide each by its baseline
  amplitude (robust, from the start of the session, like the classic z-scores), take the
  last ``window_s`` seconds and bring them to the model's rate.
* :class:`EncoderModel` – the ONNX session (through :mod:`brainharmonic_rt.onnx_models`).

:class:`LearnedBrain` composes a :class:`~brainharmonic_rt.brain.classic.ClassicBrain`, so
band powers and z-scores stay available to the classic composer, and adds
``BrainState.latent``, ``BrainState.token`` and ``GroupState.latent``.

ONNX contract (format "1")::

    x            float32 (batch, channels, n_samples)   baseline-scaled EEG at spec.sfreq
    region       int64   (channels,)                     region id per channel (0 = unknown)
    group_mask   float32 (groups, channels)              1 where a channel belongs to a group
    → global_latent  float32 (batch, latent_dim)
    → group_latents  float32 (batch, groups, latent_dim)
    → token          int64   (batch,)                    index into the K-entry codebook
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from ..config import BandSettings, EncoderSettings, SignalSettings
from ..errors import ModelError
from ..events import BrainState, SignalInfo, Window
from ..onnx_models import FORMAT_KEY, KIND_KEY, OnnxModel, open_model
from ..signal.channels import REGIONS, region_of
from .classic import ClassicBrain
from .normalize import BaselineNormalizer

log = logging.getLogger(__name__)

KIND = "eeg-encoder"
FORMAT = "1"
REGION_NAMES: tuple[str, ...] = ("unknown", *REGIONS)
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "encoder.onnx"
MIN_RATE_FACTOR = 2.0  # a stream must resolve the model's band-pass high edge: sfreq >= 2 × high
STD_FLOOR = 1e-30  # log10 of an exactly flat channel's std would be -inf
CODEBOOK_KEY = "codebook"  # metadata: base64 of the (K, D) little-endian float32 code vectors


def encode_codebook(codes: np.ndarray) -> str:
    """(K, D) code vectors → the ``codebook`` metadata string."""
    return base64.b64encode(np.ascontiguousarray(codes, dtype="<f4").tobytes()).decode("ascii")


_REQUIRED = (
    "sfreq",
    "n_samples",
    "latent_dim",
    "codebook_size",
    "regions",
    "bandpass",
    "input_clip",
    "version",
)


def region_ids(ch_names: tuple[str, ...] | list[str]) -> np.ndarray:
    """Region id (index into :data:`REGION_NAMES`, 0 = unknown) per channel name, int64."""
    return np.asarray([REGION_NAMES.index(region_of(n) or "unknown") for n in ch_names], dtype=np.int64)


@dataclass(frozen=True, slots=True)
class EncoderSpec:
    """What an encoder expects and returns (its ONNX metadata, parsed)."""

    sfreq: float
    n_samples: int
    latent_dim: int
    codebook_size: int
    bandpass: tuple[float, float]
    input_clip: float
    version: str
    regions: tuple[str, ...] = REGION_NAMES
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def window_s(self) -> float:
        """Window length the model was trained on, in seconds."""
        return self.n_samples / self.sfreq

    def to_meta(self) -> dict[str, str]:
        """Metadata entries for the ONNX file (all strings)."""
        meta = {
            KIND_KEY: KIND,
            FORMAT_KEY: FORMAT,
            "sfreq": f"{self.sfreq:g}",
            "n_samples": str(self.n_samples),
            "window_s": f"{self.window_s:g}",
            "latent_dim": str(self.latent_dim),
            "codebook_size": str(self.codebook_size),
            "bandpass": f"{self.bandpass[0]:g},{self.bandpass[1]:g}",
            "input_clip": f"{self.input_clip:g}",
            "version": self.version,
            "regions": ",".join(self.regions),
            "channels": "any number >= 1 in any order; region id per channel; bad channels are dropped",
            "input": "per-channel EEG divided by its robust baseline std (start of session), clipped",
        }
        meta.update(dict(self.extra))
        return meta

    @classmethod
    def from_meta(cls, meta: dict[str, str], path: Path | str = "model") -> EncoderSpec:
        """Parse metadata; a malformed entry raises ModelError naming it."""
        try:
            low, high = (float(v) for v in meta["bandpass"].split(","))
            spec = cls(
                sfreq=float(meta["sfreq"]),
                n_samples=int(meta["n_samples"]),
                latent_dim=int(meta["latent_dim"]),
                codebook_size=int(meta["codebook_size"]),
                bandpass=(low, high),
                input_clip=float(meta["input_clip"]),
                version=meta["version"],
                regions=tuple(meta["regions"].split(",")),
            )
        except (KeyError, ValueError) as exc:
            raise ModelError(
                f"{path} has malformed encoder metadata ({exc}); export it again with `brainharmonic export`."
            ) from None
        if spec.regions != REGION_NAMES:
            raise ModelError(
                f"{path} was trained with regions {spec.regions}, this runtime uses {REGION_NAMES}; "
                "retrain or re-export the encoder with this version."
            )
        if not (spec.sfreq > 0 and spec.n_samples > 1 and spec.latent_dim > 0 and spec.codebook_size > 0):
            raise ModelError(f"{path} has impossible encoder metadata {meta}; export it again.")
        return spec


class EncoderModel:
    """The ONNX encoder: batches of prepared windows → latents and tokens."""

    def __init__(self, model: OnnxModel) -> None:
        self.model = model
        self.spec = EncoderSpec.from_meta(model.meta, model.path)
        expected = ("x", "region", "group_mask")
        if model.input_names != expected:
            raise ModelError(
                f"{model.path} has inputs {model.input_names}, expected {expected}; export it again with "
                "`brainharmonic export`."
            )

    @classmethod
    def load(cls, settings: EncoderSettings | None = None) -> EncoderModel:
        """Open the model named by ``settings`` (default: the project's models/encoder.onnx)."""
        settings = settings or EncoderSettings()
        path = settings.model if settings.model is not None else DEFAULT_MODEL
        model = open_model(
            path,
            kind=KIND,
            formats=(FORMAT,),
            required=_REQUIRED,
            threads=settings.threads,
            device=settings.device,
            hint="train one with `brainharmonic train encoder --data DIR --out PATH` or set [encoder] model",
        )
        return cls(model)

    @property
    def codebook(self) -> np.ndarray | None:
        """The K unit code vectors (K, D) float32 from the ``codebook`` metadata (None in older models).

        Tokens are indices into these; the cosine distance of two codes is the distance of two tokens.
        """
        raw = self.model.meta.get(CODEBOOK_KEY)
        if raw is None:
            return None
        k, d = self.spec.codebook_size, self.spec.latent_dim
        try:
            codes = np.frombuffer(base64.b64decode(raw), dtype="<f4").reshape(k, d)
        except ValueError:
            raise ModelError(
                f"{self.model.path} has a malformed codebook entry (expected {k} x {d} float32); export it again."
            ) from None
        return codes.astype(np.float32)

    def encode(
        self, x: np.ndarray, region: np.ndarray, group_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Encode prepared windows.

        x : float32 (batch, channels, n_samples); region : int64 (channels,);
        group_mask : float32 (groups, channels), every row with at least one 1.
        Returns global latents (batch, D), group latents (batch, groups, D), tokens (batch,).
        """
        glob, groups, token = self.model.run({"x": x, "region": region, "group_mask": group_mask})
        return glob, groups, token


@dataclass(frozen=True, slots=True)
class Prepared:
    """One window ready for the model.

    x : float32 (1, kept channels, n_samples); region : int64 (kept,);
    group_mask : float32 (present groups, kept); groups : indices of the present groups;
    channels : stream channel index of each kept channel.
    """

    x: np.ndarray
    region: np.ndarray
    group_mask: np.ndarray
    groups: np.ndarray
    channels: np.ndarray


class EncoderInput:
    """Window → model input; holds the per-channel baseline amplitudes of one session.

    Parameters
    ----------
    info : the stream.
    signal : the signal settings the windows were made with (window length, band-pass, baseline).
    spec : the model's expectations.
    groups : group name → stream channel indices (as ClassicBrain / group_channels make them).

    Raises ModelError when the stream cannot feed the model (rate too low, window too
    short, different band-pass), naming the fix.
    """

    def __init__(
        self,
        info: SignalInfo,
        signal: SignalSettings,
        spec: EncoderSpec,
        groups: dict[str, tuple[int, ...]],
    ) -> None:
        self.info = info
        self.spec = spec
        _check_fit(info, signal, spec)
        used = sorted({i for idx in groups.values() for i in idx})
        self.channels = np.asarray(used, dtype=np.intp)
        self.region = region_ids([info.ch_names[i] for i in used])
        pos = {ch: k for k, ch in enumerate(used)}
        self.group_mask = np.zeros((len(groups), len(used)), dtype=np.float32)
        for g, idx in enumerate(groups.values()):
            self.group_mask[g, [pos[i] for i in idx]] = 1.0
        self.n_in = round(spec.window_s * info.sfreq)  # stream samples that make one model window
        ratio = Fraction(spec.sfreq / info.sfreq).limit_denominator(1000)
        self.up, self.down = ratio.numerator, ratio.denominator
        self.scaler = BaselineNormalizer(signal.baseline, signal.adapt, z_clip=1e9)
        self._good = np.ones(len(used), dtype=bool)

    @property
    def resampling(self) -> str:
        """How the stream rate reaches the model rate, for logs and telemetry."""
        if self.up == self.down:
            return "none"
        if self.up == 1:
            return f"decimate by {self.down} (after the causal band-pass)"
        return f"polyphase {self.up}/{self.down}"

    def prepare(self, window: Window) -> Prepared | None:
        """Model input for ``window`` (data (n_channels, n_samples)), or None when no grouped channel is good.

        Also advances the baseline amplitude estimate (every window, bad channels skipped).
        """
        data = window.data[self.channels]
        good = self._good
        good[:] = True
        if window.bad:
            bad = {ch for ch, _ in window.bad}
            good[:] = [int(c) not in bad for c in self.channels]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_std = np.log10(np.maximum(data.std(axis=1), STD_FLOOR))
        log_std[~good] = np.nan
        self.scaler.update(window.t_end, log_std)
        center = self.scaler.center
        assert center is not None
        keep = np.flatnonzero(good & np.isfinite(center))
        if keep.size == 0:
            return None
        x = data[keep, -self.n_in :] * (10.0 ** -center[keep])[:, None]
        x = self._resample(x)
        np.clip(x, -self.spec.input_clip, self.spec.input_clip, out=x)
        mask = self.group_mask[:, keep]
        present = np.flatnonzero(mask.any(axis=1))
        return Prepared(
            x=x[None].astype(np.float32),
            region=self.region[keep],
            group_mask=np.ascontiguousarray(mask[present]),
            groups=present,
            channels=self.channels[keep],
        )

    def _resample(self, x: np.ndarray) -> np.ndarray:
        """(channels, n_in) at the stream rate → (channels, spec.n_samples) at the model rate."""
        n = self.spec.n_samples
        if self.up == self.down:
            y = x
        elif self.up == 1:
            # Integer factor: the causal band-pass (high edge <= 0.4 × model rate, checked) is the
            # anti-alias filter; keep every down-th sample, ending on the window's last sample.
            y = x[:, ::-1][:, :: self.down][:, ::-1]
        else:
            y = resample_poly(x, self.up, self.down, axis=1, padtype="line")
        if y.shape[1] > n:
            y = y[:, -n:]
        elif y.shape[1] < n:
            y = np.pad(y, ((0, 0), (n - y.shape[1], 0)), mode="edge")
        return np.ascontiguousarray(y, dtype=np.float64)


def _check_fit(info: SignalInfo, signal: SignalSettings, spec: EncoderSpec) -> None:
    """ModelError when the stream or the signal settings cannot feed the model faithfully."""
    low, high = spec.bandpass
    if info.sfreq < MIN_RATE_FACTOR * high:
        raise ModelError(
            f"Stream '{info.name}' is sampled at {info.sfreq:.4g} Hz, too slow for the EEG encoder "
            f"(trained on {low:g}-{high:g} Hz EEG at {spec.sfreq:g} Hz, "
            f"needs >= {MIN_RATE_FACTOR * high:g} Hz); "
            "use --mode classic for this stream."
        )
    if signal.window + 1e-9 < spec.window_s:
        raise ModelError(
            f"[signal] window = {signal.window:g} s is shorter than the {spec.window_s:g} s the encoder was "
            f"trained on; set [signal] window = {spec.window_s:g} "
            f"(or longer: the last {spec.window_s:g} s are used)."
        )
    if signal.bandpass is None or not np.allclose(signal.bandpass, spec.bandpass):
        raise ModelError(
            f"[signal] bandpass = {signal.bandpass} differs from the {low:g}-{high:g} Hz the encoder was "
            f"trained with, so its latents would be meaningless; set [signal] bandpass = [{low:g}, {high:g}]."
        )
    if high > 0.4 * spec.sfreq:
        raise ModelError(
            f"The encoder's band-pass high edge ({high:g} Hz) is above 0.4 × its rate ({spec.sfreq:g} Hz); "
            "it was exported wrongly: export it again."
        )


class LearnedBrain:
    """:class:`ClassicBrain` plus the learned encoder: same interface, more fields filled.

    ``process(window)`` returns the classic :class:`BrainState` with ``latent`` (D,),
    ``token`` and each group's ``latent`` (D,) set; a group without a good channel keeps
    ``latent=None``, and a window without any good grouped channel keeps all of them None (never NaN).
    """

    def __init__(
        self,
        info: SignalInfo,
        signal: SignalSettings,
        bands: BandSettings,
        encoder: EncoderSettings | None = None,
        *,
        model: EncoderModel | None = None,
    ) -> None:
        self.model = model or EncoderModel.load(encoder)
        self.spec = self.model.spec
        _check_fit(info, signal, self.spec)  # before the classic checks: the more useful sentence first
        self.classic = ClassicBrain(info, signal, bands)
        self.info = info
        self.groups: dict[str, tuple[int, ...]] = self.classic.groups
        self.input = EncoderInput(info, signal, self.spec, self.groups)
        self._group_names = tuple(self.groups)
        self.n_encoded = 0
        self.n_skipped = 0
        self._last_token: int | None = None
        self._held: list[np.ndarray | None] = [None] * len(self._group_names)  # last clean latent per group
        self._held_global: tuple[np.ndarray, int] | None = None  # last clean global latent and token
        log.info(
            "encoder %s (v%s, %s) on %d channels, resampling: %s",
            self.model.model.path.name,
            self.spec.version,
            self.model.model.provider,
            len(self.input.channels),
            self.input.resampling,
        )

    def process(self, window: Window) -> BrainState:
        """Band powers (classic) and learned latents of one preprocessed window."""
        state = self.classic.process(window)
        if window.artifacts:  # touched channels feed neither the encoder nor its amplitude baseline
            window = dataclasses.replace(window, bad=window.bad + window.artifacts)
        prep = self.input.prepare(window)
        if prep is None:
            self.n_skipped += 1
            return state
        glob, group_lat, token = self.model.encode(prep.x, prep.region, prep.group_mask)
        if not (np.isfinite(glob).all() and np.isfinite(group_lat).all()):  # never NaN downstream
            self.n_skipped += 1
            return state
        latents: list[np.ndarray | None] = [None] * len(self._group_names)
        for row, g in enumerate(prep.groups):
            latents[int(g)] = group_lat[0, row]
        held = [bool(gs.held) for gs in state.groups]
        if any(held):  # as the band powers: groups an artifact touched keep their last clean latents
            latents = [
                self._held[k] if h and self._held[k] is not None else lat
                for k, (h, lat) in enumerate(zip(held, latents, strict=True))
            ]
            if self._held_global is not None:
                glob, token = self._held_global[0][None], np.asarray([self._held_global[1]])
        else:
            self._held_global = (glob[0], int(token[0]))
        for k, h in enumerate(held):
            if not h and latents[k] is not None:
                self._held[k] = latents[k]
        # A group the band powers call silent (n_good 0) carries no latent either.
        groups = tuple(
            dataclasses.replace(gs, latent=latents[k] if gs.n_good > 0 else None) for k, gs in enumerate(state.groups)
        )
        self.n_encoded += 1
        self._last_token = int(token[0])
        return dataclasses.replace(state, groups=groups, latent=glob[0], token=self._last_token)

    def stats(self) -> dict[str, Any]:
        """The classic stats plus the encoder's."""
        out = self.classic.stats()
        out["encoder"] = {
            "model": str(self.model.model.path),
            "version": self.spec.version,
            "provider": self.model.model.provider,
            "encoded": self.n_encoded,
            "skipped": self.n_skipped,
            "token": self._last_token,
            "resampling": self.input.resampling,
        }
        return out
