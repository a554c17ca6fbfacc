"""The small immutable records that flow between stages.

Each validates itself on construction so a malformed value fails where it is made,
not three stages later. Arrays are not copied (the producer hands ownership over);
treat them as read-only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class SignalInfo:
    """What a source delivers: fixed for the life of a connection.

    ``sfreq`` in Hz; ``ch_names`` one per channel; ``units`` a free text such as
    ``"V"`` or ``"uV"`` (only used for reporting).
    """

    name: str
    sfreq: float
    ch_names: tuple[str, ...]
    stype: str = "EEG"
    source_id: str = ""
    units: str = "V"

    def __post_init__(self) -> None:
        if not (self.sfreq > 0 and np.isfinite(self.sfreq)):
            raise ValueError(f"sfreq must be a positive number of Hz, got {self.sfreq!r}")
        if len(self.ch_names) == 0:
            raise ValueError(f"stream {self.name!r} has no channels")

    @property
    def n_channels(self) -> int:
        return len(self.ch_names)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A block of samples as received.

    data : array of shape (n_channels, n_samples), float64
    timestamps : array of shape (n_samples,), seconds on the source clock
        (LSL clock for live streams, seconds from file start for files).
    received : ``time.monotonic()`` when the chunk reached this process (live sources), or None
        (files). Unlike ``timestamps`` it is always on this machine's clock, so latency is measured from it.
    """

    data: np.ndarray
    timestamps: np.ndarray
    received: float | None = None

    def __post_init__(self) -> None:
        if self.data.ndim != 2:
            raise ValueError(f"Chunk.data must be 2-D (n_channels, n_samples), got shape {self.data.shape}")
        if self.timestamps.shape != (self.data.shape[1],):
            raise ValueError(f"Chunk.timestamps must have shape ({self.data.shape[1]},), got {self.timestamps.shape}")

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[1])


@dataclass(frozen=True, slots=True)
class ArtifactEvent:
    """A blink or a jaw clench, reported once, in the window whose newest hop holds its onset.

    kind : "blink" or "clench".
    t : session time (s) of the end of the hop in which it was first seen.
    channels : names of the channels it reached.
    strength : how far above its detection threshold it went (1.0 = at the threshold).
    """

    kind: str
    t: float
    channels: tuple[str, ...]
    strength: float


@dataclass(frozen=True, slots=True)
class ChannelQuality:
    """Contact quality of one channel over the last quality interval (see ``signal/quality.py``).

    line_noise : mains power (±1 Hz around 50 and 60 Hz) / power in 1-40 Hz (0 = none; > 1: mains dominates).
    range_uv : peak-to-peak amplitude of the raw signal in µV (None when the stream's units are unknown).
    verdict : "good", "noisy" (line noise or range above their limits) or the channel
        health verdict ("nan", "flat", "railing").
    """

    name: str
    line_noise: float
    range_uv: float | None
    verdict: str


@dataclass(frozen=True, slots=True)
class Window:
    """A preprocessed sliding window.

    data : array of shape (n_channels, n_samples), filtered and re-referenced.
    t_end : session time (s since the first sample) of the window's last sample.
    stamp : source-clock timestamp of the last sample.
    bad : indices of channels excluded from this window, with a reason each.
    received : ``time.monotonic()`` when the chunk holding the last sample arrived (None offline):
        processing latency is measured from here, never from the source's timestamps.
    artifacts : indices of channels touched by a blink or clench somewhere in this window, with the kind.
    events : artifacts whose onset lies in this window's newest hop (each reported once).
    quality : per-channel contact quality, on the windows that close a quality interval (else None).
    """

    index: int
    data: np.ndarray
    t_end: float
    stamp: float
    bad: tuple[tuple[int, str], ...] = ()
    received: float | None = None
    artifacts: tuple[tuple[int, str], ...] = ()
    events: tuple[ArtifactEvent, ...] = ()
    quality: tuple[ChannelQuality, ...] | None = None

    def __post_init__(self) -> None:
        if self.data.ndim != 2:
            raise ValueError(f"Window.data must be 2-D, got shape {self.data.shape}")


@dataclass(frozen=True, slots=True)
class GroupState:
    """Brain state of one channel group (one instrument).

    power : log10 band power per band name (raw, before normalisation).
    z : band powers normalised against the baseline (robust z-scores, clipped).
    n_good : channels of the group that were good in this window; 0 flags a group with no signal,
        whose ``power`` holds its last good value, ``z`` is 0 and ``latent`` is None.
    latent : learned latent for the group, when an encoder is loaded and a channel was good.
    held : the artifact kind ("blink", "clench") for which some of the group's channels hold their last
        clean band powers in this window (empty when every channel is fresh).

    Every number is finite (checked here): no NaN leaves the brain stage.
    """

    name: str
    power: dict[str, float]
    z: dict[str, float]
    n_good: int
    latent: np.ndarray | None = None
    held: str = ""

    def __post_init__(self) -> None:
        for what, values in (("power", self.power), ("z", self.z)):
            if not all(math.isfinite(v) for v in values.values()):
                raise ValueError(f"GroupState {self.name!r} has a non-finite {what}: {values}")
        if self.latent is not None and not np.isfinite(self.latent).all():
            raise ValueError(f"GroupState {self.name!r} has a non-finite latent")

    @property
    def ok(self) -> bool:
        """At least one good channel in this window (else the group carries no signal)."""
        return self.n_good > 0


@dataclass(frozen=True, slots=True)
class BrainState:
    """What the brain stage says about one window."""

    index: int
    t_end: float
    stamp: float
    groups: tuple[GroupState, ...]
    calibrating: bool
    bad: tuple[tuple[str, str], ...] = ()
    token: int | None = None
    latent: np.ndarray | None = None
    artifacts: tuple[tuple[str, str], ...] = ()  #: (channel, kind) touched by a blink or clench in this window
    events: tuple[ArtifactEvent, ...] = ()  #: artifacts first seen in this window (for musical gestures)

    def __post_init__(self) -> None:
        if self.latent is not None and not np.isfinite(self.latent).all():
            raise ValueError(f"BrainState {self.index} has a non-finite latent")

    def group(self, name: str) -> GroupState:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def signal_ok(self) -> bool:
        """Some group had a good channel: False when every channel is bad (flat, NaN, railing)."""
        return any(g.n_good > 0 for g in self.groups)

    @property
    def z_mean(self) -> dict[str, float]:
        """Band z-scores averaged over the groups that carry signal (the global state; 0 without any)."""
        if not self.groups:
            return {}
        keys = self.groups[0].z.keys()
        good = [g for g in self.groups if g.n_good > 0]
        if not good:
            return dict.fromkeys(keys, 0.0)
        return {k: float(np.mean([g.z[k] for g in good])) for k in keys}


@dataclass(frozen=True, slots=True)
class Note:
    """A note to play. ``time`` and ``duration`` in seconds of session (music) time."""

    time: float
    duration: float
    pitch: int
    velocity: int
    channel: int
    instrument: str = ""
    extra: dict[str, float] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.pitch <= 127:
            raise ValueError(f"Note.pitch must be 0..127, got {self.pitch}")
        if not 1 <= self.velocity <= 127:
            raise ValueError(f"Note.velocity must be 1..127, got {self.velocity}")
        if not 0 <= self.channel <= 15:
            raise ValueError(f"Note.channel must be 0..15, got {self.channel}")
        if not self.duration > 0:
            raise ValueError(f"Note.duration must be > 0 s, got {self.duration}")
        if not self.time >= 0:
            raise ValueError(f"Note.time must be >= 0 s, got {self.time}")
