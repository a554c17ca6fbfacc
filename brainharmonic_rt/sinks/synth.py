"""Offline audio: FluidSynth renders notes (or a session's messages) to a 16-bit stereo WAV.

The synth runs without an audio driver: float samples are pulled between event times, so
rendering is exact to the sample and as fast as the CPU allows. The SoundFont, reverb and chorus
are the live synth's (:class:`~.fluid.Synth`); the result is loudness-normalised to
``loudness`` LUFS (ITU-R BS.1770) with a look-ahead limiter holding peaks at ``peak_dbfs``, and
faded in and out so it starts and ends without a click (:mod:`.audio`).
"""

from __future__ import annotations

import os
import threading
import wave
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import mido
import numpy as np

from ..config import InstrumentSettings
from ..errors import SinkError
from ..events import Note
from .audio import fade, normalise_loudness
from .base import program_changes
from .fluid import Synth, apply, check_soundfont, resolve_soundfont
from .midifile import _check_writable

_BLOCK = 65_536  # frames per render call
#: FluidSynth's gain while rendering: low enough that no ensemble clips the float mix before normalising.
_RENDER_GAIN = 0.2

__all__ = ["SynthSink", "check_soundfont", "render_events", "render_wav"]


def render_events(
    events: Sequence[tuple[float, mido.Message]],
    path: str | os.PathLike[str],
    *,
    soundfont: str | os.PathLike[str] | None = None,
    sample_rate: int = 44100,
    tail: float = 1.5,
    loudness: float | None = -16.0,
    peak_dbfs: float = -1.0,
    reverb: bool = True,
    chorus: bool = True,
) -> Path:
    """Render timed messages (music seconds, in order) to a WAV; returns its path.

    ``tail`` seconds are rendered after the last event so releases and reverb ring out. ``soundfont``
    None = the best GM SoundFont installed; ``loudness`` None skips normalisation (peaks are still
    limited to ``peak_dbfs``).
    """
    out = Path(path)
    sf = resolve_soundfont(soundfont)
    _check_writable(out, "WAV file")
    synth = Synth(sf, sample_rate=float(sample_rate), gain=_RENDER_GAIN, reverb=reverb, chorus=chorus)
    try:
        blocks: list[np.ndarray] = []
        cursor = 0
        for t, msg in sorted(events, key=lambda e: e[0]):  # stable: equal times keep their order
            target = round(max(0.0, t) * sample_rate)
            cursor = _pull(synth, blocks, cursor, target)
            apply(synth, msg)
        _pull(synth, blocks, cursor, cursor + round(tail * sample_rate))
    finally:
        synth.delete()
    audio = np.concatenate(blocks) if blocks else np.zeros((0, 2), dtype=np.float32)
    audio = finish(audio, sample_rate, loudness=loudness, peak_dbfs=peak_dbfs)
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    try:
        with wave.open(str(out), "wb") as wav:
            wav.setnchannels(2)
            wav.setsampwidth(2)
            wav.setframerate(sample_rate)
            wav.writeframes(pcm.tobytes())
    except OSError as exc:
        raise SinkError(f"Cannot write WAV file {out}: {exc.strerror or exc}.") from None
    return out


def finish(audio: np.ndarray, sample_rate: float, *, loudness: float | None, peak_dbfs: float) -> np.ndarray:
    """Loudness-normalised (or only peak-limited), faded in and out: what a render writes."""
    from .audio import limit

    if loudness is None:
        audio = limit(audio.astype(np.float64), sample_rate, 10 ** (peak_dbfs / 20))
    else:
        audio, _ = normalise_loudness(audio, sample_rate, loudness, peak_dbfs)
    return fade(audio, sample_rate)


def _pull(synth: Synth, blocks: list[np.ndarray], cursor: int, target: int) -> int:
    """Render frames [cursor, target) into ``blocks`` (float32, shape (frames, 2))."""
    while cursor < target:
        n = min(_BLOCK, target - cursor)
        blocks.append(synth.render(n))
        cursor += n
    return cursor


def render_wav(
    notes: Iterable[Note],
    instruments: Mapping[str, InstrumentSettings],
    path: str | os.PathLike[str],
    *,
    soundfont: str | os.PathLike[str] | None = None,
    sample_rate: int = 44100,
    tail: float = 1.5,
    loudness: float | None = -16.0,
    peak_dbfs: float = -1.0,
) -> Path:
    """Render notes with each instrument's program to a 16-bit stereo WAV (see :func:`render_events`)."""
    from .scheduler import events_from_notes

    resolve_soundfont(soundfont)
    events = events_from_notes(notes, instruments)
    return render_events(
        events, path, soundfont=soundfont, sample_rate=sample_rate, tail=tail, loudness=loudness, peak_dbfs=peak_dbfs
    )


class SynthSink:
    """A sink that collects the session's messages and renders them to a WAV on close."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        soundfont: str | os.PathLike[str] | None = None,
        sample_rate: int = 44100,
        tail: float = 1.5,
    ) -> None:
        self.path = Path(path)
        self.soundfont = None if soundfont is None else Path(soundfont)
        self.sample_rate = sample_rate
        self.tail = tail
        self._events: list[tuple[float, mido.Message]] = []
        self._lock = threading.Lock()
        self._open = False
        self._closed = False

    def open(self, instruments: dict[str, InstrumentSettings], tempo: float) -> None:
        """Checks the SoundFont and the output folder now, not after the session."""
        self.soundfont = resolve_soundfont(self.soundfont)
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
