"""Offline audio: FluidSynth renders notes (or a session's messages) to a 16-bit stereo WAV.

The synth runs without an audio driver: samples are pulled with ``get_samples``
between event times, so rendering is exact to the sample and as fast as the CPU allows.
"""

from __future__ import annotations

import os
import threading
import wave
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mido
import numpy as np

from ..config import DEFAULT_SOUNDFONT, InstrumentSettings
from ..errors import SinkError
from ..events import Note
from ..music.constants import DRUM_CHANNEL
from .base import program_changes
from .midifile import _check_writable

_BLOCK = 65_536  # frames per get_samples call
_DRUM_BANK = 128


def _fluidsynth() -> Any:
    try:
        import fluidsynth
    except (ImportError, OSError) as exc:
        raise SinkError(
            f"The FluidSynth library cannot be loaded ({exc}); install it with `apt install fluidsynth` "
            "(or `brew install fluid-synth`)."
        ) from None
    return fluidsynth


def check_soundfont(soundfont: str | os.PathLike[str]) -> Path:
    """The SoundFont path, or :class:`SinkError` saying how to get one."""
    sf = Path(soundfont)
    if not sf.is_file():
        raise SinkError(
            f"SoundFont {sf} does not exist; install one with `apt install timgm6mb-soundfont` "
            "or pass --soundfont PATH to a General MIDI .sf2."
        )
    return sf


def render_events(
    events: Sequence[tuple[float, mido.Message]],
    path: str | os.PathLike[str],
    *,
    soundfont: str | os.PathLike[str] = DEFAULT_SOUNDFONT,
    sample_rate: int = 44100,
    tail: float = 1.5,
    gain: float = 0.4,
) -> Path:
    """Render timed messages (music seconds, in order) to a WAV; returns its path.

    ``tail`` seconds are rendered after the last event so releases and reverb ring out.
    """
    out = Path(path)
    sf = check_soundfont(soundfont)
    _check_writable(out, "WAV file")
    fs = _fluidsynth()
    synth = fs.Synth(gain=gain, samplerate=float(sample_rate))
    try:
        sfid = synth.sfload(str(sf))
        if sfid < 0:
            raise SinkError(f"SoundFont {sf} cannot be loaded by FluidSynth; is it a valid .sf2 file?")
        for ch in range(16):  # GM defaults until a program change says otherwise
            synth.program_select(ch, sfid, _DRUM_BANK if ch == DRUM_CHANNEL else 0, 0)
        blocks: list[np.ndarray] = []
        cursor = 0
        for t, msg in sorted(events, key=lambda e: e[0]):  # stable: equal times keep their order
            target = round(max(0.0, t) * sample_rate)
            cursor = _pull(synth, blocks, cursor, target)
            _apply(synth, sfid, msg)
        _pull(synth, blocks, cursor, cursor + round(tail * sample_rate))
    finally:
        synth.delete()
    audio = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int16)
    try:
        with wave.open(str(out), "wb") as wav:
            wav.setnchannels(2)
            wav.setsampwidth(2)
            wav.setframerate(sample_rate)
            wav.writeframes(audio.astype("<i2").tobytes())
    except OSError as exc:
        raise SinkError(f"Cannot write WAV file {out}: {exc.strerror or exc}.") from None
    return out


def _pull(synth: Any, blocks: list[np.ndarray], cursor: int, target: int) -> int:
    """Render frames [cursor, target) into ``blocks`` (interleaved stereo int16)."""
    while cursor < target:
        n = min(_BLOCK, target - cursor)
        blocks.append(np.asarray(synth.get_samples(n), dtype=np.int16))
        cursor += n
    return cursor


def _apply(synth: Any, sfid: int, msg: mido.Message) -> None:
    if msg.type == "note_on" and msg.velocity > 0:
        synth.noteon(msg.channel, msg.note, msg.velocity)
    elif msg.type in ("note_off", "note_on"):
        synth.noteoff(msg.channel, msg.note)
    elif msg.type == "program_change":
        bank = _DRUM_BANK if msg.channel == DRUM_CHANNEL else 0
        synth.program_select(msg.channel, sfid, bank, msg.program)
    elif msg.type == "control_change":
        synth.cc(msg.channel, msg.control, msg.value)


def render_wav(
    notes: Iterable[Note],
    instruments: Mapping[str, InstrumentSettings],
    path: str | os.PathLike[str],
    *,
    soundfont: str | os.PathLike[str] = DEFAULT_SOUNDFONT,
    sample_rate: int = 44100,
    tail: float = 1.5,
) -> Path:
    """Render notes with each instrument's program to a 16-bit stereo WAV; returns its path."""
    from .scheduler import events_from_notes

    check_soundfont(soundfont)
    events = events_from_notes(notes, instruments)
    return render_events(events, path, soundfont=soundfont, sample_rate=sample_rate, tail=tail)


class SynthSink:
    """A sink that collects the session's messages and renders them to a WAV on close."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        soundfont: str | os.PathLike[str] = DEFAULT_SOUNDFONT,
        sample_rate: int = 44100,
        tail: float = 1.5,
    ) -> None:
        self.path = Path(path)
        self.soundfont = Path(soundfont)
        self.sample_rate = sample_rate
        self.tail = tail
        self._events: list[tuple[float, mido.Message]] = []
        self._lock = threading.Lock()
        self._open = False
        self._closed = False

    def open(self, instruments: dict[str, InstrumentSettings], tempo: float) -> None:
        """Checks the SoundFont and the output folder now, not after the session."""
        check_soundfont(self.soundfont)
        _check_writable(self.path, "WAV file")
        self._events = [(0.0, m) for m in program_changes(instruments)]
        self._open, self._closed = True, False

    def send(self, msg: mido.Message, music_time: float) -> None:
        with self._lock:
            if not self._open:
                raise SinkError(f"Synth sink for {self.path} is not open; call open() first.")
            self._events.append((float(music_time), msg))

    def close(self) -> None:
        """Render the WAV (every channel is reset at the end). Idempotent."""
        with self._lock:
            if self._closed or not self._open:
                self._closed = True
                return
            self._closed = True
            events = list(self._events)
        end = max((t for t, _ in events), default=0.0)
        channels = {m.channel for _, m in events if hasattr(m, "channel")}
        for ch in sorted(channels):
            events.append((end, mido.Message("control_change", channel=ch, control=123, value=0)))
        render_events(events, self.path, soundfont=self.soundfont, sample_rate=self.sample_rate, tail=self.tail)
