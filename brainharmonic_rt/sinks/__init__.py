"""Where notes go: a live MIDI port, a .mid file, a FluidSynth .wav (backends load lazily)."""

from __future__ import annotations

from .base import MemorySink, Sink, silence_messages

__all__ = ["MemorySink", "Sink", "silence_messages"]
