"""Audio output: which driver plays the live synth, how loud it may be, and loudness of renders.

Drivers. FluidSynth's own audio drivers run the synth in a C thread, so no Python (and no GIL)
sits between the synth and the sound card. Measured on JACK with 64-frame periods: a Python
callback in the audio thread (FluidSynth's ``new_fluid_audio_driver2``) caused ~530 xruns in 3 s
while the event loop was busy; FluidSynth's own driver caused none. ``auto`` tries, in order, the
drivers of :data:`AUTO_ORDER` that the loaded library has; the first that starts plays. On Linux
JACK comes first: a running JACK server (a studio set-up, or PipeWire's JACK) is the lowest-latency
path, and with none running the attempt fails in milliseconds (servers are never autostarted).

Gain staging. FluidSynth mixes linearly, so the output scales with its gain. Before playing,
:func:`staged_gain` renders the loudest thing the ensemble may play (:func:`stress_messages`: a chord
of the polyphony cap's size every sixteenth at 140 BPM, every note at its instrument's top velocity,
GM drums on every beat) with the session's SoundFont and effects, and sets the gain so that its peak
sits :data:`STAGING_MARGIN_DB` below ``peak_dbfs`` (−1 dBFS by default). Measured, not proven: the
tests play other such passages and real EEG ensembles at the staged gain and find them below −1 dBFS.
Renders (``render --wav``, the demo) are instead normalised to an integrated loudness (ITU-R BS.1770
via pyloudnorm) with a look-ahead limiter holding the same peak ceiling (:func:`normalise_loudness`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import AudioSettings, InstrumentSettings
from ..errors import ConfigError, SinkError
from ..midiports import quiet_stderr
from ..music.constants import CRASH, KICK, SNARE
from .fluid import DRUM_CHANNEL, Synth, compiled_drivers, last_error

log = logging.getLogger("brainharmonic")

#: Drivers tried by ``auto``, per platform (``sys.platform`` prefix), first that starts wins.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "linux": ("jack", "pipewire", "pulseaudio", "alsa"),
    "darwin": ("coreaudio", "jack", "portaudio", "sdl2"),
    "win32": ("wasapi", "dsound", "waveout", "portaudio", "sdl2"),
}
#: The stress render's peak sits this far below the target, for sums it did not happen to hit.
STAGING_MARGIN_DB = 3.0
#: GM drums in the stress render: kick, snare, crash.
_STRESS_DRUMS = (KICK, SNARE, CRASH)
#: The limiter looks this far ahead (s) and holds its gain this long before recovering.
LIMITER_WINDOW = 0.005
LIMITER_RELEASE = 0.05


class AudioUnavailable(SinkError):
    """No audio output could be started (one sentence: what was tried, why, how to fix it)."""


@dataclass(frozen=True)
class Output:
    """A started audio driver."""

    handle: Any  #: FluidSynth's ``fluid_audio_driver_t*``
    driver: str  #: its name (jack, pulseaudio, ...)


def auto_order(platform: str = sys.platform) -> tuple[str, ...]:
    for prefix, order in AUTO_ORDER.items():
        if platform.startswith(prefix):
            return order
    return ("portaudio", "sdl2")


def driver_candidates(name: str) -> list[str]:
    """The drivers to try for ``name`` ("auto" or one driver), checked against the FluidSynth library."""
    have = compiled_drivers()
    if name == "auto":
        return [d for d in auto_order() if d in have]
    if name not in have:
        raise ConfigError(
            f"Audio driver {name!r} is not in this FluidSynth (it has: {', '.join(have)}); "
            "choose one of those with --audio-driver, or use --audio-driver auto."
        )
    return [name]


def _driver_settings(synth: Synth, driver: str, audio: AudioSettings) -> None:
    fs = synth.fs
    fs.setting("audio.driver", driver)
    fs.setting("audio.period-size", int(audio.period_size))
    fs.setting("audio.periods", int(audio.periods))
    if driver == "jack":
        fs.setting("audio.jack.id", audio.jack_name)
        fs.setting("audio.jack.autoconnect", 1)  # to the system playback ports, when there are any
    elif driver == "pulseaudio":
        fs.setting("audio.pulseaudio.media-role", "music")


def _hint(driver: str) -> str:
    return {
        "jack": "no JACK server is running (start one, e.g. `jackd -d alsa`, or use PipeWire's)",
        "pipewire": "no PipeWire server answers",
        "pulseaudio": "no PulseAudio (or PipeWire-Pulse) server answers",
        "alsa": "ALSA has no usable sound card (is one connected, and is your user in the `audio` group?)",
        "coreaudio": "CoreAudio has no output device",
        "wasapi": "WASAPI has no output device",
        "dsound": "DirectSound has no output device",
    }.get(driver, f"the {driver} driver did not start")


def start_output(synth: Synth, audio: AudioSettings) -> Output:
    """Start the first driver of ``audio.driver`` that works on ``synth``; :class:`AudioUnavailable` if none."""
    os.environ.setdefault("JACK_NO_START_SERVER", "1")  # never autostart a JACK server behind the user's back
    tried: list[str] = []
    for driver in driver_candidates(audio.driver):
        _driver_settings(synth, driver, audio)
        last_error()
        with quiet_stderr():
            handle = synth.c.new_driver(synth.settings, synth.handle)
        if handle:
            return Output(handle, driver)
        why = last_error()
        tried.append(f"{driver}: {_hint(driver)}" + (f" ({why.rstrip('.')})" if why else ""))
    forced = audio.driver != "auto"
    raise AudioUnavailable(
        ("The audio driver failed to start — " if forced else "No audio output found — ")
        + "; ".join(tried or ["FluidSynth has none of this platform's audio drivers"])
        + ". Playing MIDI only; "
        + (
            "pick another with --audio-driver (or auto), or --no-audio to silence this."
            if forced
            else "start a sound server or connect an output, force one with --audio-driver NAME, "
            "or pass --no-audio to silence this."
        )
    )


def stop_output(synth: Synth, output: Output) -> None:
    with quiet_stderr():
        synth.c.delete_driver(output.handle)


# ---------------------------------------------------------------------------------------- gain


def stress_messages(
    instruments: Mapping[str, InstrumentSettings], polyphony: int, *, steps: int = 64, bpm: float = 140.0, seed: int = 7
) -> list[tuple[float, str, int, int, int]]:
    """(time s, 'on'/'off', channel, note, velocity) of the loudest passage the ensemble may play.

    A new chord every sixteenth at ``bpm`` for ``steps`` sixteenths: ``polyphony`` notes (the arbiter's
    cap on sounding notes) dealt round-robin over the instruments, each at a random pitch of its register
    and at its top velocity, held for almost the whole step (so releases and reverb pile up under the next
    chord), with GM kick, snare and crash at full velocity on every beat. Seeded: the same passage every time.
    """
    insts = sorted(instruments.values(), key=lambda i: i.channel)
    if not insts:
        return []
    rng = np.random.default_rng(seed)
    step = 60.0 / bpm / 4.0
    out: list[tuple[float, str, int, int, int]] = []
    for k in range(steps):
        t = k * step
        chord: set[tuple[int, int]] = set()
        for j in range(max(1, polyphony)):
            inst = insts[(k + j) % len(insts)]
            chord.add((inst.channel, int(rng.integers(inst.low, inst.high + 1))))
        vel = {i.channel: i.velocity[1] for i in insts}
        out += [(t, "on", ch, note, vel[ch]) for ch, note in sorted(chord)]
        if k % 4 == 0:
            out += [(t, "on", DRUM_CHANNEL, drum, 127) for drum in _STRESS_DRUMS]
        out += [(t + 0.95 * step, "off", ch, note, 0) for ch, note in sorted(chord)]
    return sorted(out, key=lambda e: e[0])


def stress_peak(synth: Synth, instruments: Mapping[str, InstrumentSettings], polyphony: int) -> float:
    """Peak (linear, at ``synth``'s current gain) of :func:`stress_messages`, with its release and reverb."""
    sr = synth.sample_rate()
    for inst in instruments.values():
        synth.program(inst.channel, inst.program)
    events = stress_messages(instruments, polyphony)
    peak, cursor = 0.0, 0
    end = max((e[0] for e in events), default=0.0) + 1.5
    for t, kind, ch, note, vel in [*events, (end, "end", 0, 0, 0)]:
        target = round(t * sr)
        if target > cursor:
            peak = max(peak, float(np.abs(synth.render(target - cursor)).max()))
            cursor = target
        if kind == "on":
            synth.fs.noteon(ch, note, vel)
        elif kind == "off":
            synth.fs.noteoff(ch, note)
    for ch in range(16):
        synth.fs.cc(ch, 123, 0)
    return peak


def staged_gain(
    synth: Synth, instruments: Mapping[str, InstrumentSettings], polyphony: int, peak_dbfs: float = -1.0
) -> tuple[float, float]:
    """(gain, stress peak in dBFS at that gain) so the loudest passage stays under ``peak_dbfs``.

    ``synth`` renders the stress passage at gain 1 (use a synth without an audio driver, with the
    same SoundFont and effects as the one that plays); its gain is left at 1.
    """
    synth.set_gain(1.0)
    unit = stress_peak(synth, instruments, polyphony)
    if unit <= 0:
        return 1.0, -np.inf
    gain = 10 ** ((peak_dbfs - STAGING_MARGIN_DB) / 20) / unit
    gain = float(min(gain, 10.0))  # FluidSynth's gain range
    return gain, 20 * float(np.log10(unit * gain))


# ---------------------------------------------------------------------------------------- loudness


def limit(audio: np.ndarray, sample_rate: float, ceiling: float) -> np.ndarray:
    """Look-ahead peak limiter: ``audio`` (frames, channels) scaled so no sample exceeds ``ceiling``.

    The gain each sample needs is spread over a window around it (a minimum filter, then a moving
    average no wider than that window), so the gain falls before a peak and never lets it through;
    it recovers over :data:`LIMITER_RELEASE`. Only passages over the ceiling are touched.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    if audio.size == 0:
        return audio
    level = np.abs(audio).max(axis=1)
    need = np.minimum(1.0, ceiling / np.maximum(level, 1e-12))
    if need.min() >= 1.0:
        return audio
    reach = max(1, round(LIMITER_RELEASE * sample_rate))
    held = minimum_filter1d(need, size=2 * reach + 1, mode="nearest")
    smooth = uniform_filter1d(held, size=max(1, round(LIMITER_WINDOW * sample_rate)), mode="nearest")
    smooth = np.minimum(smooth, need)  # float round-off in the average never lets a peak through
    smooth[smooth > 1.0 - 1e-9] = 1.0  # ... nor touches what needs no limiting
    return audio * smooth[:, None]


def fade(audio: np.ndarray, sample_rate: float, fade_in: float = 0.005, fade_out: float = 0.1) -> np.ndarray:
    """Raised-cosine fade in and out, so the file starts and ends without a click."""
    out = audio.copy()
    n = len(out)
    for seconds, rising in ((fade_in, True), (fade_out, False)):
        k = min(n, round(seconds * sample_rate))
        if k <= 1:
            continue
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, k))
        if rising:
            out[:k] *= ramp[:, None]
        else:
            out[n - k :] *= ramp[::-1, None]
    return out


def loudness(audio: np.ndarray, sample_rate: float) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4 with gating); -inf for silence or < 0.4 s."""
    import pyloudnorm

    if len(audio) < 0.4 * sample_rate:
        return float("-inf")
    with np.errstate(divide="ignore"):
        return float(pyloudnorm.Meter(int(sample_rate)).integrated_loudness(np.asarray(audio, dtype=np.float64)))


def normalise_loudness(
    audio: np.ndarray, sample_rate: float, target_lufs: float = -16.0, peak_dbfs: float = -1.0
) -> tuple[np.ndarray, float]:
    """``audio`` at ``target_lufs`` with peaks ≤ ``peak_dbfs``; returns (audio, its loudness in LUFS).

    The limiter lowers loudness a little where it acts, so the gain is corrected and the limiter run
    again (three rounds at most); silence (or < 0.4 s) is only peak-limited.
    """
    ceiling = 10 ** (peak_dbfs / 20)
    out = np.asarray(audio, dtype=np.float64)
    measured = loudness(out, sample_rate)
    if not np.isfinite(measured):
        return limit(out, sample_rate, ceiling), measured
    gain = 10 ** ((target_lufs - measured) / 20)
    for _ in range(3):
        out = limit(audio * gain, sample_rate, ceiling)
        measured = loudness(out, sample_rate)
        if not np.isfinite(measured) or abs(measured - target_lufs) <= 0.2:
            break
        gain *= 10 ** ((target_lufs - measured) / 20)
    return out, measured
