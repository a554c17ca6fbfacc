"""The classic mode's brain: band powers per channel group, normalised against a baseline."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import BandSettings, SignalSettings
from ..events import BrainState, GroupState, SignalInfo, Window
from ..signal.channels import group_channels
from .bandpower import BandPower, check_bands, decimation_step
from .hold import ArtifactHold
from .normalize import BaselineNormalizer

POWER_FLOOR = 1e-30  # log10 of an all-zero channel would be -inf


class ClassicBrain:
    """Window → :class:`BrainState` with, per group, log10 band power and robust z-scores.

    A group's power is the mean (linear) band power over its good channels; a group with
    no good channel reports ``n_good == 0``, z 0 and its last good power (0 before it had one),
    so every number in a state is finite (see :class:`~brainharmonic_rt.events.GroupState`).
    Raises :class:`ConfigError` at construction when a band does not fit the stream's rate.
    """

    def __init__(self, info: SignalInfo, signal: SignalSettings, bands: BandSettings) -> None:
        self.info = info
        self.bands = bands.as_dict()
        self.band_names = tuple(self.bands)
        check_bands(self.bands, info.sfreq)
        self.groups: dict[str, tuple[int, ...]] = group_channels(info.ch_names, signal.groups, signal.fallback_groups)
        used = sorted({i for idx in self.groups.values() for i in idx})
        self._used = np.asarray(used, dtype=np.intp)
        self._pos = {ch: k for k, ch in enumerate(used)}  # channel index → row in the power matrix
        self._group_rows = [np.asarray([self._pos[i] for i in idx], dtype=np.intp) for idx in self.groups.values()]
        n_window = round(signal.window * info.sfreq)
        self._step = decimation_step(info.sfreq, signal.bandpass, self.bands)
        self._bandpower: dict[int, BandPower] = {n_window: BandPower(info.sfreq, n_window, self.bands, step=self._step)}
        self.normalizer = BaselineNormalizer(signal.baseline, signal.adapt, signal.z_clip)
        self._last_power = np.zeros((len(self.groups), len(self.band_names)))  # last good log power per group
        self.hold = ArtifactHold(len(used), len(self.band_names))
        self._last_bad: tuple[tuple[str, str], ...] = ()
        self.n_windows = 0

    def process(self, window: Window) -> BrainState:
        """Band powers and z-scores of one preprocessed window (channels in ``window.bad`` excluded)."""
        n_samples = window.data.shape[1]
        bp = self._bandpower.get(n_samples)
        if bp is None:
            bp = self._bandpower[n_samples] = BandPower(self.info.sfreq, n_samples, self.bands, step=self._step)
        if 2 * len(self._used) >= window.data.shape[0]:  # cheaper to transform all than to copy most
            power = bp.compute(window.data)[self._used]  # (n_used, n_bands)
        else:
            power = bp.compute(window.data[self._used])
        good = np.isfinite(power).all(axis=1)  # absurd amplitudes overflow: such a channel carries no signal
        for ch, _reason in window.bad:
            row = self._pos.get(ch)
            if row is not None:
                good[row] = False
        touched = {self._pos[ch]: kind for ch, kind in window.artifacts if ch in self._pos}
        held = self.hold.apply(power, good, touched)
        n_groups, n_bands = len(self._group_rows), len(self.band_names)
        logp = np.full((n_groups, n_bands), np.nan)
        n_good = np.zeros(n_groups, dtype=int)
        for g, rows in enumerate(self._group_rows):
            ok = rows[good[rows]]
            n_good[g] = ok.size
            if ok.size:
                logp[g] = np.log10(np.maximum(power[ok].mean(axis=0), POWER_FLOOR))
        calibrating = self.normalizer.calibrating
        z = self.normalizer.update(window.t_end, logp.ravel()).reshape(n_groups, n_bands)
        ok = n_good > 0
        self._last_power[ok] = logp[ok]  # a group without signal reports its last good power (n_good 0 flags it)
        logp = self._last_power
        groups = tuple(
            GroupState(
                name=name,
                power=dict(zip(self.band_names, map(float, logp[g]), strict=True)),
                z=dict(zip(self.band_names, map(float, z[g]), strict=True)),
                n_good=int(n_good[g]),
                held=self.hold.group_kind(held, self._group_rows[g]),
            )
            for g, name in enumerate(self.groups)
        )
        self._last_bad = tuple((self.info.ch_names[ch], reason) for ch, reason in window.bad)
        self.n_windows += 1
        return BrainState(
            index=window.index,
            t_end=window.t_end,
            stamp=window.stamp,
            groups=groups,
            calibrating=calibrating,
            bad=self._last_bad,
            artifacts=tuple((self.info.ch_names[ch], kind) for ch, kind in window.artifacts),
            events=window.events,
        )

    def stats(self) -> dict[str, Any]:
        """Baseline progress, groups and the latest bad channels, for telemetry."""
        return {
            "windows": self.n_windows,
            "baseline": self.normalizer.stats(),
            "groups": {name: [self.info.ch_names[i] for i in idx] for name, idx in self.groups.items()},
            "bad": dict(self._last_bad),
            "held": self.hold.held,
        }
