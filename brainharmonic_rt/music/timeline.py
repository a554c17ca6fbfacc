"""Music time ↔ beats under tempo changes, shared by every composer and the MIDI clock.

A timeline is a short list of segments ``(t0, beat0, seconds per beat)``: beat ``b`` sounds at
``t0 + (b - beat0) · spb`` in the segment that holds it. A tempo change at ``at`` starts a new
segment there, so the beat phase continues (or jumps to a leader's numbering when ``beat`` is
given); segments older than the last few are never asked for again and are dropped.
"""

from __future__ import annotations

_EPS = 1e-9
_KEEP = 8


class Timeline:
    """Beat positions of music time (seconds) for one composer."""

    def __init__(self, tempo: float, origin: float = 0.0) -> None:
        self._segments: list[tuple[float, float, float]] = [(float(origin), 0.0, 60.0 / float(tempo))]

    def reset(self, origin: float, tempo: float | None = None) -> None:
        """Beat 0 at music time ``origin`` (the first composed span), at ``tempo`` (default: the current)."""
        self._segments = [(float(origin), 0.0, 60.0 / (self.tempo if tempo is None else float(tempo)))]

    @property
    def tempo(self) -> float:
        """BPM of the latest segment."""
        return 60.0 / self._segments[-1][2]

    @property
    def origin(self) -> float:
        return self._segments[0][0]

    def _segment(self, t: float) -> tuple[float, float, float]:
        for seg in reversed(self._segments):
            if t >= seg[0] - _EPS:
                return seg
        return self._segments[0]

    def beat_at(self, t: float) -> float:
        """Beat position (fractional) at music time ``t``."""
        t0, b0, spb = self._segment(t)
        return b0 + (t - t0) / spb

    def time_of_beat(self, beat: float) -> float:
        """Music time (s) of beat position ``beat``."""
        for t0, b0, spb in reversed(self._segments):
            if beat >= b0 - _EPS:
                return t0 + (beat - b0) * spb
        t0, b0, spb = self._segments[0]
        return t0 + (beat - b0) * spb

    def seconds_per_beat(self, t: float) -> float:
        """Length of a beat at music time ``t``."""
        return self._segment(t)[2]

    def retime(self, at: float, tempo: float, *, beat: float | None = None) -> None:
        """From music time ``at`` on, ``tempo`` BPM; the beat phase continues unless ``beat`` renumbers it."""
        if not 20.0 <= tempo <= 300.0:
            raise ValueError(f"tempo must be 20..300 BPM, got {tempo}")
        pos = self.beat_at(at) if beat is None else float(beat)
        self._segments = [seg for seg in self._segments if seg[0] < at - _EPS]
        self._segments.append((float(at), pos, 60.0 / float(tempo)))
        del self._segments[:-_KEEP]
