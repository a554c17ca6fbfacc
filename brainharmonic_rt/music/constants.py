"""Constants of the music every room shares, defined once: the bar, the GM drum map, the forbidding logit."""

from __future__ import annotations

BEATS_PER_BAR = 4  #: the music is in 4/4: bars, the plan, the MIDI clock's Start and sync all count in these
DRUM_CHANNEL = 9  #: General MIDI percussion channel (0-based; "channel 10" to people)
KICK, SNARE, HAT, CRASH = 36, 38, 42, 49  #: General MIDI drum notes
FORBID = -1e9  #: a logit bias that makes a token impossible (added, never multiplied)
