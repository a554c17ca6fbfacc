"""Where notes go: a live MIDI port, a .mid file, a FluidSynth .wav (backends load lazily)."""

from __future__ import annotations

from .base import SINK_KINDS, MemorySink, Sink, open_sink, silence_messages

__all__ = ["SINK_KINDS", "MemorySink", "Sink", "open_sink", "silence_messages"]
