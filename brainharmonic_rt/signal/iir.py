"""IIR filters as second-order sections, designed and run with numpy alone.

Why not ``scipy.signal``: importing it costs ~0.7-1 s (its functions' docstrings are parsed at
import), more than a whole offline render of a 3-minute recording needs, and its ``sosfilt``
spends ~50 µs a call on argument handling, once per live chunk. The filters here are the
textbook ones (bilinear-transformed Butterworth band-pass, second-order notch); the tests compare
their responses (to 1e-9) and outputs (to 1e-11 of the input's scale) with ``scipy.signal``'s.

Running a cascade: the sections' states (transposed direct form II, as ``sosfilt`` keeps them)
and a block of L input samples map linearly to the L outputs and the new states, so a block is
one matrix product with a matrix built once per block length (:class:`SosFilter`).
"""

from __future__ import annotations

import numpy as np

#: Longest block run as one matrix product; longer chunks are cut into blocks of this length.
BLOCK = 64


def butter_bandpass(order: int, low: float, high: float, fs: float) -> np.ndarray:
    """Butterworth band-pass (``2 * order`` poles) between ``low`` and ``high`` Hz as (order, 6) sections.

    Each section holds one conjugate pole pair and the zeros at z = 1 and z = -1; the gain sits in the first.
    """
    # Analog prototype poles on the left unit half-circle, band edges pre-warped for the bilinear transform.
    proto = -np.exp(1j * np.pi * np.arange(-order + 1, order, 2) / (2 * order))
    w_low, w_high = (2.0 * fs * np.tan(np.pi * f / fs) for f in (low, high))
    bw, w0 = w_high - w_low, np.sqrt(w_low * w_high)
    # Low-pass → band-pass: s → (s² + w0²) / (bw s): every prototype pole gives two band-pass poles.
    half = proto * bw / 2.0
    root = np.sqrt(half**2 - w0**2)
    poles = np.concatenate([half + root, half - root])
    gain = bw**order
    # Bilinear transform: the `order` zeros at s = 0 go to z = 1, those at infinity to z = -1.
    zpoles = (2.0 * fs + poles) / (2.0 * fs - poles)
    gain *= float(np.real((2.0 * fs) ** order / np.prod(2.0 * fs - poles)))
    upper = zpoles[np.imag(zpoles) > 0]
    upper = upper[np.argsort(np.abs(upper))]  # poles nearest the unit circle last
    if upper.size != order:
        raise ValueError(f"band-pass {low:g}-{high:g} Hz at {fs:g} Hz has real poles; choose wider edges")
    sos = np.zeros((order, 6))
    sos[:, 0], sos[:, 2] = 1.0, -1.0
    sos[:, 3], sos[:, 4], sos[:, 5] = 1.0, -2.0 * upper.real, np.abs(upper) ** 2
    sos[0, :3] *= gain
    return sos


def notch(f0: float, q: float, fs: float) -> np.ndarray:
    """Second-order notch at ``f0`` Hz of width ``f0 / q`` (-3 dB points) as one (1, 6) section."""
    w0 = 2.0 * np.pi * f0 / fs
    beta = np.tan(w0 / q / 2.0)  # tan(bandwidth / 2), the -3 dB width in radians
    g = 1.0 / (1.0 + beta)
    return np.array([[g, -2.0 * g * np.cos(w0), g, 1.0, -2.0 * g * np.cos(w0), 2.0 * g - 1.0]])


def steady_state(sos: np.ndarray) -> np.ndarray:
    """(n_sections, 2) states of the cascade after a long constant input of 1 (what ``sosfilt_zi`` returns)."""
    zi = np.zeros((sos.shape[0], 2))
    level = 1.0  # the constant each section sees: the DC gain of the sections before it
    for k, (b0, b1, b2, _, a1, a2) in enumerate(sos):
        out = level * (b0 + b1 + b2) / (1.0 + a1 + a2)
        zi[k, 1] = b2 * level - a2 * out
        zi[k, 0] = b1 * level - a1 * out + zi[k, 1]
        level = out
    return zi


class SosFilter:
    """A cascade of second-order sections run block by block over many channels.

    ``apply(x, zi)`` is ``scipy.signal.sosfilt(sos, x, axis=-1, zi=zi)``: x of shape (n_channels, n)
    (or (n,) with zi (n_sections, 2)), zi of shape (n_sections, n_channels, 2); returns (y, zf).
    """

    def __init__(self, sos: np.ndarray) -> None:
        self.sos = np.asarray(sos, dtype=np.float64)
        self.n_sections = self.sos.shape[0]
        self._maps: dict[int, np.ndarray] = {}

    def _map(self, n: int) -> np.ndarray:
        """(n + S, n + S) matrix T with [y, z_end] = T @ [x, z_start] for a block of n samples (S states)."""
        t = self._maps.get(n)
        if t is not None:
            return t
        n_states = 2 * self.n_sections
        basis = np.eye(n + n_states)  # one probe per input sample and per initial state
        y = basis[:, :n].copy()
        z = basis[:, n:].reshape(-1, self.n_sections, 2).transpose(1, 0, 2).copy()
        for i in range(n):
            v = y[:, i]
            for k, (b0, b1, b2, _, a1, a2) in enumerate(self.sos):
                out = b0 * v + z[k, :, 0]
                z[k, :, 0] = b1 * v - a1 * out + z[k, :, 1]
                z[k, :, 1] = b2 * v - a2 * out
                v = out
            y[:, i] = v
        t = np.ascontiguousarray(np.concatenate([y, z.transpose(1, 0, 2).reshape(-1, n_states)], axis=1).T)
        self._maps[n] = t
        return t

    def apply(self, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        one = x.ndim == 1
        x2 = x[None, :] if one else x
        n_ch, n = x2.shape
        n_states = 2 * self.n_sections
        state = (zi[:, None, :] if one else zi).transpose(1, 0, 2).reshape(n_ch, n_states)
        y = np.empty((n_ch, n))
        start = 0
        while start < n:
            stop = min(start + BLOCK, n)
            t = self._map(stop - start)
            v = np.concatenate([x2[:, start:stop], state], axis=1) @ t.T
            y[:, start:stop] = v[:, : stop - start]
            state = v[:, stop - start :]
            start = stop
        zf = np.ascontiguousarray(state.reshape(n_ch, self.n_sections, 2).transpose(1, 0, 2))
        return (y[0], zf[:, 0, :]) if one else (y, zf)
