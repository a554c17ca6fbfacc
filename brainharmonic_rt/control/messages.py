"""What travels over MQTT: command, reply and telemetry payloads (JSON), validated by pydantic.

Commands arrive on ``brainharmonic/<instance>/cmd`` as one JSON object whose ``cmd`` field picks
the kind (a discriminated union). Every model forbids unknown fields, is strict about types (no
``"120"`` for 120, no NaN) and checks ranges, so a command either means exactly one thing or is
rejected with a :class:`CommandError` that names the field and the reason and changes nothing.

Telemetry payloads are state snapshots (the latest key, the notes sounding now), not deltas: the
control plane coalesces them to a bounded rate, so a consumer may miss intermediate messages.

Multi-performer sync uses :class:`SyncBeat` on ``brainharmonic/<instance>/sync/beat``: each
leading or following instance publishes its latest composed beat (index, tempo, key, chord plan,
monotonic time of the beat on its own clock); followers align their music clock to it.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import ErrorDetails

from ..config import KeyName, MidiNote, ModeName, ScaleName
from ..errors import BrainharmonicError
from ..events import BrainState

#: Instrument (channel-group) names: what ``[signal.groups]`` and the region grouping produce.
InstrumentName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
#: Client-chosen correlation id, echoed in the reply so a sender can match replies to commands.
CommandId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
_Finite = Annotated[float, Field(allow_inf_nan=False)]


class CommandError(BrainharmonicError):
    """A command was malformed, out of range or refused; nothing was changed.

    ``field`` is the offending field (``"payload"`` for the message as a whole, ``None`` when a
    handler refused without naming one); ``reason`` says what is wrong with it.
    """

    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason = reason.rstrip().removesuffix(".")
        where = f"Command field '{field}'" if field else "Command"
        super().__init__(f"{where} {reason}.")


class Payload(BaseModel):
    """Base of every MQTT payload: closed (unknown fields rejected), strict, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- commands


class _Command(Payload):
    id: CommandId | None = Field(default=None, description="Correlation id, echoed in the reply.")


class SetTempo(_Command):
    """Change the tempo (beats per minute), effective from the next beat."""

    cmd: Literal["set_tempo"]
    bpm: Annotated[float, Field(ge=20, le=300)]


class SetKey(_Command):
    """Change key and, optionally, scale (kept when absent)."""

    cmd: Literal["set_key"]
    key: KeyName
    scale: ScaleName | None = None


class Mute(_Command):
    """Silence one instrument (its sounding notes are released)."""

    cmd: Literal["mute"]
    instrument: InstrumentName


class Unmute(_Command):
    """Let a muted instrument play again."""

    cmd: Literal["unmute"]
    instrument: InstrumentName


class Solo(_Command):
    """Only this instrument plays; ``instrument: null`` ends the solo."""

    cmd: Literal["solo"]
    instrument: InstrumentName | None


class SetProgram(_Command):
    """Change an instrument's General MIDI program (0-based)."""

    cmd: Literal["set_program"]
    instrument: InstrumentName
    program: Annotated[int, Field(ge=0, le=127)]


class SetRegister(_Command):
    """Change an instrument's register: its lowest and highest MIDI note."""

    cmd: Literal["set_register"]
    instrument: InstrumentName
    low: MidiNote
    high: MidiNote

    @model_validator(mode="after")
    def _ordered(self) -> SetRegister:
        if self.low > self.high:
            # Raised as a ValueError so parse_command reports it against 'high'.
            raise ValueError(f"must not be below low ({self.low}); got {self.high}")
        return self


class SetTemperature(_Command):
    """Sampling temperature of the learned generator (lower: safer, higher: wilder)."""

    cmd: Literal["set_temperature"]
    temperature: Annotated[float, Field(gt=0, le=2)]


class SetMode(_Command):
    """Switch between classic (band powers) and learned (models) composition."""

    cmd: Literal["set_mode"]
    mode: ModeName


class Panic(_Command):
    """All notes off on every channel, now."""

    cmd: Literal["panic"]


class StartRecording(_Command):
    """Start writing a session folder under ``record.dir``; ``label`` names it."""

    cmd: Literal["start_recording"]
    label: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None = None


class StopRecording(_Command):
    """Stop writing the current session folder."""

    cmd: Literal["stop_recording"]


class ReloadConfig(_Command):
    """Re-read the configuration file the service was started with (never a path from the network)."""

    cmd: Literal["reload_config"]


Command = Annotated[
    SetTempo
    | SetKey
    | Mute
    | Unmute
    | Solo
    | SetProgram
    | SetRegister
    | SetTemperature
    | SetMode
    | Panic
    | StartRecording
    | StopRecording
    | ReloadConfig,
    Field(discriminator="cmd"),
]

#: Every command model, in the order of the union.
COMMAND_TYPES: tuple[type[_Command], ...] = (
    SetTempo,
    SetKey,
    Mute,
    Unmute,
    Solo,
    SetProgram,
    SetRegister,
    SetTemperature,
    SetMode,
    Panic,
    StartRecording,
    StopRecording,
    ReloadConfig,
)
#: Every command kind, by its ``cmd`` value.
COMMAND_KINDS: tuple[str, ...] = tuple(get_args(t.model_fields["cmd"].annotation)[0] for t in COMMAND_TYPES)
_COMMAND: TypeAdapter[Command] = TypeAdapter(Command)


def parse_command(payload: bytes, max_bytes: int) -> Command:
    """Validate one command payload (UTF-8 JSON object, at most ``max_bytes`` bytes).

    Raises :class:`CommandError` naming the first offending field and why.
    """
    if len(payload) > max_bytes:
        raise CommandError("payload", f"is {len(payload)} bytes, over the limit of {max_bytes} bytes")
    try:
        return _COMMAND.validate_json(payload)
    except ValidationError as exc:
        raise _to_command_error(exc.errors(include_url=False)[0]) from None


def _to_command_error(err: ErrorDetails) -> CommandError:
    kind, loc, msg = err["type"], err["loc"], err["msg"].removeprefix("Value error, ")
    if kind == "json_invalid":
        return CommandError("payload", f"is not valid UTF-8 JSON ({msg})")
    if kind in ("model_attributes_type", "model_type", "dict_type") and not loc:
        return CommandError("payload", 'must be a JSON object such as {"cmd": "panic"}')
    kinds = ", ".join(COMMAND_KINDS)
    if kind == "union_tag_not_found":
        return CommandError("cmd", f"is missing; use one of {kinds}")
    if kind == "union_tag_invalid":
        got = err.get("input", {}).get("cmd") if isinstance(err.get("input"), dict) else None
        return CommandError("cmd", f"is not a known command{_shown(got)}; use one of {kinds}")
    # loc = (tag, field, ...); a model-level check (SetRegister low/high) has loc = (tag,).
    field = ".".join(str(p) for p in loc[1:]) or ("high" if loc and loc[0] == "set_register" else "payload")
    if kind == "extra_forbidden":
        return CommandError(field, f"is not a field of '{loc[0]}'; remove it")
    if kind == "missing":
        return CommandError(field, f"is required by '{loc[0]}'")
    if kind == "value_error":
        return CommandError(field, msg)
    reason = msg.removeprefix("Input ") if msg.startswith("Input ") else f"is invalid: {msg}"
    return CommandError(field, f"{reason}{_shown(err.get('input'))}")


def _shown(value: Any) -> str:
    if isinstance(value, dict | list):
        return ""
    text = json.dumps(value) if isinstance(value, str | int | float | bool) or value is None else repr(value)
    return f" (got {text[:40]}{'…' if len(text) > 40 else ''})"


def peek_id(payload: bytes, max_bytes: int) -> tuple[str | None, str | None]:
    """Best-effort ``(id, cmd)`` of a rejected payload, so its error reply can be matched."""
    if len(payload) > max_bytes:
        return None, None
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(obj, dict):
        return None, None
    out = []
    for key in ("id", "cmd"):
        v = obj.get(key)
        out.append(v if isinstance(v, str) and 0 < len(v) <= 64 and v.isprintable() else None)
    return out[0], out[1]


# --------------------------------------------------------------------------- replies


def _now() -> float:
    return time.time()


class Reply(Payload):
    """Acknowledgement of an applied command (topic ``reply``)."""

    ok: Literal[True] = True
    id: str | None
    cmd: str
    result: dict[str, Any] = Field(default_factory=dict)
    ts: float = Field(default_factory=_now, description="Wall-clock time (Unix seconds).")


class ErrorReply(Payload):
    """A rejected command (topic ``error``); nothing was changed."""

    ok: Literal[False] = False
    id: str | None
    cmd: str | None
    field: str | None
    reason: str
    message: str = Field(description="One sentence for a person: the field, the reason.")
    ts: float = Field(default_factory=_now)


class Status(Payload):
    """Retained presence (topic ``status``); the broker publishes the offline one as last will."""

    state: Literal["online", "offline"]
    instance: str
    version: str
    reason: str | None = None
    ts: float = Field(default_factory=_now)


# --------------------------------------------------------------------------- telemetry


class LatentSummary(Payload):
    """A few numbers describing a latent vector (the whole vector is too big to publish at 20 Hz)."""

    dim: Annotated[int, Field(ge=0)]
    norm: _Finite
    mean: _Finite
    std: _Finite
    head: list[_Finite] = Field(default_factory=list, max_length=16, description="First values (up to 16).")

    @classmethod
    def of(cls, latent: np.ndarray, n_head: int = 8) -> LatentSummary:
        """Summarise ``latent`` : array of shape (dim,) (non-finite values count as 0)."""
        v = np.nan_to_num(np.asarray(latent, dtype=np.float64).ravel(), nan=0.0, posinf=0.0, neginf=0.0)
        if v.size == 0:
            return cls(dim=0, norm=0.0, mean=0.0, std=0.0)
        return cls(
            dim=int(v.size),
            norm=float(np.linalg.norm(v)),
            mean=float(v.mean()),
            std=float(v.std()),
            head=[float(x) for x in v[: min(n_head, 16)]],
        )


class GroupTelemetry(Payload):
    """One channel group: log10 band power and baseline z-score per band."""

    power: dict[str, float | None]
    z: dict[str, float | None]
    n_good: Annotated[int, Field(ge=0)]
    held: str = Field("", description="Artifact kind for which some channels hold their last clean powers.")


class BrainTelemetry(Payload):
    """What the brain stage said about the latest window (topic ``telemetry/brain``)."""

    index: Annotated[int, Field(ge=0)]
    t_end: float = Field(description="Session time (s) of the window's last sample.")
    calibrating: bool
    token: int | None = None
    latent: LatentSummary | None = None
    groups: dict[str, GroupTelemetry]
    bad: list[tuple[str, str]] = Field(default_factory=list, description="(channel, reason) excluded.")
    artifacts: list[tuple[str, str]] = Field(
        default_factory=list, description="(channel, kind) touched by a blink or jaw clench in this window."
    )
    ts: float = Field(default_factory=_now)

    @classmethod
    def from_state(cls, state: BrainState) -> BrainTelemetry:
        """Build from a :class:`~brainharmonic_rt.events.BrainState` (non-finite powers become null)."""
        return cls(
            index=state.index,
            t_end=float(state.t_end),
            calibrating=state.calibrating,
            token=None if state.token is None else int(state.token),
            latent=None if state.latent is None else LatentSummary.of(state.latent),
            groups={
                g.name: GroupTelemetry(
                    power={k: _finite_or_none(v) for k, v in g.power.items()},
                    z={k: _finite_or_none(v) for k, v in g.z.items()},
                    n_good=int(g.n_good),
                    held=g.held,
                )
                for g in state.groups
            },
            bad=[(str(a), str(b)) for a, b in state.bad],
            artifacts=[(str(a), str(b)) for a, b in state.artifacts],
        )


def _finite_or_none(v: float) -> float | None:
    f = float(v)
    return f if np.isfinite(f) else None


class MusicTelemetry(Payload):
    """The music now (topic ``telemetry/music``): key, chord, tempo, notes per instrument."""

    key: KeyName
    scale: ScaleName
    chord: str | None = Field(default=None, max_length=32, description="Current chord symbol, e.g. 'Dm7'.")
    tempo: Annotated[float, Field(ge=20, le=300)]
    mode: ModeName
    beat: Annotated[float, Field(ge=0)] | None = Field(default=None, description="Beats since the session start.")
    centre: KeyName | None = Field(default=None, description="Tonal centre of the harmonic plan (relative keys).")
    tonality: Literal["major", "minor"] | None = Field(default=None, description="Quality of the centre's chord.")
    level: Annotated[int, Field(ge=-1, le=1)] | None = Field(
        default=None, description="The plan's brain level: -1 calm, 0 neutral, 1 aroused."
    )
    arousal: Annotated[float, Field(ge=-1, le=1)] | None = Field(
        default=None, description="Smoothed global arousal driving the plan (alpha suppression, -1..1)."
    )
    notes: dict[str, list[MidiNote]] = Field(
        default_factory=dict, description="Instrument → MIDI pitches sounding now."
    )
    muted: list[str] = Field(default_factory=list)
    solo: str | None = None
    recording: bool = False
    ts: float = Field(default_factory=_now)


class HealthTelemetry(Payload):
    """Stream and pipeline health (topic ``telemetry/health``)."""

    connected: bool = Field(description="The EEG source is delivering samples.")
    rate_hz: Annotated[float, Field(ge=0)] = Field(description="Measured sample rate over the last seconds.")
    nominal_hz: Annotated[float, Field(ge=0)] | None = None
    dropped_samples: Annotated[int, Field(ge=0)] = 0
    dropped_windows: Annotated[int, Field(ge=0)] = 0
    reconnects: Annotated[int, Field(ge=0)] = 0
    latency_ms: dict[str, float | None] = Field(
        default_factory=dict, description="Named latency figures, e.g. 'sample_to_note_p50'."
    )
    queues: dict[str, int] = Field(default_factory=dict, description="Depth of each bounded stage queue.")
    uptime_s: Annotated[float, Field(ge=0)] = 0.0
    scheduler: dict[str, float | int | bool] = Field(
        default_factory=dict, description="MIDI scheduler counters (late notes, dispatch lateness ms)."
    )
    control: dict[str, float | int | bool | str | None] = Field(
        default_factory=dict, description="Control plane counters (published, dropped, reconnects)."
    )
    sync: dict[str, float | int | str | None] = Field(
        default_factory=dict, description="Multi-performer sync: role, reference, phase error (ms), snaps."
    )
    quality: dict[str, dict[str, float | str | None]] = Field(
        default_factory=dict,
        description="Per channel: line_noise (mains / 1-40 Hz power), range_uv, impedance (board units), verdict.",
    )
    artifacts: dict[str, int] = Field(default_factory=dict, description="Blinks and clenches detected so far.")
    notices: list[str] = Field(default_factory=list, description="One-line remarks about the input (e.g. labels).")
    guard: dict[str, float | int | bool] = Field(
        default_factory=dict,
        description="What the harmony arbiter did: 'arbiter' (on/off), sampled pitches 'checked', 'veto_rate' "
        "(share refused), 'veto_<reason>' shares (cap, clash, register, scale, chord), notes 'dropped'.",
    )
    ts: float = Field(default_factory=_now)


# --------------------------------------------------------------------------- multi-performer sync

#: Beats per bar of every instance (the classic composer's bar); bars align when beat numbers do.


class SyncBeat(Payload):
    """One beat of an instance's music clock (topic ``sync/beat``), published by leaders and followers.

    ``time`` is the beat's onset on the publisher's ``time.monotonic()`` clock (it may lie a little in
    the future: beats are published as soon as they are composed). ``clock`` names that clock (the
    Linux boot id): a follower with the same id shares it exactly; any other follower estimates the
    offset from arrival times. ``chord_plan`` lists (bar, scale degree, symbol) of the current and
    next bars, so followers change chords together with the leader.
    """

    instance: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    role: Literal["leader", "follower", "alone"]
    follows: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    beat: Annotated[int, Field(ge=0)]
    time: _Finite
    tempo: Annotated[float, Field(ge=20, le=300)]
    key: KeyName
    scale: ScaleName
    chord: str | None = Field(default=None, max_length=32)
    chord_plan: list[tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0, le=11)], str]] = Field(
        default_factory=list, max_length=8
    )
    clock: Annotated[str, Field(max_length=64)]
    sent: _Finite = Field(description="Publisher's monotonic time when it sent this message.")
    ts: float = Field(default_factory=_now)
