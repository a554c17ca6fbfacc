"""Keys, scales and the quantiser."""

from __future__ import annotations

import typing

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from brainharmonic_rt.config import MusicSettings
from brainharmonic_rt.errors import ConfigError
from brainharmonic_rt.music.scales import KEYS, SCALES, pitch_classes, quantize, scale_pitches


def test_every_configurable_key_and_scale_is_known() -> None:
    fields = MusicSettings.model_fields
    assert set(typing.get_args(fields["scale"].annotation)) == set(SCALES)
    assert set(typing.get_args(fields["key"].annotation)) == set(KEYS)


@pytest.mark.parametrize(
    ("key", "scale", "low", "high", "expected"),
    [
        ("D", "dorian", 60, 72, [60, 62, 64, 65, 67, 69, 71, 72]),  # D dorian has C major's notes
        ("A", "minor_pentatonic", 57, 69, [57, 60, 62, 64, 67, 69]),
        ("Eb", "major", 62, 68, [62, 63, 65, 67, 68]),
        ("C", "blues", 60, 67, [60, 63, 65, 66, 67]),
        ("G", "mixolydian", 65, 67, [65, 67]),
    ],
)
def test_scale_pitches_by_hand(key: str, scale: str, low: int, high: int, expected: list[int]) -> None:
    got = scale_pitches(key, scale, low, high)
    assert got.tolist() == expected
    assert got.dtype == np.int64


def test_enharmonic_keys_agree() -> None:
    assert pitch_classes("C#", "minor") == pitch_classes("Db", "minor")
    assert pitch_classes("A#", "dorian") == pitch_classes("Bb", "dorian")


def test_register_without_scale_notes_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"register 61\.\.61 holds no note of C major; widen"):
        scale_pitches("C", "major", 61, 61)


def test_unknown_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="Unknown scale 'lydian'; use one of major"):
        scale_pitches("C", "lydian", 60, 72)
    with pytest.raises(ConfigError, match="Unknown key 'H'"):
        scale_pitches("H", "major", 60, 72)


def test_quantize_nearest_ties_down_and_clamps() -> None:
    allowed = scale_pitches("C", "major", 60, 72)
    assert quantize(61.0, allowed) == 60  # tie between 60 and 62 goes down
    assert quantize(61.2, allowed) == 62
    assert quantize(65.4, allowed) == 65
    assert quantize(10.0, allowed) == 60
    assert quantize(120.0, allowed) == 72
    with pytest.raises(ValueError, match="at least one"):
        quantize(60.0, np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="finite"):
        quantize(float("nan"), allowed)


@given(
    pitch=st.floats(min_value=-20, max_value=150, allow_nan=False),
    key=st.sampled_from(sorted(KEYS)),
    scale=st.sampled_from(sorted(SCALES)),
)
def test_quantize_is_in_scale_and_nearest(pitch: float, key: str, scale: str) -> None:
    allowed = scale_pitches(key, scale, 36, 96)
    q = quantize(pitch, allowed)
    assert q in allowed.tolist()
    assert q % 12 in pitch_classes(key, scale)
    assert abs(q - pitch) <= float(np.min(np.abs(allowed - pitch))) + 1e-9
