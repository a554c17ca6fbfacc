"""Signal shaping: channel groups, causal filters and re-reference, sliding windows.

:class:`SignalChain` glues the stages so a pipeline has one thing to feed::

    chain = SignalChain(info, settings.signal)
    for window in chain.push(chunk):  # raw chunk in, preprocessed windows (with bad channels) out
        ...
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import ArtifactSettings, QualitySettings, SignalSettings
from ..events import Chunk, SignalInfo, Window
from .channels import clean_name, group_channels, region_of
from .preprocess import ChannelHealth, Preprocessor
from .quality import WindowInspector, quality_record
from .windows import WindowBuffer

__all__ = [
    "ChannelHealth",
    "Preprocessor",
    "SignalChain",
    "WindowBuffer",
    "WindowInspector",
    "clean_name",
    "group_channels",
    "region_of",
]


class SignalChain:
    """Raw chunks → filtered, re-referenced windows whose ``bad`` field names unhealthy channels.

    The health verdict of each window (computed on its raw samples) also steers the
    average reference of the chunks that follow, so a bad channel stops leaking into the
    good ones within one hop.
    """

    def __init__(
        self,
        info: SignalInfo,
        signal: SignalSettings,
        quality: QualitySettings | None = None,
        artifacts: ArtifactSettings | None = None,
    ) -> None:
        self.info = info
        self.settings = signal
        self.preprocessor = Preprocessor(info, signal)
        n_window, n_hop = round(signal.window * info.sfreq), round(signal.hop * info.sfreq)
        self.inspector: WindowInspector | None = None
        if (quality is not None and quality.enabled) or (artifacts is not None and artifacts.enabled):
            self.inspector = WindowInspector(
                info,
                quality or QualitySettings(enabled=False),
                artifacts or ArtifactSettings(enabled=False),
                n_window,
                max(1, n_hop),
            )
        self.buffer = WindowBuffer(
            info.n_channels,
            info.sfreq,
            signal.window,
            signal.hop,
            health=self.preprocessor.health,
            inspector=self.inspector,
        )
        self.t0: float | None = None
        self.n_samples = 0
        self.n_windows = 0

    def push(self, chunk: Chunk) -> list[Window]:
        """Preprocess one chunk and return the windows it completes (often none).

        The first chunk's first timestamp becomes the session's ``t0``.
        """
        if chunk.n_samples == 0:
            return []
        if self.t0 is None:
            self.t0 = float(chunk.timestamps[0])
        raw = np.asarray(chunk.data, dtype=np.float64)
        filtered = self.preprocessor.process(raw)
        windows = self.buffer.push(filtered, chunk.timestamps, self.t0, raw=raw, received=chunk.received)
        self.n_samples += chunk.n_samples
        self.n_windows += len(windows)
        return windows

    def reset(self) -> None:
        """After a reconnect: drop buffered samples and filter state; keep ``t0`` (session time goes on)."""
        self.preprocessor.reset()
        self.buffer.reset()

    def stats(self) -> dict[str, Any]:
        """Counters and the current bad channels (by name), for telemetry."""
        out: dict[str, Any] = {
            "samples": self.n_samples,
            "windows": self.n_windows,
            "filters": list(self.preprocessor.filters),
            "bad": {self.info.ch_names[i]: reason for i, reason in self.preprocessor.health.bad},
        }
        insp = self.inspector
        if insp is not None and insp.quality is not None and insp.quality.latest:
            out["quality"] = {q.name: quality_record(q) for q in insp.quality.latest}
        if insp is not None and insp.artifacts is not None:
            out["artifacts"] = dict(insp.artifacts.counts)
        return out
