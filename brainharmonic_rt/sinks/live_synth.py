"""The embedded live synth: FluidSynth in this process, heard through the system's audio output.

A :class:`LiveSynthSink` gets every message from the Scheduler's dispatcher thread, at the same
absolute moment the MIDI port gets it, and hands it to FluidSynth at once; FluidSynth's own audio
driver (a C thread) plays it from its next audio period. Panic, stop, stream loss and mute reach
it as they reach the MIDI port (note-offs, CC 123, CC 64), so the synth falls silent the same way.

Failure is a sentence, not silence: a missing SoundFont or no working audio output is logged once
(:attr:`LiveSynthSink.problem`) and the sink plays nothing, so the run goes on with MIDI only.

With ``record`` the sink also feeds an :class:`~.audio_record.AudioRecorder`, which keeps what was
played as FLAC in the session folder.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from pathlib import Path
from typing import Any

import mido

from ..config import AudioSettings, InstrumentSettings, MusicSettings
from ..errors import SinkError
from .audio import AudioUnavailable, Output, staged_gain, start_output, stop_output
from .base import NoteTracker, program_changes
from .fluid import Synth, apply, resolve_soundfont

log = logging.getLogger("brainharmonic")

_SILENT_TAIL = 0.05  # s of silence played before the driver stops
_FADE_STEPS = 16


class LiveSynthSink:
    """FluidSynth playing live through an audio driver (JACK, PipeWire, PulseAudio, ALSA, CoreAudio, ...).

    Parameters
    ----------
    audio : driver, sample rate, effects, peak target, record flag ([audio] settings).
    soundfont : a GM SoundFont; None = the best one installed.
    polyphony : the ensemble's polyphony cap (``music.max_polyphony``), for gain staging.
    """

    wants_clock = False  #: a synth has no use for MIDI clock

    def __init__(self, audio: AudioSettings, soundfont: str | Path | None = None, *, polyphony: int = 6) -> None:
        self.audio = audio
        self.soundfont_arg = soundfont
        self.polyphony = polyphony
        self.synth: Synth | None = None
        self.output: Output | None = None
        self.gain = 0.0  #: the staged master gain
        self.stress_peak_dbfs = float("-inf")  #: peak of the stress passage at that gain
        self.problem: str | None = None  #: why nothing is heard (one sentence), None while playing
        self.recorder: Any = None  #: an AudioRecorder while recording
        self._instruments: dict[str, InstrumentSettings] = {}
        self._tracker = NoteTracker()
        self._lock = threading.Lock()
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def playing(self) -> bool:
        """True while an audio driver plays the synth."""
        return self.output is not None

    @property
    def driver(self) -> str | None:
        return None if self.output is None else self.output.driver

    def start(self) -> bool:
        """Load the SoundFont and start the audio driver (silent until :meth:`open` stages the gain).

        Call it early (before waiting for a stream) so a problem shows at once. Returns whether audio
        plays; on failure :attr:`problem` says why (logged as one warning) and the run goes on with
        MIDI only. Without a driver the synth stays loaded, so a recorder can still capture it.
        """
        if self._started:
            return self.playing
        self._started = True
        try:
            sf = resolve_soundfont(self.soundfont_arg)
            a = self.audio
            self.synth = Synth(sf, sample_rate=a.sample_rate, gain=0.0, reverb=a.reverb, chorus=a.chorus)
        except SinkError as exc:
            self.problem = f"{exc} Playing MIDI only."
            log.warning("%s", self.problem)
            return False
        try:
            self.output = start_output(self.synth, self.audio)
        except AudioUnavailable as exc:
            self.problem = str(exc)
            log.warning("%s", self.problem)
            if not a.record:  # nothing will use it: give its memory back
                self.synth.delete()
                self.synth = None
            return False
        return True

    def _stage(self, instruments: dict[str, InstrumentSettings]) -> None:
        """Gain staging on a driverless twin (same SoundFont, effects and rate; samples are shared)."""
        assert self.synth is not None
        a = self.audio
        probe = Synth(
            self.synth.soundfont, sample_rate=self.synth.sample_rate(), gain=1.0, reverb=a.reverb, chorus=a.chorus
        )
        try:
            self.gain, self.stress_peak_dbfs = staged_gain(probe, instruments, self.polyphony, a.peak_dbfs)
        finally:
            probe.delete()

    def open(self, instruments: dict[str, InstrumentSettings], tempo: float) -> None:
        """Start (if :meth:`start` was not called yet), set every instrument's program, stage the gain."""
        if not self._started:
            self.start()
        with self._lock:
            self._closed = False
            self._instruments = dict(instruments)
            self._tracker.channels.update(i.channel for i in instruments.values())
            synth = self.synth
            if synth is None:
                return
            for msg in program_changes(instruments):
                apply(synth, msg)
        self._stage(instruments)
        synth.set_gain(self.gain)
        log.log(
            logging.INFO if self.playing else logging.DEBUG,
            "live synth: %s through %s at %g Hz, gain %.3f (stress peak %.1f dBFS)",
            synth.soundfont.name,
            self.driver or "no audio output",
            synth.sample_rate(),
            self.gain,
            self.stress_peak_dbfs,
        )

    def record_to(self, folder: Path) -> None:
        """With ``audio.record``: keep what the synth plays as ``folder/audio.flac`` (from now until close)."""
        from .audio_record import AudioRecorder

        if not self.audio.record or self.recorder is not None:
            return
        if self.synth is None:
            log.warning("No audio is recorded: %s", self.problem or "the synth did not start.")
            return
        rec = AudioRecorder(
            folder / "audio.flac",
            self.synth.soundfont,
            sample_rate=self.synth.sample_rate(),
            gain=self.gain,
            reverb=self.audio.reverb,
            chorus=self.audio.chorus,
            fade=self.audio.fade,
        )
        rec.start()
        with self._lock:
            if self.synth is None:  # closed meanwhile
                rec.close()
                return
            for ch, program in sorted(self.synth.programs.items()):  # what plays now, live changes included
                rec.send(mido.Message("program_change", channel=ch, program=program))
            self.recorder = rec

    def send(self, msg: mido.Message, music_time: float) -> None:
        """Play now (the Scheduler chose the moment); ``music_time`` is ignored."""
        with self._lock:
            if self.synth is None or self._closed:
                return
            self._tracker.update(msg)
            apply(self.synth, msg)
            if self.recorder is not None:
                self.recorder.send(msg)

    def close(self) -> None:
        """Silence sounding notes, fade out over ``audio.fade`` s, stop the driver and the recorder. Idempotent."""
        with self._lock:
            if self._closed and self.synth is None:
                return
            self._closed = True
            synth, output, recorder = self.synth, self.output, self.recorder
            self.synth = self.output = self.recorder = None
            if synth is None:
                return
            for msg in self._tracker.silence():
                apply(synth, msg)
                if recorder is not None:
                    recorder.send(msg)
        fade_from = time.monotonic()
        try:
            if output is not None:
                self._fade(synth)
                stop_output(synth, output)
        finally:
            if recorder is not None:
                recorder.close(fade_from)
            synth.delete()

    def _fade(self, synth: Synth) -> None:
        """Ramp the master gain and the reverb and chorus tails to 0 (a driver stopped mid-sound would click)."""
        seconds = self.audio.fade
        start = synth.gain
        for k in range(1, _FADE_STEPS + 1):
            synth.set_gain(start * (1.0 - k / _FADE_STEPS))
            synth.set_effects_level(1.0 - k / _FADE_STEPS)
            time.sleep(seconds / _FADE_STEPS)
        # The driver renders a few periods ahead: let those with gain 0 reach the output before it stops.
        time.sleep(_SILENT_TAIL)

    def status(self) -> dict[str, Any]:
        """For health telemetry: driver, SoundFont, gain, load."""
        synth = self.synth
        return {
            "playing": self.playing,
            "driver": self.driver,
            "soundfont": None if synth is None else str(synth.soundfont),
            "gain": round(self.gain, 4),
            "stress_peak_dbfs": round(self.stress_peak_dbfs, 2),
            "cpu_load": None if synth is None else round(float(synth.c.cpu_load(synth.handle)), 2),
            "voices": None if synth is None else int(synth.c.active_voices(synth.handle)),
            "recording": self.recorder is not None,
            "problem": self.problem,
        }


# ------------------------------------------------------------------------------------ command line


def add_audio_arguments(p: argparse.ArgumentParser) -> None:
    """``--no-audio``, ``--audio-driver``, ``--soundfont``, ``--record-audio`` (run, demo --live)."""
    g = p.add_argument_group("audio: the embedded synth (heard through the speakers; see [audio] in the config)")
    g.add_argument(
        "--no-audio", action="store_true", help="Do not play through the speakers (the MIDI port stays open)."
    )
    g.add_argument(
        "--audio-driver",
        metavar="NAME",
        help="FluidSynth audio driver: jack, pipewire, pulseaudio, alsa, coreaudio, wasapi, dsound, ... "
        "(default auto: the first that starts).",
    )
    g.add_argument("--soundfont", metavar="PATH", help="General MIDI SoundFont (default: the best one installed).")
    g.add_argument(
        "--record-audio",
        action="store_true",
        default=None,
        help="Also keep what the synth plays as audio.flac in the session folder.",
    )


def audio_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """[audio] settings from the flags (None = not given)."""
    driver = getattr(args, "audio_driver", None)
    out: dict[str, Any] = {"driver": driver, "record": getattr(args, "record_audio", None)}
    if getattr(args, "no_audio", False):
        out["enabled"] = False
    elif driver is not None:  # naming a driver on the command line asks for audio
        out["enabled"] = True
    return out


def wants_audio(audio: AudioSettings, midi_port: str | None, forced: bool = False) -> bool:
    """Play through the speakers? By default yes, unless the notes go to an existing MIDI port
    (a synth or DAW already plays them); ``forced`` (a driver named on the command line) says yes."""
    return audio.enabled and (forced or midi_port is None)


def live_synth(
    audio: AudioSettings, music: MusicSettings, soundfont: str | Path | None, midi_port: str | None, *, forced: bool
) -> LiveSynthSink | None:
    """The live synth sink a run should have, started now (so a problem shows before the stream is
    awaited), or None when audio is off; the run's instruments and gain are set when it opens it."""
    if not wants_audio(audio, midi_port, forced):
        return None
    sink = LiveSynthSink(audio, soundfont, polyphony=music.max_polyphony)
    sink.start()
    return sink


__all__ = ["LiveSynthSink", "add_audio_arguments", "audio_overrides", "live_synth", "wants_audio"]
