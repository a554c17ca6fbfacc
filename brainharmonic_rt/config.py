"""Every setting a person can set, as pydantic models with their defaults and descriptions.

Constants a person has no reason to change stay next to the code they tune (the scheduler's wake-up
margins, the LSL source's queue bound, the window stream's depth, ``generate``'s options) and are
documented there.

Layers, lowest to highest: defaults < TOML file < environment (``BRAINHARMONIC_``
prefix, ``__`` between levels, e.g. ``BRAINHARMONIC_MUSIC__TEMPO=90``) < command line.
Unknown keys are rejected so a typo never passes silently.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError

ENV_PREFIX = "BRAINHARMONIC_"
DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"  #: the small GM SoundFont (Debian timgm6mb-soundfont)
#: GM SoundFonts looked for when none is given, best first: FluidR3_GM (Debian fluid-soundfont-gm, Fedora
#: fluid-soundfont-gm, Homebrew), the distribution's default-GM link, then TimGM6mb.
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM2-2.sf2",
    "/opt/homebrew/share/soundfonts/FluidR3_GM.sf2",
    "/usr/local/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    DEFAULT_SOUNDFONT,
)

Hz = Annotated[float, Field(gt=0, le=100_000)]
Seconds = Annotated[float, Field(ge=0, le=86_400)]
MidiNote = Annotated[int, Field(ge=0, le=127)]
MidiChannel = Annotated[int, Field(ge=0, le=15)]
KeyName = Literal["C", "C#", "Db", "D", "D#", "Eb", "E", "F", "F#", "Gb", "G", "G#", "Ab", "A", "A#", "Bb", "B"]
ScaleName = Literal["major", "minor", "dorian", "mixolydian", "pentatonic", "minor_pentatonic", "blues"]
ModeName = Literal["classic", "learned"]


class _Section(BaseModel):
    # allow_inf_nan: "nan" or "inf" for a number is refused as not finite, not compared with a range.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class StreamSettings(_Section):
    """Which LSL stream to read and how to keep reading it."""

    name: str | None = Field(None, description="LSL stream name to select.")
    type: str | None = Field(None, description="LSL stream type to select (e.g. 'EEG').")
    source_id: str | None = Field(None, description="LSL source_id to select (most specific).")
    timeout: Annotated[float, Field(gt=0, le=600)] = Field(10.0, description="Seconds to wait for the stream.")
    lost_after: Annotated[float, Field(gt=0, le=60)] = Field(
        2.0, description="Seconds without samples after which the stream counts as lost."
    )
    reconnect: bool = Field(True, description="Reconnect by itself when a lost stream returns.")


def parse_channels(text: str) -> dict[int, str]:
    """``"1=Fz,2=C3,3=Cz"`` → {0: "Fz", 1: "C3", 2: "Cz"} (1-based indices in, 0-based out).

    Raises ValueError with the offending part when the text is not ``INDEX=NAME`` pairs with distinct
    positive indices and distinct, non-empty names.
    """
    out: dict[int, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        index, sep, name = (s.strip() for s in part.partition("="))
        if not sep or not index.isdigit() or int(index) < 1 or not name:
            raise ValueError(f"channels entry {part!r} is not INDEX=NAME with a 1-based index (e.g. '1=Fz,2=C3')")
        if int(index) - 1 in out:
            raise ValueError(f"channels gives index {index} twice")
        if name in out.values():
            raise ValueError(f"channels gives the name {name!r} twice")
        out[int(index) - 1] = name
    if not out:
        raise ValueError("channels is empty; write e.g. '1=Fz,2=C3,3=Cz'")
    return out


class BoardSettings(_Section):
    """A BrainFlow board read directly (``run --board NAME``) instead of an LSL stream."""

    name: str | None = Field(
        None,
        description="BrainFlow board: a BoardIds name without _BOARD (synthetic, cyton, ganglion, muse_s, unicorn, "
        "playback_file, ...) or its number.",
    )
    serial_port: str | None = Field(None, description="Serial port of the dongle (e.g. /dev/ttyUSB0, COM3).")
    mac_address: str | None = Field(None, description="Bluetooth MAC address (boards found by BLE otherwise).")
    ip_address: str | None = Field(None, description="IP address of a Wi-Fi board or a streaming board.")
    ip_port: Annotated[int, Field(ge=0, le=65535)] = Field(0, description="IP port (0 = the board's default).")
    serial_number: str | None = Field(None, description="Serial number / device name (Muse, Unicorn, Neurosity).")
    file: Path | None = Field(None, description="Recording replayed by the playback_file board.")
    master_board: str | None = Field(
        None, description="Board that made the recording (playback_file and streaming boards), by name or number."
    )
    other_info: str | None = Field(None, description="Board-specific extra parameter (see BrainFlow's docs).")
    timeout: Annotated[int, Field(ge=0, le=600)] = Field(
        0, description="Seconds BrainFlow may search for a Bluetooth board (0 = its default)."
    )


class QualitySettings(_Section):
    """Per-channel signal quality: computed on the raw samples of each hop, reported every interval."""

    enabled: bool = Field(True, description="Compute per-channel quality for telemetry and the session recording.")
    interval: Annotated[float, Field(gt=0, le=60)] = Field(
        1.0, description="Seconds between quality reports (figures cover the hops since the previous one)."
    )
    line_noise_max: Annotated[float, Field(gt=0)] = Field(
        1.0, description="Mains power / 1-40 Hz power above which a channel is 'noisy'."
    )
    range_max_uv: Annotated[float, Field(gt=0)] = Field(
        1000.0, description="Peak-to-peak µV (of the raw, unfiltered samples) above which a channel is 'noisy'."
    )


class ArtifactSettings(_Section):
    """Blink and jaw-clench detection; what they touch holds its last clean band powers."""

    enabled: bool = Field(True, description="Detect blinks (frontal) and jaw clenches (temporal EMG).")
    blink_threshold: Annotated[float, Field(gt=1, le=100)] = Field(
        5.0, description="A frontal deflection this many times the channel's typical one is a blink."
    )
    blink_ratio: Annotated[float, Field(ge=1, le=100)] = Field(
        2.0, description="A blink is this many times larger at the front than at the back of the head."
    )
    clench_threshold: Annotated[float, Field(gt=1, le=10_000)] = Field(
        10.0, description="20-100 Hz power this many times the channel's typical power is a clench."
    )
    history: Annotated[float, Field(ge=2, le=600)] = Field(
        20.0, description="Seconds of clean signal over which the typical deflection and EMG power are estimated."
    )


class GestureSettings(_Section):
    """Blinks and clenches as musical gestures on the GM percussion channel (off by default)."""

    enabled: bool = Field(False, description="Turn detected blinks and clenches into percussion.")
    blink: Literal["accent", "cymbal", "fill", "none"] = Field("cymbal", description="What a blink plays.")
    clench: Literal["accent", "cymbal", "fill", "none"] = Field("fill", description="What a jaw clench plays.")
    velocity: Annotated[int, Field(ge=1, le=127)] = Field(100, description="Velocity of the gesture's loudest hit.")
    channel: MidiChannel = Field(9, description="MIDI channel (0-based; 9 is GM percussion).")


class BandSettings(_Section):
    """Frequency bands (Hz) whose power drives the music."""

    theta: tuple[Hz, Hz] = Field((4.0, 8.0), description="Low band (Hz); drives note length.")
    alpha: tuple[Hz, Hz] = Field((8.0, 13.0), description="Middle band (Hz); up = softer, lower, sparser.")
    beta: tuple[Hz, Hz] = Field((13.0, 30.0), description="High band (Hz); up = denser, higher, louder.")

    @model_validator(mode="after")
    def _ordered(self) -> BandSettings:
        for name in ("theta", "alpha", "beta"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"band {name} must be (low, high) with low < high, got ({lo}, {hi})")
        return self

    def as_dict(self) -> dict[str, tuple[float, float]]:
        return {"theta": self.theta, "alpha": self.alpha, "beta": self.beta}


class SignalSettings(_Section):
    """Windowing, filtering, reference, baseline and channel checks."""

    window: Annotated[float, Field(gt=0, le=120)] = Field(2.0, description="Window length in seconds.")
    hop: Annotated[float, Field(gt=0, le=60)] = Field(0.25, description="Seconds between window starts.")
    bandpass: tuple[float, float] | None = Field(
        (1.0, 40.0), description="Causal band-pass (low, high) in Hz; high is capped below Nyquist; none to disable."
    )
    notch: Annotated[float, Field(ge=0, le=1000)] = Field(50.0, description="Mains notch in Hz (0 disables).")
    reference: Literal["none", "average"] | list[str] = Field(
        "none", description="'none', 'average', or a list of channel names whose mean is subtracted."
    )
    baseline: Seconds = Field(20.0, description="Calibration period at the start (s) for normalisation.")
    adapt: Seconds = Field(
        0.0,
        description="Time constant (s) with which the baseline keeps adapting after calibration; 0 freezes it.",
    )
    z_clip: Annotated[float, Field(gt=0, le=100)] = Field(4.0, description="Normalised values are clipped to +-this.")
    flat_ratio: Annotated[float, Field(gt=0, lt=1)] = Field(
        1e-3, description="A channel whose std is below this fraction of the median channel std is flat."
    )
    rail_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        0.2, description="A channel with this fraction of samples stuck at one extreme value is railing."
    )
    groups: dict[str, list[str]] | None = Field(
        None, description="Channel groups by name, overriding the scalp-region grouping."
    )
    fallback_groups: Annotated[int, Field(ge=1, le=16)] = Field(
        4, description="Number of even groups when channel names are not 10-20/10-10 names."
    )
    channels: str | None = Field(
        None,
        description="Name and pick channels of any input: '1=Fz,2=C3,3=Cz' (1-based index = name; unnamed "
        "channels are dropped).",
    )

    @field_validator("channels")
    @classmethod
    def _channels_parse(cls, v: str | None) -> str | None:
        if v is not None:
            parse_channels(v)
        return v

    @field_validator("bandpass", mode="before")
    @classmethod
    def _bandpass_off(cls, v: Any) -> Any:
        # TOML and the environment have no null: "none" (or "off") switches the band-pass off there.
        if isinstance(v, str) and v.strip().lower() in ("none", "off", "null"):
            return None
        return v

    @field_validator("bandpass")
    @classmethod
    def _bandpass_ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 < v[0] < v[1]:
            raise ValueError(f"bandpass must be (low, high) with 0 < low < high, got {v}")
        return v

    @model_validator(mode="after")
    def _hop_fits(self) -> SignalSettings:
        if self.hop > self.window:
            raise ValueError(f"hop ({self.hop} s) must not exceed window ({self.window} s)")
        return self


class InstrumentSettings(_Section):
    """One instrument, driven by one channel group."""

    program: Annotated[int, Field(ge=0, le=127)] = Field(0, description="General MIDI program (0-based).")
    channel: MidiChannel = Field(0, description="MIDI channel (0-based; 9 is GM percussion).")
    low: MidiNote = Field(48, description="Lowest note of the register.")
    high: MidiNote = Field(84, description="Highest note of the register.")
    velocity: tuple[Annotated[int, Field(ge=1, le=127)], Annotated[int, Field(ge=1, le=127)]] = Field(
        (40, 100), description="Velocity range (min, max)."
    )
    role: Literal["bass", "harmony", "melody", "texture", "percussion"] = Field(
        "melody", description="What the instrument plays: bass, harmony, melody, texture or percussion."
    )
    muted: bool = Field(False, description="Silence this instrument.")

    @model_validator(mode="after")
    def _ranges(self) -> InstrumentSettings:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not be above high ({self.high})")
        if self.velocity[0] > self.velocity[1]:
            raise ValueError(f"velocity must be (min, max) with min <= max, got {self.velocity}")
        return self


class MusicSettings(_Section):
    """Tempo, key, scale and the instruments."""

    mode: ModeName = Field("classic", description="classic (band powers) or learned (models).")
    tempo: Annotated[float, Field(ge=20, le=300)] = Field(96.0, description="Beats per minute.")
    key: KeyName = Field("D", description="Tonic: C, C#/Db, D, ... B.")
    scale: ScaleName = Field(
        "dorian", description="major, minor, dorian, mixolydian, pentatonic, minor_pentatonic or blues."
    )
    steps_per_beat: Annotated[int, Field(ge=1, le=8)] = Field(4, description="Grid resolution (4 = sixteenths).")
    lookahead: Annotated[float, Field(ge=0, le=5)] = Field(
        0.1,
        description="Seconds between a window's end and the first note it composes (the hop after it): "
        "covers delivery and processing time, so notes are never late.",
    )
    seed: int = Field(0, description="Seed of every random choice (same seed and input => same notes).")
    max_polyphony: Annotated[int, Field(ge=1, le=64)] = Field(6, description="Most notes sounding at once.")
    smoothing: Annotated[float, Field(ge=0, le=30)] = Field(
        0.75,
        description="Time constant (s) of the exponential smoothing of band z-scores before they drive the "
        "classic composer; 0 = none. Sustained changes pass through in full.",
    )
    instruments: dict[str, InstrumentSettings] = Field(
        default_factory=dict, description="Instrument per channel-group name; groups not listed get defaults."
    )


class HarmonySettings(_Section):
    """The shared harmonic plan and the arbiter that keeps the ensemble consonant and bounded."""

    adaptive_tempo: bool = Field(
        True, description="Tempo follows the global brain state (calmer: slower); false pins music.tempo."
    )
    adaptive_key: bool = Field(
        True,
        description="The tonal centre moves to the relative major (aroused) or minor (calm) with a cadence; "
        "false pins music.key/scale.",
    )
    tempo_range: Annotated[float, Field(ge=0, le=0.5)] = Field(
        0.12, description="Brain-driven tempo moves this fraction around music.tempo (0.12 = ±12 %)."
    )
    arousal: dict[str, float] = Field(
        default_factory=lambda: {"alpha": -1.0},
        description="Global arousal = tanh(sum of weight x band z-score, averaged over groups): by default "
        "alpha suppression (engagement lowers alpha); e.g. {alpha = -0.75, beta = 0.25} adds beta.",
    )
    smoothing: Annotated[float, Field(ge=0, le=60)] = Field(
        4.0, description="Time constant (s) of the global arousal that drives the plan."
    )
    threshold: Annotated[float, Field(gt=0, le=1)] = Field(
        0.3, description="Arousal (tanh units, -1..1) at which the plan turns calm or aroused."
    )
    hysteresis: Annotated[float, Field(ge=0, le=1)] = Field(
        0.15, description="How far arousal must fall back below the threshold before the plan returns."
    )
    min_bars: Annotated[int, Field(ge=1, le=64)] = Field(
        4, description="Fewest bars between two changes of the plan's level (no flicker)."
    )
    avoid_intervals: list[Annotated[int, Field(ge=0, le=11)]] = Field(
        default_factory=lambda: [1, 6, 11],
        description="Interval classes (semitones mod 12) a new note may not form with any sounding note "
        "(1 = minor second, 6 = tritone, 11 = major seventh); [] allows all.",
    )
    strong_beat_chord_tones: bool = Field(
        True, description="Pitched onsets on beats 1 and 3 use chord tones only (scale tones elsewhere)."
    )
    arbiter: bool = Field(
        True,
        description="The harmony arbiter guards every note (scale, chord tones, clash rule, the plan's register "
        "lean and density); false keeps only the polyphony cap and the registers, so a learned model is heard alone.",
    )

    @model_validator(mode="after")
    def _bands_known(self) -> HarmonySettings:
        unknown = sorted(set(self.arousal) - {"theta", "alpha", "beta"})
        if unknown:
            raise ValueError(f"arousal weights name unknown bands {unknown}; use theta, alpha or beta")
        return self


class OutputSettings(_Section):
    """Where notes go."""

    midi_port: str | None = Field(None, description="Name (or unique substring) of an existing MIDI output port.")
    virtual_port: str | None = Field(
        "brainharmonic", description="Name of a virtual MIDI port to open when no midi_port is given; none to skip."
    )
    midi_api: Literal["auto", "jack", "alsa", "coremidi", "winmm"] = "auto"
    soundfont: Path | None = Field(
        None,
        description="GM SoundFont for the live synth and WAV rendering; none = the best one installed "
        "(FluidR3_GM, else TimGM6mb).",
    )
    sample_rate: Annotated[int, Field(ge=8000, le=192_000)] = 44100
    midi_clock: bool = Field(
        False, description="Live runs: send MIDI clock (24 per beat) with Start/Stop on the MIDI port for DAWs/synths."
    )
    clock_in: str | None = Field(
        None, description="Live runs: name (or unique substring) of a MIDI input port whose clock sets the tempo."
    )


class AudioSettings(_Section):
    """The embedded live synth (FluidSynth in-process): heard through the system's audio output."""

    enabled: bool = Field(
        True, description="Live runs: play through the speakers when an audio output exists and no midi_port is given."
    )
    driver: str = Field(
        "auto",
        pattern=r"^[a-z0-9]{1,16}$",
        description="FluidSynth audio driver (jack, pipewire, pulseaudio, alsa, coreaudio, wasapi, dsound, ...); "
        "auto = the first that starts.",
    )
    sample_rate: Annotated[int, Field(ge=8000, le=192_000)] = Field(
        48000, description="Sample rate of the live synth (a JACK server's own rate wins)."
    )
    period_size: Annotated[int, Field(ge=16, le=8192)] = Field(
        64, description="Frames per audio period (ALSA/PulseAudio; JACK uses its server's)."
    )
    periods: Annotated[int, Field(ge=2, le=64)] = Field(8, description="Audio periods buffered (ALSA/PulseAudio).")
    jack_name: str = Field("brainharmonic-synth", min_length=1, description="JACK client name of the synth.")
    reverb: bool = Field(True, description="FluidSynth's reverb.")
    chorus: bool = Field(True, description="FluidSynth's chorus.")
    peak_dbfs: Annotated[float, Field(ge=-40, le=0)] = Field(
        -1.0, description="Gain staging: the loudest ensemble the polyphony cap allows peaks at or below this."
    )
    loudness: Annotated[float, Field(ge=-40, le=-6)] = Field(
        -16.0, description="WAV renders are normalised to this integrated loudness (LUFS, ITU-R BS.1770)."
    )
    fade: Annotated[float, Field(ge=0, le=2)] = Field(0.05, description="Seconds of fade-out when the synth closes.")
    record: bool = Field(False, description="Keep the synth's output as audio.flac in the session folder.")


class LinkSettings(_Section):
    """Ableton Link: tempo, bar phase (quantum 4) and start/stop shared with Link apps on the network."""

    enabled: bool = Field(False, description="Join the Link session: our tempo and bar phase follow it.")
    lead: bool = Field(False, description="Propose our brain-driven tempo changes to the session.")
    smoothing: Annotated[float, Field(gt=0, le=10)] = Field(
        1.0, description="Seconds over which a small phase error to the session is closed (large ones snap)."
    )
    max_adjust: Annotated[float, Field(gt=0, le=0.2)] = Field(
        0.05, description="Largest tempo nudge (fraction) used to close a phase error."
    )


class RecordSettings(_Section):
    """Session recording."""

    dir: Path | None = Field(None, description="Folder under which each run writes a session folder.")
    flush_interval: Annotated[float, Field(gt=0, le=1)] = Field(
        0.25, description="Seconds between flushes to disk (at most this much is lost on a crash)."
    )


class ControlSettings(_Section):
    """MQTT control plane: commands in, telemetry out (see ``brainharmonic_rt.control``)."""

    enabled: bool = Field(default=False, description="Connect to an MQTT broker for commands and telemetry.")
    host: str = Field(default="127.0.0.1", min_length=1, max_length=253, description="Broker host name or address.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(default=1883, description="Broker port (8883 for TLS).")
    instance: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Name of this instance; topics live under brainharmonic/<instance>/.",
    )
    username: str | None = Field(default=None, max_length=256, description="Broker user name (none: anonymous).")
    password: SecretStr | None = Field(
        default=None, description="Broker password; prefer the environment (BRAINHARMONIC_CONTROL__PASSWORD)."
    )
    tls_ca: Path | None = Field(default=None, description="CA certificate (PEM) of the broker; enables TLS.")
    tls_cert: Path | None = Field(default=None, description="Client certificate (PEM) for mutual TLS; needs tls_key.")
    tls_key: Path | None = Field(default=None, description="Client private key (PEM) for mutual TLS; needs tls_cert.")
    telemetry_rate_hz: Annotated[float, Field(gt=0, le=20)] = Field(
        default=10.0, description="Most telemetry messages per second per kind (brain, music, health)."
    )
    max_payload: Annotated[int, Field(ge=256, le=1_048_576)] = Field(
        default=4096, description="Largest command payload in bytes; larger ones are rejected."
    )
    offline_buffer: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=64, description="Telemetry messages kept per kind while the broker is away (oldest dropped)."
    )
    keepalive: Annotated[int, Field(ge=5, le=3600)] = Field(
        default=15, description="Seconds between pings; a dead link is noticed after about 1.5 times this."
    )
    reconnect_min: Annotated[float, Field(gt=0, le=60)] = Field(default=0.5, description="First reconnect delay (s).")
    reconnect_max: Annotated[float, Field(gt=0, le=600)] = Field(
        default=30.0, description="Longest reconnect delay (s); the delay doubles up to this."
    )
    # Multi-performer sync (see brainharmonic_rt.control.sync).
    lead: bool = Field(default=False, description="Publish this instance's beat clock for followers (sync/beat).")
    follow: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Instance whose beat clock (tempo, grid phase, key, chords) this one follows.",
    )
    takeover: bool = Field(
        default=False,
        description="When the followed leader is lost, the follower with the lowest instance name leads the "
        "others; otherwise each follower keeps time alone.",
    )
    sync_lost_after: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.5, description="Seconds without a beat message after which a leader counts as lost."
    )
    sync_smoothing: Annotated[float, Field(gt=0, le=30)] = Field(
        default=1.0, description="Seconds over which a follower closes a small phase error (large ones snap)."
    )
    sync_max_adjust: Annotated[float, Field(gt=0, le=0.5)] = Field(
        default=0.05, description="Largest tempo nudge (fraction) a follower uses to close a phase error."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ControlSettings:
        if self.follow is not None and self.follow == self.instance:
            raise ValueError(f"control.follow names this instance itself ({self.instance!r}); name the leader")
        if self.reconnect_min > self.reconnect_max:
            raise ValueError(
                f"reconnect_min ({self.reconnect_min} s) must not exceed reconnect_max ({self.reconnect_max} s)"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together (client certificate and its key)")
        if self.tls_cert is not None and self.tls_ca is None:
            raise ValueError("tls_cert needs tls_ca (the CA that signed the broker's certificate)")
        if self.enabled and self.username is not None and self.password is None:
            raise ValueError(
                "control.username is set but control.password is not; set BRAINHARMONIC_CONTROL__PASSWORD "
                "(or remove username for a broker without passwords)"
            )
        return self


def split_host_port(text: str, default_host: str | None = None) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"[::1]:PORT"`` or (with ``default_host``) ``"PORT"`` → (host, port).

    Raises ValueError saying what is wrong when the text is not such an address.
    """
    t = text.strip()
    host, sep, port = t.rpartition(":")
    if not sep:
        host, port = ("", t) if t.isdigit() else (t, "")
    host = host.strip().removeprefix("[").removesuffix("]")
    if not host:
        if default_host is None:
            raise ValueError(f"{text!r} has no host; write HOST:PORT, e.g. 127.0.0.1:9000")
        host = default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} has no port number 0-65535; write HOST:PORT, e.g. 127.0.0.1:9000")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebSettings(_Section):
    """The web page and its API (``run --web [HOST:]PORT``): see the live state, steer the music."""

    enabled: bool = Field(False, description="Serve the page, /api/state, /api/cmd and /ws.")
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=253,
        description="Address to bind; anything but loopback (127.0.0.1, ::1, localhost) needs a token.",
    )
    port: Annotated[int, Field(ge=0, le=65535)] = Field(8080, description="TCP port (0 = any free port).")
    token: SecretStr | None = Field(
        None,
        description="Shared secret a client must present (?token=, a cookie, or Authorization: Bearer); prefer "
        "the environment (BRAINHARMONIC_WEB__TOKEN).",
    )
    readonly: bool = Field(False, description="Show the state without controls; commands are refused.")
    rate_hz: Annotated[float, Field(gt=0, le=20)] = Field(10.0, description="Live state frames per second on /ws.")
    commands_per_second: Annotated[float, Field(gt=0, le=100)] = Field(
        5.0, description="Sustained commands per second per client address (more are refused)."
    )
    command_burst: Annotated[int, Field(ge=1, le=100)] = Field(
        10, description="Commands a client may send at once before the rate limit applies."
    )
    unacked: Annotated[int, Field(ge=1, le=64)] = Field(
        4, description="Frames a websocket client may be behind (unacknowledged) before it is sent no more."
    )
    stall_timeout: Annotated[float, Field(gt=0, le=120)] = Field(
        5.0, description="Seconds without an acknowledgement after which a websocket client is dropped."
    )
    max_clients: Annotated[int, Field(ge=1, le=1000)] = Field(64, description="Most websocket clients at once.")
    history: Annotated[float, Field(gt=0, le=120)] = Field(
        20.0, description="Seconds of played notes and brain tokens kept for the page's piano roll and timeline."
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Extra browser origins (scheme://host:port) allowed to open /ws and send commands; the "
        "page's own origin always is.",
    )

    @model_validator(mode="after")
    def _safe(self) -> WebSettings:
        if self.enabled and not is_loopback(self.host) and self.token is None:
            raise ValueError(
                f"web.host {self.host!r} is reachable from other machines, so the page needs a token; set "
                "BRAINHARMONIC_WEB__TOKEN (or [web] token), or bind 127.0.0.1"
            )
        if self.token is not None and len(self.token.get_secret_value()) < 8:
            raise ValueError("web.token is shorter than 8 characters; use a longer secret")
        return self


class OscSettings(_Section):
    """Open Sound Control: brain, notes and beats out to visual tools; Muse / Mind Monitor EEG in."""

    targets: list[str] = Field(
        default_factory=list,
        description="Where OSC goes: HOST:PORT entries (UDP; several allowed), e.g. ['127.0.0.1:9000'].",
    )
    muse_elements: bool = Field(
        True, description="Also send Mind Monitor's /muse/elements/<band>_absolute, so existing patches work."
    )
    listen: str | None = Field(
        None,
        description="Read EEG from Muse / Mind Monitor /muse/eeg messages on this UDP [HOST:]PORT (HOST defaults "
        "to 0.0.0.0: the phone sends from the network).",
    )
    in_rate: Annotated[float, Field(ge=64, le=2048)] = Field(
        256.0, description="Sampling rate (Hz) of the incoming /muse/eeg messages (a Muse: 256)."
    )

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        for t in v:
            split_host_port(t)
        return v

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is not None:
            split_host_port(v, default_host="0.0.0.0")
        return v


class EncoderSettings(_Section):
    """The learned encoders used in ``learned`` mode (EEG: ``brain.encoder``; fMRI inputs: ``brain.fmri_encoder``)."""

    model: Path | None = Field(
        None, description="ONNX encoder to load; none = models/encoder.onnx shipped with the project."
    )
    fmri_model: Path | None = Field(
        None, description="ONNX fMRI encoder for fMRI inputs; none = models/fmri_encoder.onnx shipped with the project."
    )
    threads: Annotated[int, Field(ge=1, le=64)] = Field(1, description="onnxruntime intra-op threads.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = CUDA when onnxruntime offers it, else CPU."
    )


class GeneratorSettings(_Section):
    """The learned note generator used in ``learned`` mode (see ``brainharmonic_rt.music.learned``)."""

    model: Path | None = Field(
        None,
        description="ONNX model of learned mode, chosen by its kind: an ensemble model (voices that hear each "
        "other) or a per-instrument note generator; none = models/ensemble.onnx, else models/generator.onnx.",
    )
    latent_map: Path | None = Field(
        None,
        description="Brain → music latent map (.npz); none = the map shipped for the model "
        "(models/ensemble_map.npz or models/latent_map.npz).",
    )
    temperature: Annotated[float, Field(ge=0, le=5)] = Field(
        1.0, description="Sampling temperature (0 = always the most likely token)."
    )
    top_p: Annotated[float, Field(gt=0, le=1)] = Field(0.95, description="Nucleus sampling: keep this much mass.")
    groove: Annotated[float, Field(ge=0, le=20)] = Field(
        1.5,
        description=(
            "Nudge (nats) towards onsets on the previous bar's positions, so rhythms repeat (0 = off); "
            "more holds the groove but lets the brain move the rhythm less."
        ),
    )
    scale_lock: bool = Field(True, description="Forbid pitches outside music.key / music.scale.")
    threads: Annotated[int, Field(ge=1, le=64)] = Field(1, description="onnxruntime intra-op threads.")
    device: Literal["auto", "cpu", "cuda"] = Field("cpu", description="auto = CUDA when present, else CPU.")


class Settings(BaseSettings):
    """All settings. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    stream: StreamSettings = Field(default_factory=StreamSettings)
    board: BoardSettings = Field(default_factory=BoardSettings)
    signal: SignalSettings = Field(default_factory=SignalSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings)
    bands: BandSettings = Field(default_factory=BandSettings)
    music: MusicSettings = Field(default_factory=MusicSettings)
    harmony: HarmonySettings = Field(default_factory=HarmonySettings)
    gestures: GestureSettings = Field(default_factory=GestureSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    link: LinkSettings = Field(default_factory=LinkSettings)
    record: RecordSettings = Field(default_factory=RecordSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    osc: OscSettings = Field(default_factory=OscSettings)
    encoder: EncoderSettings = Field(default_factory=EncoderSettings)
    generator: GeneratorSettings = Field(default_factory=GeneratorSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: command line, then environment, then the TOML file, then defaults.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def _describe(err: Any, config_file: Path | None) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()))
    env = ENV_PREFIX + "__".join(str(p) for p in err.get("loc", ()) if not isinstance(p, int)).upper()
    where = f"{config_file}, " if config_file else ""
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        where = where.removesuffix(", ") or "the configuration"
        return f"Unknown setting '{loc}'; remove it from {where} (`brainharmonic config --show` lists the valid keys)."
    return f"Invalid setting '{loc}'{shown}: {msg}. Fix it in {where}${env} or the command line."


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Resolve settings from all layers; raise :class:`ConfigError` naming the bad field.

    ``overrides`` are nested dicts from the command line, e.g. ``music={"tempo": 90}``.
    """
    path = Path(config_file) if config_file is not None else None
    _check_environment()
    if path is not None:
        if path.is_dir():
            raise ConfigError(f"Config path {path} is a folder, not a file; pass a TOML file to --config.")
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist; pass an existing TOML file to --config.")
        try:
            with path.open("rb") as fh:
                tomllib.load(fh)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Config file {path} is not valid TOML ({exc}); fix the syntax.") from None

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        return Settings.model_validate(_FromFile(**overrides).model_dump(exclude_unset=True))
    except ValidationError as exc:
        raise ConfigError(" ".join(_describe(e, path) for e in exc.errors())) from None


#: Variables with our prefix that are not settings (read elsewhere: the data lookup, tests).
NOT_SETTINGS = frozenset({"BRAINHARMONIC_DATA", "BRAINHARMONIC_EEGMAT_URL", "BRAINHARMONIC_NO_DOWNLOAD"})


def _check_environment() -> None:
    """Refuse ``BRAINHARMONIC_<SECTION>__…`` variables whose section does not exist (a typo would be ignored)."""
    sections = set(Settings.model_fields)
    for name in sorted(os.environ):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in NOT_SETTINGS:
            continue
        section = name[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if section not in sections:
            raise ConfigError(
                f"Environment variable {name} names no settings section '{section}'; the sections are "
                f"{', '.join(sorted(sections))} (e.g. {ENV_PREFIX}MUSIC__TEMPO=90): fix or unset it."
            )


def settings_to_toml(settings: Settings) -> str:
    """Render resolved settings as TOML (for `config --show` and session folders)."""
    return _toml_dump(settings.model_dump(mode="json"))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def _toml_dump(data: dict[str, Any], prefix: str = "") -> str:
    scalars, tables = [], []
    for k, v in data.items():
        key = k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)
        if isinstance(v, dict):
            tables.append((key, v))
        elif v is None:
            scalars.append(f"# {key} = (not set)")
        else:
            scalars.append(f"{key} = {_toml_value(v)}")
    out = []
    if scalars:
        if prefix:
            out.append(f"[{prefix}]")
        out.extend(scalars)
        out.append("")
    for key, v in tables:
        out.append(_toml_dump(v, f"{prefix}.{key}" if prefix else key))
    return "\n".join(out)
