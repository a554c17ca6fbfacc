"""The ensemble model's time grid and vocabulary, shared by training (corpus, torch model) and the runtime.

A piece is a set of monophonic lines (voices) on a grid of eighth notes. At every grid step each
voice either starts a note (pitch and length are chosen at the onset) or does nothing (its note
keeps sounding until its length runs out, then it is silent). So at each step a voice emits one
*event*: :data:`NONE` or ``onset(pitch)`` — class ``1 + pitch - LOW_PITCH`` — and, at an onset, a
length class ``d - 1`` for ``d`` grid steps.

Pieces are transposed so that their key's pitch collection is C major / A minor; ``mode`` says
which of the two centres the piece has (0 major, 1 minor). The runtime transposes back (see
:func:`key_offset`).

Roles: the lowest line of a piece is the bass, the highest the melody, the lines between are
inner voices; keyboard middle lines (from the MIDI corpus) are texture.
"""

from __future__ import annotations

import numpy as np

STEPS_PER_BEAT = 2  #: eighth-note grid
LOW_PITCH = 24  #: lowest pitch the model plays (C1)
N_PITCH = 77  #: pitches LOW_PITCH .. LOW_PITCH + 76 (E7)
NONE = 0  #: event class "no onset at this step"
N_EVENT = 1 + N_PITCH
MAX_DUR = 16  #: longest note, in grid steps (8 beats)
N_POS = 16  #: position-in-bar classes (grid steps from the last downbeat, clipped)
ROLES = ("bass", "inner", "melody", "texture")
N_ROLES = len(ROLES)
MODES = ("major", "minor")
INTERVAL_RANGE = 36  #: the pair table covers intervals -36..+36 semitones (clipped beyond)
NO_PREVIOUS = 12  #: row of the motion table when a voice has no previous note
N_PROGRAMS = 129  #: GM 0..127, 128 = drums
#: runtime role → model role (a harmony pad is an inner voice; percussion rides on texture)
RUNTIME_ROLE = {"bass": "bass", "harmony": "inner", "melody": "melody", "texture": "texture", "percussion": "texture"}
#: major-like scales are conditioned on the major centre of their collection, the others on its minor
_MINOR_LIKE = {"minor", "dorian", "minor_pentatonic", "blues"}


def event_of(pitch: int) -> int:
    """Event class of an onset at ``pitch`` (must be in range)."""
    return 1 + int(pitch) - LOW_PITCH


def pitch_of(event: int) -> int:
    """Pitch of an onset event (event > 0)."""
    return LOW_PITCH + int(event) - 1


def register_features(low: float, high: float) -> np.ndarray:
    """The register conditioning (2,): low and high pitch, centred on middle C, in two-octave units."""
    return np.array([(low - 60.0) / 24.0, (high - 60.0) / 24.0], np.float32)


def key_offset(tonic_pc: int, scale: str) -> tuple[int, int]:
    """(semitones to add to the model's C-major/A-minor pitches, mode index) for a key and scale.

    Diatonic modes map their pitch collection onto C major's (D dorian: offset 0, the collection of
    C major), so every pitch the model plays is in the scale; other scales use their tonic
    (major-like on C, minor-like on A). Offsets are in -6..5 (the nearest transposition).
    """
    collection_root = {"major": 0, "minor": 3, "dorian": -2, "mixolydian": 5}.get(scale)
    mode = 1 if scale in _MINOR_LIKE else 0
    off = (tonic_pc + collection_root) % 12 if collection_root is not None else (tonic_pc - (9 if mode else 0)) % 12
    return (off - 12 if off > 5 else off), mode


def pair_bias(table: np.ndarray, role: int, others: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Sum over the known sounding pitches ``others`` (k,) of ``table[role, clip(p - q)]`` for every
    candidate pitch p: shape (N_PITCH,). ``table``: (N_ROLES, 2 · INTERVAL_RANGE + 1)."""
    acc = np.zeros(N_PITCH, np.float32) if out is None else out
    cand = np.arange(N_PITCH) + LOW_PITCH
    for q in others:
        idx = np.clip(cand - int(q), -INTERVAL_RANGE, INTERVAL_RANGE) + INTERVAL_RANGE
        acc += table[role, idx]
    return acc


def motion_bias(table: np.ndarray, own_prev: int | None, movers: list[tuple[int | None, int]]) -> np.ndarray:
    """The motion term over candidate pitches (N_PITCH,): for every voice that moved at this step,
    (its previous pitch, its new pitch), ``table[prev interval class, new interval class]``; zero for
    the candidate that repeats this voice's previous pitch (no motion). ``table``: (13, 12)."""
    acc = np.zeros(N_PITCH, np.float32)
    cand = np.arange(N_PITCH) + LOW_PITCH
    for prev, new in movers:
        row = NO_PREVIOUS if prev is None or own_prev is None else (own_prev - prev) % 12
        acc += table[row, (cand - new) % 12]
    if own_prev is not None and LOW_PITCH <= own_prev < LOW_PITCH + N_PITCH:
        acc[own_prev - LOW_PITCH] = 0.0
    return acc
