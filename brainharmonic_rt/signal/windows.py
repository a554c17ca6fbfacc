"""Samples → sliding windows, from a preallocated ring (no ``np.roll`` per chunk).

Timing is exact in samples: with ``n_window = round(window * sfreq)`` and
``n_hop = round(hop * sfreq)``, windows end at sample ``n_window + k * n_hop`` (k = 0, 1, ...),
counting from the first sample pushed, however the samples are split into chunks.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError
from ..events import Window
from .preprocess import ChannelHealth
from .quality import WindowInspector


class WindowBuffer:
    """Ring buffer that emits a :class:`Window` every hop once the first window is full.

    With a ``health`` checker, :meth:`push` also keeps the raw samples (pass ``raw``) in
    a second ring and fills ``Window.bad`` from ``health.check`` on the raw window, so
    the verdict covers exactly the window's samples. With an ``inspector`` too, the newest hop of raw
    samples of each window goes to it (quality figures, artifacts: see ``quality.py``).
    """

    def __init__(
        self,
        n_channels: int,
        sfreq: float,
        window_s: float,
        hop_s: float,
        health: ChannelHealth | None = None,
        inspector: WindowInspector | None = None,
    ) -> None:
        self.n_channels = n_channels
        self.sfreq = sfreq
        self.n_window = round(window_s * sfreq)
        self.n_hop = round(hop_s * sfreq)
        if self.n_window < 2:
            raise ConfigError(
                f"[signal] window = {window_s:g} s holds {self.n_window} sample(s) at {sfreq:.4g} Hz; "
                f"set it to at least {2 / sfreq:.3g} s (several times that for useful band powers)."
            )
        if self.n_hop < 1 or self.n_hop > self.n_window:
            raise ConfigError(
                f"[signal] hop = {hop_s:g} s is {self.n_hop} sample(s) at {sfreq:.4g} Hz; set it between "
                f"{1 / sfreq:.3g} s and the window length ({window_s:g} s)."
            )
        self.health = health
        self.inspector = inspector
        self._ring = np.zeros((n_channels, self.n_window))
        self._raw: np.ndarray | None = None
        self._write = 0  # next ring column to write; the oldest sample once the ring is full
        self._until_emit = self.n_window
        self._index = 0

    def reset(self) -> None:
        """Forget buffered samples (after a reconnect); window indices keep counting up."""
        self._write = 0
        self._until_emit = self.n_window
        if self.health is not None:
            self.health.reset()
        if self.inspector is not None:
            self.inspector.reset()

    def push(
        self,
        data: np.ndarray,
        stamps: np.ndarray,
        t0: float,
        raw: np.ndarray | None = None,
        received: float | None = None,
    ) -> list[Window]:
        """Add a chunk; return the windows it completes (zero, one or several).

        data : array of shape (n_channels, n_samples), preprocessed samples.
        stamps : array of shape (n_samples,), source-clock seconds.
        t0 : source timestamp of the session's first sample (``Window.t_end = stamp - t0``).
        raw : array like ``data`` before preprocessing, for the health check (defaults to ``data``).
        received : when the chunk arrived (``time.monotonic()``), copied into the windows it completes.
        """
        if data.ndim != 2 or data.shape[0] != self.n_channels or stamps.shape != (data.shape[1],):
            raise DataError(
                f"Chunk of shape {data.shape} with {stamps.shape} timestamps does not fit a "
                f"{self.n_channels}-channel window buffer; the stream's channel count changed, so reconnect."
            )
        if self.health is not None:
            if raw is None:
                raw = data
            if self._raw is None:
                self._raw = np.zeros_like(self._ring)
        n = data.shape[1]
        windows: list[Window] = []
        pos = 0
        while pos < n:
            take = min(n - pos, self._until_emit)
            self._write_block(self._ring, data[:, pos : pos + take])
            if self.health is not None:
                assert raw is not None and self._raw is not None
                self._write_block(self._raw, raw[:, pos : pos + take])
            self._write = (self._write + take) % self.n_window
            pos += take
            self._until_emit -= take
            if self._until_emit == 0:
                windows.append(self._emit(float(stamps[pos - 1]), t0, received))
                self._until_emit = self.n_hop
        return windows

    def _write_block(self, ring: np.ndarray, block: np.ndarray) -> None:
        """Copy ``block`` (at most n_window samples) into ``ring`` at the write index, wrapping."""
        w, k = self._write, block.shape[1]
        first = min(k, self.n_window - w)
        ring[:, w : w + first] = block[:, :first]
        if first < k:
            ring[:, : k - first] = block[:, first:]

    def _emit(self, stamp: float, t0: float, received: float | None = None) -> Window:
        w = self._write
        data = np.empty_like(self._ring)  # fresh: consumers keep it
        data[:, : self.n_window - w] = self._ring[:, w:]
        data[:, self.n_window - w :] = self._ring[:, :w]
        bad: tuple[tuple[int, str], ...] = ()
        if self.health is not None and self._raw is not None:
            bad = self.health.check(self._raw)  # a permutation of the window: order is irrelevant
        if self.inspector is None:
            window = Window(index=self._index, data=data, t_end=stamp - t0, stamp=stamp, bad=bad, received=received)
        else:
            raw = self._raw if self._raw is not None else self._ring
            hop = self.inspector.n_hop
            newest = raw[:, w - hop : w] if w >= hop else np.concatenate((raw[:, w - hop :], raw[:, :w]), axis=1)
            touched, events, quality = self.inspector.inspect(newest, data, stamp - t0, bad)
            window = Window(
                index=self._index,
                data=data,
                t_end=stamp - t0,
                stamp=stamp,
                bad=bad,
                received=received,
                artifacts=touched,
                events=events,
                quality=quality,
            )
        self._index += 1
        return window
