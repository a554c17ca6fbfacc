"""Keys, scales and the pitch quantiser.

Every pitch the classic composer plays goes through :func:`quantize` onto the
array returned by :func:`scale_pitches`, so notes are always in key and in register.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

#: Scale intervals in semitones above the tonic; names as in ``MusicSettings.scale``.
SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "pentatonic": (0, 2, 4, 7, 9),
    "minor_pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
}

#: Pitch class of each key name (sharps and flats).
KEYS: dict[str, int] = {
    "C": 0,
    "C#": 1,
    "Db": 1,
    "D": 2,
    "D#": 3,
    "Eb": 3,
    "E": 4,
    "F": 5,
    "F#": 6,
    "Gb": 6,
    "G": 7,
    "G#": 8,
    "Ab": 8,
    "A": 9,
    "A#": 10,
    "Bb": 10,
    "B": 11,
}


def pitch_classes(key: str, scale: str) -> tuple[int, ...]:
    """Pitch classes (0 = C) of ``key`` ``scale``, tonic first."""
    if key not in KEYS:
        raise ConfigError(f"Unknown key {key!r}; use one of {', '.join(KEYS)}.")
    if scale not in SCALES:
        raise ConfigError(f"Unknown scale {scale!r}; use one of {', '.join(SCALES)}.")
    root = KEYS[key]
    return tuple((root + step) % 12 for step in SCALES[scale])


def scale_pitches(key: str, scale: str, low: int, high: int) -> np.ndarray:
    """MIDI pitches of ``key`` ``scale`` within ``[low, high]``.

    Returns
    -------
    pitches : array of shape (n,), int64, ascending.

    Raises :class:`ConfigError` when the register holds no note of the scale.
    """
    classes = set(pitch_classes(key, scale))
    lo, hi = max(0, int(low)), min(127, int(high))
    pitches = np.array([p for p in range(lo, hi + 1) if p % 12 in classes], dtype=np.int64)
    if pitches.size == 0:
        raise ConfigError(
            f"The register {low}..{high} holds no note of {key} {scale}; widen the instrument's low/high."
        )
    return pitches


def quantize(pitch: float, allowed: np.ndarray) -> int:
    """The allowed pitch nearest to ``pitch`` (ties go down); out-of-range pitches clamp to the ends.

    ``allowed`` : array of shape (n,), ascending, as from :func:`scale_pitches`.
    """
    if allowed.size == 0:
        raise ValueError("quantize needs at least one allowed pitch")
    if not np.isfinite(pitch):
        raise ValueError(f"quantize needs a finite pitch, got {pitch!r}")
    i = int(np.searchsorted(allowed, pitch))
    if i <= 0:
        return int(allowed[0])
    if i >= allowed.size:
        return int(allowed[-1])
    below, above = allowed[i - 1], allowed[i]
    return int(below if pitch - below <= above - pitch else above)
