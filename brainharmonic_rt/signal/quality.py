"""Per-channel signal quality, and the one look at each new hop that quality and artifacts share.

:class:`ChannelHealth` (``preprocess.py``) already judges every window's raw samples for non-finite,
flat and railing channels; that verdict is not recomputed here, it is carried into the quality report.
What this module adds, from the raw samples of the newest hop only (so a window costs a hop's worth of
work, not a window's; above 800 Hz only every k-th sample, at >= 400 Hz: the figures end at 100 Hz and
an amplifier's own anti-alias filter sits far above that):

* **line noise**: mains power (±1 bin around 50 and 60 Hz) over 1-40 Hz power: a loose or dry electrode
  picks up the mains long before its EEG looks wrong;
* **range**: peak-to-peak amplitude in µV (when the stream's units are known);

(Electrode impedance, where a board reports it, comes from the source: see ``BrainFlowSource.stats``.)

Figures are accumulated over ``[quality] interval`` seconds and reported once per interval; a channel is
``"noisy"`` above ``line_noise_max`` or ``range_max_uv``, else ``"good"``, unless its health verdict
(``nan``/``flat``/``railing``) says worse. The same hop spectrum measures muscle (EMG) power for the
clench detector in ``artifacts.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..config import ArtifactSettings, QualitySettings
from ..events import ArtifactEvent, ChannelQuality, SignalInfo
from .artifacts import MAINS, ArtifactDetector, emg_bins

#: µV per unit of the stream's ``units`` text.
_MICROVOLTS = {"V": 1e6, "mV": 1e3, "uV": 1.0, "µV": 1.0, "μV": 1.0, "nV": 1e-3}
#: Peak-to-peak ranges beyond this (µV) mean the units are not what the stream says.
IMPLAUSIBLE_UV = 1e6
EEG_BAND = (1.0, 40.0)
SPECTRUM_RATE = 400.0  #: Hz: raw hops at higher rates are looked at every k-th sample (EMG ends at 100 Hz)


def microvolts_per_unit(units: str) -> float | None:
    """µV per unit of ``units`` ("V", "mV", "uV", "nV", also "microvolts" etc.), None when unknown."""
    words = {"volts": "V", "millivolts": "mV", "microvolts": "uV", "nanovolts": "nV"}
    u = units.strip()
    return _MICROVOLTS.get(words.get(u.lower(), u))


class HopSpectrum:
    """Band powers of the newest hop of raw samples: linear trend removed, Hann taper, one real FFT.

    ``bands(x)`` → array (n_channels, 3): EMG power (see :func:`~.artifacts.emg_bins`), mains power,
    and 1-40 Hz power, in units² (only ratios of them are used).
    """

    def __init__(self, sfreq: float, n: int) -> None:
        self.n = n
        t = np.arange(n, dtype=np.float64)
        self._tc = t - t.mean()  # orthogonal to a constant: mean and slope fit independently
        self._tcc = float(self._tc @ self._tc) or 1.0
        self._taper = np.hanning(n) if n > 2 else np.ones(n)
        freqs = np.fft.rfftfreq(n, 1.0 / sfreq)
        df = freqs[1] - freqs[0] if freqs.size > 1 else sfreq
        mains = np.zeros(freqs.size, dtype=bool)
        for f0 in MAINS:
            if f0 < sfreq / 2:
                mains |= np.abs(freqs - f0) <= df
        eeg = (freqs >= max(EEG_BAND[0], df)) & (freqs <= min(EEG_BAND[1], 0.45 * sfreq))
        self._weights = np.stack([emg_bins(freqs, sfreq), mains, eeg], axis=1).astype(np.float64)

    def bands(self, x: np.ndarray) -> np.ndarray:
        """x : array (n_channels, n) of finite raw samples, time-ordered."""
        slope = (x @ self._tc) / self._tcc
        detrended = x - x.mean(axis=1, keepdims=True) - slope[:, None] * self._tc
        spec = np.fft.rfft(detrended * self._taper, axis=1)
        power = spec.real**2 + spec.imag**2
        return np.asarray(power @ self._weights)


class QualityMonitor:
    """Accumulates hop figures per channel and reports :class:`ChannelQuality` once per interval."""

    def __init__(self, info: SignalInfo, settings: QualitySettings, hops_per_report: int) -> None:
        self.info = info
        self.settings = settings
        self.hops_per_report = max(1, hops_per_report)
        self._uv = microvolts_per_unit(info.units)
        n = info.n_channels
        self._mains = np.zeros(n)
        self._eeg = np.zeros(n)
        self._range = np.zeros(n)
        self._hops = 0
        self.latest: tuple[ChannelQuality, ...] = ()

    def reset(self) -> None:
        self._mains[:] = 0.0
        self._eeg[:] = 0.0
        self._range[:] = 0.0
        self._hops = 0

    def add(self, bands: np.ndarray, ptp: np.ndarray, bad: Mapping[int, str]) -> tuple[ChannelQuality, ...] | None:
        """One hop's band powers (as :meth:`HopSpectrum.bands`) and peak-to-peak; a report every interval."""
        self._mains += bands[:, 1]
        self._eeg += bands[:, 2]
        np.maximum(self._range, ptp, out=self._range)
        self._hops += 1
        if self._hops < self.hops_per_report:
            return None
        report = self._report(bad)
        self.reset()
        self.latest = report
        return report

    def _report(self, bad: Mapping[int, str]) -> tuple[ChannelQuality, ...]:
        s = self.settings
        with np.errstate(divide="ignore", invalid="ignore"):
            line = np.where(self._eeg > 0, self._mains / self._eeg, 0.0)
        line = np.nan_to_num(line, nan=0.0, posinf=0.0)
        rng: np.ndarray | None = None
        if self._uv is not None:
            rng = np.nan_to_num(self._range * self._uv, nan=0.0)
            if float(np.median(rng)) > IMPLAUSIBLE_UV:  # e.g. an LSL stream in µV without unit metadata
                rng = None
        out = []
        for i, name in enumerate(self.info.ch_names):
            r = None if rng is None else round(float(rng[i]), 2)
            verdict = bad.get(i)
            if verdict is None:
                noisy = line[i] > s.line_noise_max or (r is not None and r > s.range_max_uv)
                verdict = "noisy" if noisy else "good"
            out.append(ChannelQuality(name, round(float(line[i]), 4), r, verdict))
        return tuple(out)


class WindowInspector:
    """Looks at the newest hop of every window once: quality figures and artifact detection.

    Called by :class:`~.windows.WindowBuffer` as each window is emitted. Either part may be off
    (``[quality] enabled``, ``[artifacts] enabled``).
    """

    def __init__(
        self,
        info: SignalInfo,
        quality: QualitySettings,
        artifacts: ArtifactSettings,
        n_window: int,
        n_hop: int,
    ) -> None:
        self.info = info
        self.n_hop = n_hop
        self._step = max(1, int(info.sfreq // SPECTRUM_RATE))
        self.spectrum = HopSpectrum(info.sfreq / self._step, -(-n_hop // self._step))
        hops = max(1, -(-n_window // n_hop))
        self.quality = (
            QualityMonitor(info, quality, round(quality.interval * info.sfreq / n_hop)) if quality.enabled else None
        )
        self.artifacts = ArtifactDetector(info, artifacts, n_hop, hops) if artifacts.enabled else None
        self._bad = np.zeros(info.n_channels, dtype=bool)

    @property
    def tail(self) -> int:
        """Filtered samples wanted at the end of each window (the blink detector's reach)."""
        return self.artifacts.tail if self.artifacts is not None else 0

    def reset(self) -> None:
        if self.quality is not None:
            self.quality.reset()
        if self.artifacts is not None:
            self.artifacts.reset()

    def inspect(
        self,
        raw_hop: np.ndarray,
        filtered: np.ndarray,
        t_end: float,
        bad: tuple[tuple[int, str], ...],
    ) -> tuple[tuple[tuple[int, str], ...], tuple[ArtifactEvent, ...], tuple[ChannelQuality, ...] | None]:
        """(touched channels of the window, new artifact events, quality report or None).

        raw_hop : array (n_channels, n_hop), the newest raw samples, time-ordered.
        filtered : array (n_channels, n) with n >= :attr:`tail`: the window's band-passed samples.
        """
        bad_map = dict(bad)
        mask = self._bad
        mask[:] = False
        if bad_map:
            mask[list(bad_map)] = True
        x = raw_hop
        if bad_map:  # non-finite samples only ever sit in bad channels: zero them for the FFT
            x = np.where(np.isfinite(raw_hop), raw_hop, 0.0)
        bands = self.spectrum.bands(x[:, :: self._step] if self._step > 1 else x)
        report = None
        if self.quality is not None:
            report = self.quality.add(bands, x.max(axis=1) - x.min(axis=1), bad_map)
        if self.artifacts is None:
            return (), (), report
        tail = filtered[:, -min(self.artifacts.tail, filtered.shape[1]) :]
        if bad_map:
            tail = np.where(np.isfinite(tail), tail, 0.0)
        verdict = self.artifacts.update(self.artifacts.swing(tail), bands[:, 0], t_end, mask)
        return self.artifacts.window(), verdict.onsets, report


def quality_record(q: ChannelQuality) -> dict[str, float | str | None]:
    """One channel's quality as a JSON-ready dict (telemetry, quality.jsonl)."""
    return {"line_noise": q.line_noise, "range_uv": q.range_uv, "verdict": q.verdict}
