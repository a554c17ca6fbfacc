"""Eye blinks and jaw clenches, detected hop by hop, so the brain stage can keep them out of its state.

Why hop by hop: a window (2 s) overlaps the previous one by all but one hop (0.25 s), so looking only at
the newest hop costs a fraction of a window and sees every sample once. A window counts as touched by an
artifact when any of the hops it spans held one.

* **Blink**: a large slow deflection at the front of the head. On the band-passed signal of the most
  anterior channels (Fp/AF, else F row), smoothed by a 100 ms moving average (which removes alpha and
  faster rhythms but keeps a 200-400 ms blink), the hop's largest excursion must exceed
  ``blink_threshold`` × that channel's typical hop excursion (median over ``history`` seconds of clean
  hops), and be ``blink_ratio`` × larger than at the back of the head (blinks fade within centimetres of
  the eyes; movement and drifts do not). Every frontal channel counts as touched.
* **Clench**: a burst of muscle activity (20-100 Hz, mains bands left out) at the temples. The raw hop's
  power there must exceed ``clench_threshold`` × the channel's typical power on a temporal channel, and
  be larger on the temporal channels than on central/parietal/occipital ones. Channels with at least half
  the threshold count as touched, and the temporal ones always do.

Once found, an artifact goes on while its measure stays above half the threshold, and touches the
channels for ``LINGER_S`` more (the band-pass filter rings after a blink); it is reported once, when it
starts. Thresholds are relative to each channel's own history, so they work in any unit and any headset; the
first ``MIN_HISTORY`` hops only learn. Without frontal channels no blink is looked for; without temporal
channels every grouped channel is checked for a clench (no dominance test).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from ..config import ArtifactSettings
from ..events import ArtifactEvent, SignalInfo
from .channels import clean_name, region_of

MIN_HISTORY = 8  #: hops of clean history before anything is detected
SMOOTH_S = 0.1  #: moving-average length for the blink signal (null at 10 Hz: alpha goes, blinks stay)
SWING_RATE = 200.0  #: Hz the blink signal is looked at (decimated from the band-passed samples)
EMG_BAND = (20.0, 100.0)  #: Hz; capped at 0.45 × the sampling rate
MAINS = (50.0, 60.0)
LINGER_S = 0.5  #: s an artifact keeps touching its channels after its measure fell back
_EYE_ROWS = ("Fp", "AFp", "AF")


@dataclass(frozen=True, slots=True)
class HopVerdict:
    """What one hop held: touched channels (index → kind) and the artifacts that started in it."""

    touched: dict[int, str]
    onsets: tuple[ArtifactEvent, ...]


def emg_bins(freqs: np.ndarray, sfreq: float) -> np.ndarray:
    """Mask of the frequency bins that measure muscle activity: 20-100 Hz without the mains and their
    first harmonics (± two bins, so a Hann-tapered mains line stays out)."""
    df = freqs[1] - freqs[0] if freqs.size > 1 else sfreq
    mask = (freqs >= EMG_BAND[0]) & (freqs <= min(EMG_BAND[1], 0.45 * sfreq))
    for f0 in (*MAINS, *(2 * f for f in MAINS)):
        mask &= np.abs(freqs - f0) > 2 * df
    return mask


class _History:
    """Typical value per channel: the median of its last ``n`` clean hops (NaN until MIN_HISTORY of them),
    refreshed every fourth hop.

    Each channel keeps only its clean values (its own write position), so once every ring is full the
    median is one ``np.partition`` (tens of µs for 64 channels).
    """

    def __init__(self, n_channels: int, n: int) -> None:
        self.n = max(n, MIN_HISTORY)
        self._ring = np.full((self.n, n_channels), np.nan)
        self._written = np.zeros(n_channels, dtype=np.int64)
        self._calls = 0
        self.typical = np.full(n_channels, np.nan)

    def add(self, values: np.ndarray, clean: np.ndarray) -> None:
        cols = np.flatnonzero(clean)
        self._ring[self._written[cols] % self.n, cols] = values[cols]
        self._written[cols] += 1
        self._calls += 1
        if self._calls % 4:  # a 20 s median moves little in a hop: refresh it every fourth
            return
        full = self._written >= self.n
        if full.all():
            self.typical = np.partition(self._ring, self.n // 2, axis=0)[self.n // 2]
            return
        if full.any():
            self.typical[full] = np.partition(self._ring[:, full], self.n // 2, axis=0)[self.n // 2]
        filling = (self._written >= MIN_HISTORY) & ~full
        if filling.any():
            self.typical[filling] = np.nanmedian(self._ring[:, filling], axis=0)  # warm-up only


class ArtifactDetector:
    """Blink and clench detection for one stream (see the module notes).

    Feed it every hop with :meth:`update`; :meth:`window` then says which channels the hops of the
    current window touched.
    """

    def __init__(self, info: SignalInfo, settings: ArtifactSettings, n_hop: int, hops_per_window: int) -> None:
        self.info = info
        self.settings = settings
        self.n_hop = n_hop
        regions = [region_of(n) for n in info.ch_names]
        frontal = [i for i, r in enumerate(regions) if r == "frontal"]
        eye = [i for i in frontal if any(clean_name(info.ch_names[i]).startswith(r) for r in _EYE_ROWS)]
        self.eye = np.asarray(eye or frontal, dtype=np.intp)
        self.frontal = np.asarray(frontal, dtype=np.intp)
        self.back = np.asarray(
            [i for i, r in enumerate(regions) if r in ("central", "parietal", "occipital")], dtype=np.intp
        )
        temporal = [i for i, r in enumerate(regions) if r == "temporal"]
        grouped = [i for i, r in enumerate(regions) if r is not None] or list(range(info.n_channels))
        self.temporal = np.asarray(temporal or grouped, dtype=np.intp)
        self._dominance = bool(temporal) and self.back.size > 0
        self._smooth = max(1, round(SMOOTH_S * info.sfreq))
        self._step = max(1, int(info.sfreq // SWING_RATE))
        n_hist = max(MIN_HISTORY, round(settings.history * info.sfreq / n_hop))
        self._swing = _History(info.n_channels, n_hist)
        self._emg = _History(info.n_channels, n_hist)
        self._hops: collections.deque[dict[int, str]] = collections.deque(maxlen=max(1, hops_per_window))
        self._active: dict[str, int] = {}  # kind → hops left to linger
        self._linger = max(1, round(LINGER_S * info.sfreq / n_hop))
        self._last_touch: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {"blink": 0, "clench": 0}

    def reset(self) -> None:
        """After a reconnect: forget the hops of the current window (the typical levels stay)."""
        self._hops.clear()
        self._active.clear()
        self._last_touch.clear()

    def swing(self, filtered_tail: np.ndarray) -> np.ndarray:
        """Largest excursion per channel of the 100 ms moving average over the newest hop.

        filtered_tail : array (n_channels, n_hop + smoothing - 1) of band-passed samples, time-ordered.
        Every ``_step``-th sample is enough (the band-pass ends at 40 Hz; the average keeps < 10 Hz).
        """
        x = filtered_tail[:, ::-1][:, :: self._step][:, ::-1]  # aligned on the newest sample
        k = min(max(1, self._smooth // self._step), x.shape[1])
        x = x - x.mean(axis=1, keepdims=True)
        c = np.cumsum(x, axis=1)
        avg = (c[:, k - 1 :] - np.concatenate((np.zeros((x.shape[0], 1)), c[:, :-k]), axis=1)) / k
        return np.asarray(np.abs(avg).max(axis=1))

    @property
    def tail(self) -> int:
        """Filtered samples :meth:`update` needs: the newest hop plus the moving average's reach back."""
        return self.n_hop + self._smooth - 1

    def update(self, swing: np.ndarray, emg: np.ndarray, t_end: float, bad: np.ndarray) -> HopVerdict:
        """Judge the newest hop from its per-channel blink swing and EMG power; ``bad`` masks unhealthy
        channels (never judged, never learned from)."""
        touched: dict[int, str] = {}
        onsets: list[ArtifactEvent] = []
        blink = self._blink(swing, bad, "blink" in self._active)
        clench = self._clench(emg, bad, "clench" in self._active)
        found = {"blink": blink, "clench": clench}
        for kind, hit in found.items():
            if hit is None:
                left = self._active.get(kind, 0) - 1
                if left > 0:
                    self._active[kind] = left
                    touched.update((int(i), kind) for i in self._last_touch[kind])
                else:
                    self._active.pop(kind, None)
                continue
            strength, channels = hit
            touched.update((int(i), kind) for i in channels)
            if kind not in self._active:
                names = tuple(self.info.ch_names[i] for i in channels)
                onsets.append(ArtifactEvent(kind, t_end, names, strength))
                self.counts[kind] += 1
            self._active[kind] = self._linger + 1
            self._last_touch[kind] = channels
        clean = ~bad
        if touched:
            clean = clean.copy()
            clean[list(touched)] = False
        self._swing.add(swing, clean)
        self._emg.add(emg, clean)
        self._hops.append(touched)
        return HopVerdict(touched, tuple(onsets))

    def window(self) -> tuple[tuple[int, str], ...]:
        """(channel, kind) touched by any hop of the current window, in channel order."""
        merged: dict[int, str] = {}
        for hop in self._hops:
            merged.update(hop)
        return tuple(sorted(merged.items()))

    # -- the two detectors -------------------------------------------------------------------------

    def _blink(self, swing: np.ndarray, bad: np.ndarray, going: bool) -> tuple[float, np.ndarray] | None:
        """(strength, touched channels) when this hop holds a blink; ``going``: one is under way."""
        eye = self.eye[~bad[self.eye]] if self.eye.size else self.eye
        if eye.size == 0:
            return None
        typical = self._swing.typical[eye]
        if not np.isfinite(typical).all() or not (typical > 0).all():
            return None
        threshold = self.settings.blink_threshold / (2.0 if going else 1.0)
        ratio = float(np.median(swing[eye] / typical))
        if ratio < threshold:
            return None
        back = self.back[~bad[self.back]] if self.back.size else self.back
        if back.size and float(np.mean(swing[eye])) < self.settings.blink_ratio * float(np.median(swing[back])):
            return None
        return ratio / self.settings.blink_threshold, self.frontal

    def _clench(self, emg: np.ndarray, bad: np.ndarray, going: bool) -> tuple[float, np.ndarray] | None:
        """(strength, touched channels) when this hop holds a clench; ``going``: one is under way."""
        typical = self._emg.typical
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where((typical > 0) & ~bad, emg / typical, 0.0)
        ratio = np.nan_to_num(ratio, nan=0.0)
        temporal = self.temporal[~bad[self.temporal]]
        if temporal.size == 0:
            return None
        threshold = self.settings.clench_threshold / (2.0 if going else 1.0)
        peak = float(ratio[temporal].max())
        if peak < threshold:
            return None
        if self._dominance:
            back = self.back[~bad[self.back]]
            if back.size and peak < float(ratio[back].max()):
                return None
        channels = np.union1d(temporal, np.flatnonzero(ratio >= self.settings.clench_threshold / 2))
        return peak / self.settings.clench_threshold, channels
