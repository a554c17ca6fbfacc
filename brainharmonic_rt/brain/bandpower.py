"""Band power per channel from one window: Hann-windowed periodogram summed over band bins.

Bins and weights are precomputed once per window length, so a window costs one real FFT
and one small matrix product. numpy's FFT is scipy's pocketfft (same values), and imports in no time.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import ConfigError


def suggest_bands(sfreq: float) -> tuple[str, float]:
    """Three contiguous log-spaced bands that fit a ``sfreq`` Hz stream, and the window they need.

    Returns a TOML snippet for ``[bands]`` and the shortest window (s) that resolves the
    lowest band with a few bins.
    """
    top = 0.4 * sfreq
    edges = top / 16.0 ** (np.arange(3, -1, -1) / 3.0)  # 4 edges spanning a factor 16
    vals = [float(f"{e:.2g}") for e in edges]
    snippet = ", ".join(f"{name} = [{vals[k]:g}, {vals[k + 1]:g}]" for k, name in enumerate(("theta", "alpha", "beta")))
    window = float(f"{4.0 / (vals[1] - vals[0]):.2g}")
    return snippet, window


def decimation_step(
    sfreq: float, bandpass: tuple[float, float] | None, bands: Mapping[str, tuple[float, float]]
) -> int:
    """How many samples band power may skip after the causal low-pass: keeps >= 3 samples per period of the
    higher of the band-pass edge and the top band edge (64 ch @ 1 kHz: every 8th sample, an 8x smaller FFT).
    Without a band-pass nothing is skipped (aliasing would fold high-frequency power into the bands).
    """
    if bandpass is None:
        return 1
    top = max(min(bandpass[1], 0.45 * sfreq), max(high for _, high in bands.values()))
    return max(1, int(sfreq // (3.0 * top)))


def check_bands(bands: Mapping[str, tuple[float, float]], sfreq: float) -> None:
    """Raise :class:`ConfigError` when a band does not fit below the Nyquist frequency of ``sfreq``."""
    nyquist = sfreq / 2.0
    for name, (low, high) in bands.items():
        if high > nyquist:
            snippet, window = suggest_bands(sfreq)
            raise ConfigError(
                f"Band {name} ({low:g}-{high:g} Hz) reaches above the Nyquist frequency ({nyquist:.4g} Hz) "
                f"of a {sfreq:.4g} Hz stream; set [bands] for this rate, e.g. {snippet}, "
                f"with [signal] window >= {window:g} s."
            )


def periodic_hann(n: int) -> np.ndarray:
    """The periodic (DFT-even) Hann window of ``n`` samples, value for value what
    ``scipy.signal.get_window("hann", n)`` returns, without importing scipy.signal (~0.7 s of start-up)."""
    if n <= 1:
        return np.ones(n)
    return (0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, n + 1)))[:-1]


class BandPower:
    """Band power (signal units² integrated over each band) of every channel of a window.

    Parameters
    ----------
    sfreq : sampling rate in Hz.
    n_samples : window length in samples.
    bands : band name → (low, high) Hz; a bin at frequency f counts when low <= f < high.
    step : use every ``step``-th sample. Only for data already low-passed below ``sfreq / (2 * step)``
        (see :func:`decimation_step`): the FFT then costs ``step`` times less for the same band powers.
    """

    def __init__(
        self, sfreq: float, n_samples: int, bands: Mapping[str, tuple[float, float]], *, step: int = 1
    ) -> None:
        check_bands(bands, sfreq)
        self.step = max(1, int(step))
        self.n_full = n_samples
        sfreq = sfreq / self.step
        n_samples = -(-n_samples // self.step)  # samples kept by data[:, ::step]
        self.sfreq = sfreq
        self.n_samples = n_samples
        self.names = tuple(bands)
        self._taper = periodic_hann(n_samples)
        freqs = np.fft.rfftfreq(n_samples, 1.0 / sfreq)
        df = sfreq / n_samples
        # One-sided PSD scaling (units²/Hz), times df to integrate over the band.
        scale = np.full(freqs.size, 2.0 / (sfreq * np.sum(self._taper**2)))
        scale[0] /= 2.0
        if n_samples % 2 == 0:
            scale[-1] /= 2.0
        weights = np.zeros((freqs.size, len(bands)))
        for j, (name, (low, high)) in enumerate(bands.items()):
            mask = (freqs >= low) & (freqs < high)
            if not mask.any():
                raise ConfigError(
                    f"Band {name} ({low:g}-{high:g} Hz) holds no frequency bin of a {n_samples / sfreq:g} s "
                    f"window (resolution {df:.3g} Hz); lengthen [signal] window to at least "
                    f"{2.0 / (high - low):.3g} s or widen the band."
                )
            weights[mask, j] = scale[mask] * df
        self._n_bins = int(np.flatnonzero(weights.any(axis=1)).max()) + 1
        self._weights = np.ascontiguousarray(weights[: self._n_bins])
        # FFT is linear: FFT((x - mean) * taper) = FFT(x * taper) - mean * FFT(taper), on the few bins used.
        self._taper_spec = np.fft.rfft(self._taper)[: self._n_bins]
        self._buf = np.empty((0, n_samples))

    def compute(self, data: np.ndarray) -> np.ndarray:
        """Band powers of ``data`` (n_channels, n_samples) → array (n_channels, n_bands)."""
        if self.step > 1:
            data = data[:, :: self.step]
        if self._buf.shape != data.shape:
            self._buf = np.empty(data.shape)
        x = np.multiply(data, self._taper, out=self._buf)
        spec = np.fft.rfft(x, axis=1)[:, : self._n_bins]
        spec -= data.mean(axis=1)[:, None] * self._taper_spec  # remove the mean (DC and its leakage)
        power = spec.real**2 + spec.imag**2
        return np.asarray(power @ self._weights)
