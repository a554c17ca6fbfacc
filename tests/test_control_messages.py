"""Command parsing and telemetry payloads (no broker needed)."""

from __future__ import annotations

import json
from typing import Any, get_args

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from brainharmonic_rt.config import ControlSettings, load_settings, settings_to_toml
from brainharmonic_rt.control.messages import (
    COMMAND_KINDS,
    COMMAND_TYPES,
    BrainTelemetry,
    Command,
    CommandError,
    HealthTelemetry,
    LatentSummary,
    MusicTelemetry,
    SetRegister,
    SetTempo,
    parse_command,
    peek_id,
)
from brainharmonic_rt.errors import BrainharmonicError, ConfigError
from brainharmonic_rt.events import BrainState, GroupState

#: One valid example per command kind.
EXAMPLES: dict[str, dict[str, Any]] = {
    "set_tempo": {"bpm": 120},
    "set_key": {"key": "F#", "scale": "minor"},
    "mute": {"instrument": "frontal"},
    "unmute": {"instrument": "frontal"},
    "solo": {"instrument": "occipital"},
    "set_program": {"instrument": "central", "program": 40},
    "set_register": {"instrument": "central", "low": 48, "high": 72},
    "set_temperature": {"temperature": 0.8},
    "set_mode": {"mode": "learned"},
    "panic": {},
    "start_recording": {"label": "take-1"},
    "stop_recording": {},
    "reload_config": {},
}

LIMIT = 4096


def _payload(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def test_examples_cover_every_kind_and_union_matches_types() -> None:
    assert set(EXAMPLES) == set(COMMAND_KINDS)
    assert tuple(get_args(get_args(Command)[0])) == COMMAND_TYPES


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_each_kind_parses_to_its_model_and_round_trips(kind: str) -> None:
    cmd = parse_command(_payload({"cmd": kind, "id": f"x-{kind}", **EXAMPLES[kind]}), LIMIT)
    assert cmd.cmd == kind
    assert cmd.id == f"x-{kind}"
    for name, value in EXAMPLES[kind].items():
        assert getattr(cmd, name) == value
    assert parse_command(cmd.model_dump_json().encode(), LIMIT) == cmd


def test_optional_fields_default() -> None:
    cmd = parse_command(b'{"cmd": "set_key", "key": "Bb"}', LIMIT)
    assert (cmd.key, cmd.scale, cmd.id) == ("Bb", None, None)  # type: ignore[union-attr]
    solo_off = parse_command(b'{"cmd": "solo", "instrument": null}', LIMIT)
    assert solo_off.instrument is None  # type: ignore[union-attr]


BAD: list[tuple[bytes, str, str]] = [
    (b"{not json", "payload", r"not valid UTF-8 JSON"),
    (b"\xff\xfe\x00", "payload", r"not valid UTF-8 JSON"),
    (b"", "payload", r"not valid UTF-8 JSON"),
    (b"[1, 2]", "payload", r"must be a JSON object"),
    (b'"panic"', "payload", r"must be a JSON object"),
    (b"[" * 3000, "payload", r"not valid UTF-8 JSON"),
    (b'{"bpm": 100}', "cmd", r"'cmd' is missing; use one of set_tempo"),
    (b'{"cmd": "explode"}', "cmd", r"not a known command \(got \"explode\"\)"),
    (b'{"cmd": 7}', "cmd", r"not a known command"),
    (b'{"cmd": "set_tempo", "bpm": 500}', "bpm", r"'bpm' should be less than or equal to 300 \(got 500\)"),
    (b'{"cmd": "set_tempo", "bpm": 19.9}', "bpm", r"greater than or equal to 20"),
    (b'{"cmd": "set_tempo", "bpm": "120"}', "bpm", r"should be a valid number \(got \"120\"\)"),
    (b'{"cmd": "set_tempo", "bpm": true}', "bpm", r"valid number"),
    (b'{"cmd": "set_tempo", "bpm": NaN}', "bpm", r"finite number"),
    (b'{"cmd": "set_tempo", "bpm": 1e999}', "bpm", r"finite number"),
    (b'{"cmd": "set_tempo"}', "bpm", r"'bpm' is required by 'set_tempo'"),
    (b'{"cmd": "set_tempo", "bpm": 90, "volume": 3}', "volume", r"'volume' is not a field of 'set_tempo'"),
    (b'{"cmd": "panic", "now": true}', "now", r"not a field of 'panic'"),
    (b'{"cmd": "set_key", "key": "H"}', "key", r"'key' should be 'C'.*\(got \"H\"\)"),
    (b'{"cmd": "set_key", "key": "C", "scale": "lydian"}', "scale", r"'scale' should be"),
    (b'{"cmd": "mute", "instrument": "a/b"}', "instrument", r"'instrument' is invalid: String should match"),
    (b'{"cmd": "mute", "instrument": ""}', "instrument", r"at least 1 character"),
    (b'{"cmd": "set_program", "instrument": "a", "program": 128}', "program", r"less than or equal to 127"),
    (b'{"cmd": "set_program", "instrument": "a", "program": 1.5}', "program", r"valid integer"),
    (
        b'{"cmd": "set_register", "instrument": "a", "low": 80, "high": 60}',
        "high",
        r"below low \(80\); got 60",
    ),
    (
        b'{"cmd": "set_register", "instrument": "a", "low": -1, "high": 60}',
        "low",
        r"greater than or equal to 0",
    ),
    (b'{"cmd": "set_temperature", "temperature": 0}', "temperature", r"greater than 0"),
    (b'{"cmd": "set_temperature", "temperature": 2.5}', "temperature", r"less than or equal to 2"),
    (b'{"cmd": "set_mode", "mode": "jazz"}', "mode", r"'classic' or 'learned'"),
    (b'{"cmd": "start_recording", "label": "../etc"}', "label", r"pattern"),
    (b'{"cmd": "panic", "id": 5}', "id", r"valid string"),
    (b'{"cmd": "panic", "id": "' + b"x" * 65 + b'"}', "id", r"at most 64 characters"),
]


@pytest.mark.parametrize(("payload", "field", "reason"), BAD)
def test_bad_payload_names_field_and_reason(payload: bytes, field: str, reason: str) -> None:
    with pytest.raises(CommandError, match=reason) as info:
        parse_command(payload, LIMIT)
    assert info.value.field == field
    message = str(info.value)
    assert message.startswith("Command field") and message.endswith(".") and "\n" not in message
    assert isinstance(info.value, BrainharmonicError)


def test_oversized_payload_rejected_before_parsing() -> None:
    payload = _payload({"cmd": "set_tempo", "bpm": 100, "id": "a"}).ljust(LIMIT + 1)
    with pytest.raises(CommandError, match=rf"'payload' is {LIMIT + 1} bytes, over the limit of {LIMIT} bytes"):
        parse_command(payload, LIMIT)
    # The same command within the limit is fine: the size, not the content, was the problem.
    assert isinstance(parse_command(payload.rstrip(), LIMIT), SetTempo)


def test_peek_id_recovers_correlation_of_rejected_commands() -> None:
    assert peek_id(b'{"cmd": "set_tempo", "bpm": 999, "id": "q1"}', LIMIT) == ("q1", "set_tempo")
    assert peek_id(b'{"cmd": 3, "id": ["x"]}', LIMIT) == (None, None)
    assert peek_id(b"\xff", LIMIT) == (None, None)
    assert peek_id(b"[" * 5000, 10_000) == (None, None)
    assert peek_id(b'{"id": "big"}'.ljust(LIMIT + 1), LIMIT) == (None, None)


def test_handler_refusal_message_is_one_sentence() -> None:
    err = CommandError(None, "'mute' was refused: no instrument 'bass' here.")
    assert str(err) == "Command 'mute' was refused: no instrument 'bass' here."


# ---------------------------------------------------------------- fuzzing the parser

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_command_like = st.fixed_dictionaries(
    {"cmd": st.sampled_from([*COMMAND_KINDS, "nope"])},
    optional={
        name: _json | st.integers(-1000, 1000) | st.sampled_from(["C", "frontal", "learned", "minor"])
        for name in (
            "bpm",
            "key",
            "scale",
            "instrument",
            "program",
            "low",
            "high",
            "temperature",
            "mode",
            "id",
        )
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | _json.map(_payload) | _command_like.map(_payload))
def test_parser_fuzz_only_ever_raises_command_error(payload: bytes) -> None:
    try:
        cmd = parse_command(payload, LIMIT)
    except CommandError as exc:
        assert exc.field and exc.reason
        return
    assert cmd.cmd in COMMAND_KINDS
    obj = json.loads(payload)
    assert set(obj) <= set(type(cmd).model_fields)  # nothing unknown slipped through


@settings(max_examples=200, deadline=None)
@given(bpm=st.floats(allow_nan=True, allow_infinity=True))
def test_tempo_range_is_exact(bpm: float) -> None:
    payload = json.dumps({"cmd": "set_tempo", "bpm": bpm}).encode()
    if 20 <= bpm <= 300:
        assert parse_command(payload, LIMIT).bpm == bpm  # type: ignore[union-attr]
    else:
        with pytest.raises(CommandError) as info:
            parse_command(payload, LIMIT)
        assert info.value.field == "bpm"


@settings(max_examples=200, deadline=None)
@given(low=st.integers(-5, 135), high=st.integers(-5, 135))
def test_register_accepts_exactly_ordered_midi_ranges(low: int, high: int) -> None:
    payload = _payload({"cmd": "set_register", "instrument": "a", "low": low, "high": high})
    if 0 <= low <= high <= 127:
        assert isinstance(parse_command(payload, LIMIT), SetRegister)
    else:
        with pytest.raises(CommandError):
            parse_command(payload, LIMIT)


# ---------------------------------------------------------------- telemetry payloads


def _state() -> BrainState:
    bands = ("theta", "alpha", "beta")
    groups = tuple(
        GroupState(
            name=name,
            power={b: -11.5 + i for i, b in enumerate(bands)},
            z={b: 0.25 * i for i, b in enumerate(bands)},
            n_good=0 if name == "frontal" else 3,
        )
        for name in ("frontal", "occipital")
    )
    latent = np.linspace(-1.0, 1.0, 32)
    return BrainState(
        index=7,
        t_end=12.5,
        stamp=100.0,
        groups=groups,
        calibrating=False,
        bad=(("Fp1", "flat"),),
        token=42,
        latent=latent,
    )


def test_brain_telemetry_from_state_is_json_and_round_trips() -> None:
    tel = BrainTelemetry.from_state(_state())
    data = json.loads(tel.model_dump_json())
    assert data["token"] == 42 and data["index"] == 7
    assert data["groups"]["frontal"]["n_good"] == 0 and data["groups"]["frontal"]["power"]["alpha"] == -10.5
    with pytest.raises(ValueError, match="non-finite power"):  # NaN never leaves the brain, let alone a browser
        GroupState("frontal", {"alpha": float("nan")}, {"alpha": 0.0}, 0)
    assert data["groups"]["occipital"]["z"] == {"theta": 0.0, "alpha": 0.25, "beta": 0.5}
    assert data["latent"]["dim"] == 32 and len(data["latent"]["head"]) == 8
    assert data["latent"]["norm"] == pytest.approx(float(np.linalg.norm(np.linspace(-1, 1, 32))))
    assert data["bad"] == [["Fp1", "flat"]]
    assert BrainTelemetry.model_validate_json(tel.model_dump_json()) == tel


def test_latent_summary_of_shapes() -> None:
    s = LatentSummary.of(np.array([[3.0, 4.0]]))
    assert (s.dim, s.norm, s.mean, s.head) == (2, 5.0, 3.5, [3.0, 4.0])
    empty = LatentSummary.of(np.zeros(0))
    assert empty.dim == 0 and empty.head == []
    assert LatentSummary.of(np.array([np.nan, np.inf])).norm == 0.0


def test_music_and_health_telemetry_validate() -> None:
    music = MusicTelemetry(
        key="D",
        scale="dorian",
        chord="Dm7",
        tempo=96.0,
        mode="classic",
        notes={"frontal": [62, 65]},
        muted=["occipital"],
    )
    assert json.loads(music.model_dump_json())["notes"] == {"frontal": [62, 65]}
    with pytest.raises(ValidationError, match="notes"):
        MusicTelemetry(key="D", scale="dorian", tempo=96.0, mode="classic", notes={"a": [128]})
    with pytest.raises(ValidationError, match="extra"):
        HealthTelemetry(connected=True, rate_hz=500.0, surprise=1)  # type: ignore[call-arg]
    health = HealthTelemetry(connected=True, rate_hz=499.8, nominal_hz=500.0, latency_ms={"sample_to_note_p99": 12.0})
    assert json.loads(health.model_dump_json())["latency_ms"] == {"sample_to_note_p99": 12.0}


# ---------------------------------------------------------------- control settings


def test_control_settings_defaults_and_limits() -> None:
    s = ControlSettings()
    assert (s.enabled, s.port, s.telemetry_rate_hz, s.max_payload) == (False, 1883, 10.0, 4096)
    with pytest.raises(ConfigError, match=r"control.telemetry_rate_hz.*less than or equal to 20"):
        load_settings(control={"telemetry_rate_hz": 50})
    with pytest.raises(ConfigError, match=r"control.instance.*'a/b'"):
        load_settings(control={"instance": "a/b"})
    with pytest.raises(ConfigError, match="reconnect_min"):
        load_settings(control={"reconnect_min": 10, "reconnect_max": 1})
    with pytest.raises(ConfigError, match="tls_cert and tls_key must be given together"):
        load_settings(control={"tls_ca": "/x/ca.pem", "tls_cert": "/x/c.pem"})
    with pytest.raises(ConfigError, match="BRAINHARMONIC_CONTROL__PASSWORD"):
        load_settings(control={"enabled": True, "username": "brainharmonic"})
    with pytest.raises(ConfigError, match=r"Unknown setting 'control.passwrd'"):
        load_settings(control={"passwrd": "x"})


def test_control_password_from_environment_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINHARMONIC_CONTROL__PASSWORD", "hunter2")
    s = load_settings(control={"enabled": True, "username": "brainharmonic"})
    assert s.control.password is not None and s.control.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in settings_to_toml(s)
