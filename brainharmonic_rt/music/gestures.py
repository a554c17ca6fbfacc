"""Blinks and jaw clenches as musical gestures (``[gestures]``, off by default).

The brain stage keeps artifacts out of the brain state; with gestures on they are heard instead, as
percussion on the GM drum channel, placed on the composer's grid so they fall in time:

* ``accent``: kick and snare together on the next sixteenth;
* ``cymbal``: a crash cymbal on the next sixteenth;
* ``fill``: four snare sixteenths rising to full velocity, from the next sixteenth on.

Gestures bypass the arbiter: drum hits have no pitch to clash and last a tenth of a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ..config import GestureSettings
from ..events import ArtifactEvent, Note
from .constants import CRASH, KICK, SNARE

HIT_S = 0.1  #: seconds each hit lasts
INSTRUMENT = "gestures"
#: gesture name → (sixteenth offset, drum, velocity fraction) hits
PATTERNS: dict[str, tuple[tuple[int, int, float], ...]] = {
    "accent": ((0, KICK, 1.0), (0, SNARE, 0.8)),
    "cymbal": ((0, CRASH, 1.0),),
    "fill": ((0, SNARE, 0.55), (1, SNARE, 0.7), (2, SNARE, 0.85), (3, SNARE, 1.0)),
    "none": (),
}


def gesture_notes(
    events: Sequence[ArtifactEvent],
    settings: GestureSettings,
    start: float,
    beat_at: Callable[[float], float],
    time_of_beat: Callable[[float], float],
) -> list[Note]:
    """Percussion notes for ``events``, from the first sixteenth at or after music time ``start``."""
    if not settings.enabled or not events:
        return []
    first = math.ceil(beat_at(start) * 4 - 1e-9) / 4
    out: list[Note] = []
    for event in events:
        pattern = PATTERNS[settings.blink if event.kind == "blink" else settings.clench]
        for step, drum, level in pattern:
            velocity = max(1, min(127, round(settings.velocity * level)))
            t = max(0.0, time_of_beat(first + step / 4))
            out.append(Note(t, HIT_S, drum, velocity, settings.channel, INSTRUMENT))
    return out
