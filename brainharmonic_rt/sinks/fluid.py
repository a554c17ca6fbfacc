"""FluidSynth, shared by the live synth, its recorder and offline rendering.

pyfluidsynth wraps most of the C API; the few calls it leaves out (float rendering, live gain,
the audio driver, FluidSynth's log and its list of compiled drivers) are declared here on the
same library. One function builds a synth (:func:`new_synth`) and one applies a MIDI message
(:func:`apply`), so what is rendered offline, recorded and heard live is made the same way.

FluidSynth's own log goes to the ``brainharmonic.fluidsynth`` logger at debug level; its latest
error is kept (:func:`last_error`) so a failure becomes one sentence that quotes it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mido
import numpy as np

from ..config import DEFAULT_SOUNDFONT, SOUNDFONT_CANDIDATES
from ..errors import SinkError
from ..music.constants import DRUM_CHANNEL

log = logging.getLogger("brainharmonic.fluidsynth")

#: FluidSynth's default wet levels (synth.reverb.level, synth.chorus.level)
_REVERB_LEVEL, _CHORUS_LEVEL = 0.9, 2.0
DRUM_BANK = 128  #: SoundFont bank of the GM drum kits
_LOG_LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.DEBUG, 4: logging.DEBUG}

_LogFunc = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_OptionFunc = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p)


class _Lib:
    """The extra C functions, declared once on the library pyfluidsynth loaded."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        vp, i, f, d = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_double
        self.new_driver = self._fn(lib, "new_fluid_audio_driver", vp, vp, vp)
        self.delete_driver = self._fn(lib, "delete_fluid_audio_driver", None, vp)
        self.set_gain = self._fn(lib, "fluid_synth_set_gain", None, vp, f)
        self.get_gain = self._fn(lib, "fluid_synth_get_gain", f, vp)
        self.reverb_level = self._fn(lib, "fluid_synth_set_reverb_group_level", i, vp, i, d)
        self.chorus_level = self._fn(lib, "fluid_synth_set_chorus_group_level", i, vp, i, d)
        self.cpu_load = self._fn(lib, "fluid_synth_get_cpu_load", d, vp)
        self.active_voices = self._fn(lib, "fluid_synth_get_active_voice_count", i, vp)
        fp = ctypes.POINTER(ctypes.c_float)
        self.write_float = self._fn(lib, "fluid_synth_write_float", i, vp, i, fp, i, i, fp, i, i)
        self.set_log = self._fn(lib, "fluid_set_log_function", vp, i, _LogFunc, vp)
        self.foreach_option = self._fn(lib, "fluid_settings_foreach_option", None, vp, ctypes.c_char_p, vp, _OptionFunc)
        self.getint = self._fn(lib, "fluid_settings_getint", i, vp, ctypes.c_char_p, ctypes.POINTER(i))
        self.getnum = self._fn(lib, "fluid_settings_getnum", i, vp, ctypes.c_char_p, ctypes.POINTER(d))

    @staticmethod
    def _fn(lib: ctypes.CDLL, name: str, res: Any, *args: Any) -> Any:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, list(args)
        return fn


_lib: _Lib | None = None
_lib_lock = threading.Lock()
_last_error: list[str] = []
_log_callback: Any = None  # kept alive: FluidSynth holds a raw pointer to it


def fluidsynth() -> Any:
    """The pyfluidsynth module, or :class:`SinkError` saying how to install FluidSynth."""
    try:
        import fluidsynth as fs
    except (ImportError, OSError) as exc:
        raise SinkError(
            f"The FluidSynth library cannot be loaded ({exc}); install it with `apt install fluidsynth` "
            "(or `brew install fluid-synth`)."
        ) from None
    return fs


def lib() -> _Lib:
    """The extra C functions; also routes FluidSynth's log into ours (once per process)."""
    global _lib, _log_callback
    with _lib_lock:
        if _lib is None:
            fs = fluidsynth()
            _lib = _Lib(fs.lib)

            def on_log(level: int, message: bytes | None, _data: Any) -> None:
                text = (message or b"").decode("utf-8", "replace").strip()
                if level <= 1:
                    _last_error.append(text)
                    del _last_error[:-4]
                log.log(_LOG_LEVELS.get(level, logging.DEBUG), "%s", text)

            _log_callback = _LogFunc(on_log)
            for level in range(5):
                _lib.set_log(level, _log_callback, None)
        return _lib


def last_error(clear: bool = True) -> str:
    """FluidSynth's latest error message ('' if none), e.g. why a driver did not start."""
    text = _last_error[-1] if _last_error else ""
    if clear:
        _last_error.clear()
    return text


def compiled_drivers() -> list[str]:
    """Names of the audio drivers in the loaded FluidSynth library (its own list)."""
    fs = fluidsynth()
    c = lib()
    settings = fs.new_fluid_settings()
    names: list[str] = []

    def add(_data: Any, _name: bytes, option: bytes) -> None:
        names.append(option.decode())

    cb = _OptionFunc(add)
    try:
        c.foreach_option(settings, b"audio.driver", None, cb)
    finally:
        fs.delete_fluid_settings(settings)
    return names


def find_soundfont(candidates: Sequence[str | os.PathLike[str]] = SOUNDFONT_CANDIDATES) -> Path | None:
    """The best General MIDI SoundFont installed (first of ``candidates`` that is a file), or None."""
    for c in candidates:
        p = Path(c)
        if p.is_file():
            return p.resolve()
    return None


def resolve_soundfont(soundfont: str | os.PathLike[str] | None) -> Path:
    """The SoundFont to use: ``soundfont`` when given (it must exist), else the best installed one."""
    if soundfont is not None:
        return check_soundfont(soundfont)
    found = find_soundfont()
    if found is None:
        raise SinkError(
            "No General MIDI SoundFont is installed; install one with `apt install fluid-soundfont-gm` "
            "(or timgm6mb-soundfont), or pass --soundfont PATH to a GM .sf2 file."
        )
    return found


def check_soundfont(soundfont: str | os.PathLike[str]) -> Path:
    """The SoundFont path if it is a readable file, or :class:`SinkError` saying how to get one."""
    sf = Path(soundfont)
    if not sf.is_file():
        raise SinkError(
            f"SoundFont {sf} does not exist; install one with `apt install fluid-soundfont-gm` "
            "(or `apt install timgm6mb-soundfont`) or pass --soundfont PATH to a General MIDI .sf2."
        )
    if not os.access(sf, os.R_OK):
        raise SinkError(
            f"SoundFont {sf} is not readable; check its permissions (chmod a+r) or pass another --soundfont."
        )
    return sf


class Synth:
    """One FluidSynth instance with a loaded SoundFont, GM programs on every channel (drums on 10).

    Parameters
    ----------
    soundfont : a General MIDI .sf2/.sf3.
    sample_rate : Hz.
    gain : FluidSynth's master gain (linear).
    reverb, chorus : FluidSynth's effects on (their GM default amounts) or off.
    settings : further FluidSynth settings by name (e.g. ``{"audio.jack.id": "x"}``).
    """

    def __init__(
        self,
        soundfont: str | os.PathLike[str],
        *,
        sample_rate: float = 48000.0,
        gain: float = 0.2,
        reverb: bool = True,
        chorus: bool = True,
        settings: dict[str, Any] | None = None,
    ) -> None:
        sf = check_soundfont(soundfont)
        fs = fluidsynth()
        self.c = lib()
        opts: dict[str, Any] = {
            "synth.reverb.active": int(reverb),
            "synth.chorus.active": int(chorus),
            # Samples of the presets in use only: FluidR3_GM is 148 MB, an ensemble uses a few MB of it.
            "synth.dynamic-sample-loading": 1,
        }
        opts.update(settings or {})
        self.fs = fs.Synth(gain=float(gain), samplerate=float(sample_rate), **opts)
        self.soundfont = sf
        last_error()
        self.sfid = self.fs.sfload(str(sf))
        if self.sfid < 0:
            why = last_error()
            self.fs.delete()
            raise SinkError(
                f"SoundFont {sf} cannot be loaded by FluidSynth ({why or 'not a SoundFont'}); "
                "pass --soundfont PATH to a valid General MIDI .sf2 file."
            )
        self.programs: dict[int, int] = {}
        for ch in range(16):
            self.program(ch, 0)

    @property
    def handle(self) -> Any:
        """The C ``fluid_synth_t*``."""
        return self.fs.synth

    @property
    def settings(self) -> Any:
        """The C ``fluid_settings_t*``."""
        return self.fs.settings

    def sample_rate(self) -> float:
        v = ctypes.c_double()
        self.c.getnum(self.settings, b"synth.sample-rate", ctypes.byref(v))
        return float(v.value)

    def program(self, channel: int, program: int) -> None:
        """GM program on a channel (the drum bank on MIDI channel 10)."""
        if self.programs.get(channel) == program:
            return
        bank = DRUM_BANK if channel == DRUM_CHANNEL else 0
        if self.fs.program_select(channel, self.sfid, bank, program) != 0 and channel != DRUM_CHANNEL:
            self.fs.program_select(channel, self.sfid, 0, 0)  # not in this SoundFont: the piano, not silence
        self.programs[channel] = program

    def set_gain(self, gain: float) -> None:
        self.c.set_gain(self.handle, ctypes.c_float(max(0.0, gain)))

    def set_effects_level(self, share: float) -> None:
        """Wet level of reverb and chorus as a share (0..1) of FluidSynth's defaults: their tails ring on
        after the gain reaches 0, so a fade-out takes them down too."""
        self.c.reverb_level(self.handle, -1, ctypes.c_double(_REVERB_LEVEL * max(0.0, share)))
        self.c.chorus_level(self.handle, -1, ctypes.c_double(_CHORUS_LEVEL * max(0.0, share)))

    @property
    def gain(self) -> float:
        return float(self.c.get_gain(self.handle))

    def render(self, frames: int) -> np.ndarray:
        """The next ``frames`` of audio, float32 of shape (frames, 2), without an audio driver."""
        out = np.zeros((frames, 2), dtype=np.float32)
        if frames:
            ptr = out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            self.c.write_float(self.handle, frames, ptr, 0, 2, ptr, 1, 2)
        return out

    def delete(self) -> None:
        self.fs.delete()


def apply(synth: Synth, msg: mido.Message) -> None:
    """Play one MIDI message on the synth (notes, program changes, controllers, pitch bend)."""
    fs = synth.fs
    kind = msg.type
    if kind == "note_on" and msg.velocity > 0:
        fs.noteon(msg.channel, msg.note, msg.velocity)
    elif kind in ("note_off", "note_on"):
        fs.noteoff(msg.channel, msg.note)
    elif kind == "control_change":
        fs.cc(msg.channel, msg.control, msg.value)
    elif kind == "program_change":
        synth.program(msg.channel, msg.program)
    elif kind == "pitchwheel":
        fs.pitch_bend(msg.channel, msg.pitch)


__all__ = [
    "DEFAULT_SOUNDFONT",
    "DRUM_BANK",
    "DRUM_CHANNEL",
    "Synth",
    "apply",
    "check_soundfont",
    "compiled_drivers",
    "find_soundfont",
    "fluidsynth",
    "last_error",
    "lib",
    "resolve_soundfont",
]
