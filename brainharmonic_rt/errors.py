"""One small exception tree; the CLI turns each into one clear line and an exit code.

Every message is a full sentence that names the thing (file, stream, field, port)
and says how to fix it.
"""

from __future__ import annotations


class BrainharmonicError(Exception):
    """Base of every error a person can act on."""

    exit_code = 1


class ConfigError(BrainharmonicError):
    """A setting is invalid (names the field, the value and the allowed range)."""

    exit_code = 2


class DataError(BrainharmonicError):
    """A recording or data file is missing, unreadable or malformed."""

    exit_code = 3


class StreamError(BrainharmonicError):
    """An LSL stream cannot be used (not found, wrong format, irregular rate, wrong shape)."""

    exit_code = 4


class StreamNotFoundError(StreamError):
    """No visible LSL stream matched the selector."""


class StreamLostError(StreamError):
    """A connected stream stopped delivering samples."""


class SinkError(BrainharmonicError):
    """A MIDI port, MIDI file or synth cannot be opened or written."""

    exit_code = 5


class ModelError(BrainharmonicError):
    """An ONNX model is missing or does not fit the stream."""

    exit_code = 6
