"""Record what the live synth plays as FLAC, written as it goes.

Why a twin. FluidSynth's audio driver runs the synth in a C thread with no hook for a copy; a
Python callback in that thread (FluidSynth's ``new_fluid_audio_driver2``) made JACK xrun hundreds
of times a second here while the event loop was busy. So the recorder runs its own FluidSynth with
the same SoundFont, effects, sample rate and gain, and is sent every message the live synth gets,
stamped with the moment it got it: the same engine fed the same events renders the same samples,
except that the live synth starts each event at its next audio period (1.3 ms at 64 frames) while
the twin places it on the exact sample. The twin renders in a background thread, never in the audio
path; FluidSynth shares the SoundFont's samples between the two synths.

Crash safety. Every ``interval`` the new audio is encoded and flushed, and the FLAC header's sample
count (STREAMINFO, which libsndfile fills in only on close) is set to what is surely on disk, so a
file cut by ``kill -9`` decodes up to that point. What can be missing is the last interval plus one
FLAC block (4096 frames): about 0.35 s at 48 kHz, well inside the one second allowed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mido
import numpy as np

from ..errors import SinkError
from .fluid import Synth, apply

log = logging.getLogger("brainharmonic")

_STREAMINFO_BLOCKSIZE = 10  # byte offset of STREAMINFO's max block size ("fLaC" + 4-byte block header + 2)
_STREAMINFO_SAMPLES = 18  # byte offset of the 8 bytes holding 4 bits of bps and the 36-bit sample count
_SAMPLES_MASK = (1 << 36) - 1


class AudioRecorder:
    """A twin synth rendering what the live synth plays to ``path`` (FLAC, 24 bit, stereo).

    Parameters
    ----------
    path : the .flac file (a sidecar ``.json`` next to it says when it started).
    soundfont, sample_rate, gain, reverb, chorus : as the live synth.
    interval : seconds between flushes to disk.
    fade : seconds of fade-out at the end (as the live synth's).
    """

    def __init__(
        self,
        path: Path,
        soundfont: Path,
        *,
        sample_rate: float,
        gain: float,
        reverb: bool = True,
        chorus: bool = True,
        interval: float = 0.25,
        fade: float = 0.05,
    ) -> None:
        self.path = Path(path)
        self.soundfont = soundfont
        self.sample_rate = float(sample_rate)
        self.gain = gain
        self.reverb, self.chorus = reverb, chorus
        self.interval = interval
        self.fade = fade
        self.frames = 0  #: frames written so far
        self.error: BaseException | None = None
        self._synth: Synth | None = None
        self._file: Any = None
        self._header: Any = None
        self._block = 4096
        self._pending: list[tuple[float, mido.Message]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def start(self, setup: Iterable[mido.Message] = ()) -> None:
        """Open the file, apply ``setup`` (program changes) and start recording from now."""
        import soundfile

        self._synth = Synth(
            self.soundfont, sample_rate=self.sample_rate, gain=self.gain, reverb=self.reverb, chorus=self.chorus
        )
        for msg in setup:
            apply(self._synth, msg)
        try:
            self._file = soundfile.SoundFile(
                str(self.path), "w", samplerate=round(self.sample_rate), channels=2, format="FLAC", subtype="PCM_24"
            )
            self._header = open(self.path, "r+b", buffering=0)  # noqa: SIM115 - closed in close()
        except (OSError, RuntimeError) as exc:
            self._synth.delete()
            self._synth = None
            raise SinkError(
                f"Cannot write the audio recording {self.path} ({exc}); check that the session folder is writable."
            ) from None
        self._block = self._max_block()
        self._t0 = time.monotonic()
        meta = {
            "file": self.path.name,
            "sample_rate": self.sample_rate,
            "channels": 2,
            "start_monotonic": self._t0,  # the clock of eeg_times (LSL) and of the scheduler on this machine
            "start_unix": time.time(),
            "how": "twin FluidSynth fed every message the live synth got, at the moment it got it",
        }
        self.path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        self._thread = threading.Thread(target=self._run, name="brainharmonic-audio-record", daemon=True)
        self._thread.start()

    def send(self, msg: mido.Message) -> None:
        """The live synth got ``msg`` now (any thread)."""
        with self._lock:
            self._pending.append((time.monotonic(), msg))

    def close(self, fade_from: float | None = None) -> None:
        """Render up to ``fade_from`` (monotonic s; default now), then the fade-out, and finish the file
        (libsndfile writes the exact length into its header). Idempotent."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        try:
            if self.error is None:
                self._render_until(time.monotonic() if fade_from is None else fade_from, fade=True)
        finally:
            if self._header is not None:
                self._header.close()  # before libsndfile rewrites the header with the exact count
                self._header = None
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._synth is not None:
                self._synth.delete()
                self._synth = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._render_until(time.monotonic())
            except Exception as exc:  # a full disk must not take the music down: say it once, stop recording
                self.error = exc
                log.warning("Audio recording to %s stopped: %s", self.path, exc)
                return

    def _render_until(self, now: float, *, fade: bool = False) -> None:
        assert self._synth is not None and self._file is not None
        with self._lock:
            events, self._pending = self._pending, []
        sr = self.sample_rate
        blocks: list[np.ndarray] = []
        cursor = self.frames
        for t, msg in events:
            target = max(cursor, round((t - self._t0) * sr))
            if target > cursor:
                blocks.append(self._synth.render(target - cursor))
                cursor = target
            apply(self._synth, msg)
        end = max(cursor, round((now - self._t0) * sr))
        if end > cursor:
            blocks.append(self._synth.render(end - cursor))
        if fade:
            n = max(1, round(self.fade * sr))
            blocks.append(self._synth.render(n) * np.linspace(1.0, 0.0, n, dtype=np.float32)[:, None])
        if not blocks:
            return
        audio = np.clip(np.concatenate(blocks), -1.0, 1.0)
        self._file.write(audio)
        self._file.flush()
        self.frames += len(audio)
        self._mark_length()

    def _max_block(self) -> int:
        assert self._header is not None
        self._header.seek(_STREAMINFO_BLOCKSIZE)
        raw = self._header.read(2)
        return int.from_bytes(raw, "big") if len(raw) == 2 else 4096

    def _mark_length(self) -> None:
        """Put the frames surely on disk into STREAMINFO (the encoder may still hold one block)."""
        if self._header is None:
            return
        safe = max(0, self.frames - self._block)
        self._header.seek(_STREAMINFO_SAMPLES)
        raw = self._header.read(8)
        if len(raw) != 8:
            return
        value = (int.from_bytes(raw, "big") & ~_SAMPLES_MASK) | (safe & _SAMPLES_MASK)
        self._header.seek(_STREAMINFO_SAMPLES)
        self._header.write(value.to_bytes(8, "big"))


def read_recording(path: str | os.PathLike[str]) -> tuple[np.ndarray, float]:
    """(audio float32 (frames, 2), sample rate) of a recorded ``audio.flac``, even one cut by a crash."""
    import soundfile

    with soundfile.SoundFile(str(path)) as f:
        frames = f.frames if 0 <= f.frames < (1 << 40) else None
        if frames is None:  # no length in the header (a file from elsewhere): read up to the end by blocks
            raise SinkError(f"Audio recording {path} has no length in its header; decode it with `flac -d`.")
        data = f.read(frames, dtype="float32", always_2d=True)
        return data, float(f.samplerate)
