"""The ensemble (instruments per group) and the classic composer (band powers → notes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from brainharmonic_rt.config import InstrumentSettings, MusicSettings, load_settings
from brainharmonic_rt.errors import ConfigError
from brainharmonic_rt.events import BrainState, GroupState, Note
from brainharmonic_rt.music.classic import ClassicComposer
from brainharmonic_rt.music.ensemble import resolve_instruments
from brainharmonic_rt.music.scales import pitch_classes

REGIONS = ["frontal", "central", "temporal", "parietal", "occipital"]
HOP = 0.25

ZFn = Callable[[int, str], dict[str, float]]


def _state(i: int, names: list[str], z: ZFn, calibrating: bool = False) -> BrainState:
    groups = tuple(GroupState(g, {"theta": 0.0, "alpha": 0.0, "beta": 0.0}, z(i, g), 4) for g in names)
    return BrainState(index=i, t_end=(i + 1) * HOP, stamp=0.0, groups=groups, calibrating=calibrating)


def _run(
    music: MusicSettings,
    z: ZFn,
    n: int = 240,
    names: list[str] = REGIONS,
    calibrating: bool = False,
    composer: ClassicComposer | None = None,
) -> list[Note]:
    comp = composer or ClassicComposer(resolve_instruments(names, music), music)
    notes: list[Note] = []
    for i in range(n):
        notes += comp.compose(_state(i, names, z, calibrating), i * HOP, (i + 1) * HOP)
    return notes


def _const(**z: float) -> ZFn:
    return lambda i, g: dict(z)


def _walk(seed: int) -> ZFn:
    """A random walk of z-scores per group, clipped to ±4 like the brain stage's output."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 0.4, size=(2000, len(REGIONS), 3)).cumsum(axis=0).clip(-4, 4)
    return lambda i, g: dict(zip(("theta", "alpha", "beta"), steps[i, REGIONS.index(g)].tolist(), strict=True))


# ----------------------------------------------------------------------------- ensemble


def test_region_defaults_cover_the_band_with_distinct_channels() -> None:
    inst = resolve_instruments(REGIONS, MusicSettings())
    roles = {g: i.role for g, i in inst.items()}
    assert roles == {
        "frontal": "melody",
        "central": "harmony",
        "temporal": "bass",
        "parietal": "texture",
        "occipital": "melody",
    }
    channels = [i.channel for i in inst.values()]
    assert len(set(channels)) == len(channels) and 9 not in channels
    assert inst["temporal"].high <= 52, "the bass plays in a low register"
    assert len({i.program for i in inst.values()}) == len(inst), "each region sounds different"


def test_fallback_groups_get_bass_harmony_melody_texture() -> None:
    names = [f"group{i}" for i in range(1, 7)]
    inst = resolve_instruments(names, MusicSettings())
    assert [inst[n].role for n in names[:4]] == ["bass", "harmony", "melody", "texture"]
    channels = [i.channel for i in inst.values()]
    assert len(set(channels)) == 6 and 9 not in channels


def test_fifteen_groups_fit_sixteen_do_not() -> None:
    inst = resolve_instruments([f"group{i}" for i in range(15)], MusicSettings())
    assert sorted(i.channel for i in inst.values()) == [c for c in range(16) if c != 9]
    with pytest.raises(ConfigError, match=r"gets no MIDI channel.*merge groups"):
        resolve_instruments([f"group{i}" for i in range(16)], MusicSettings())


def test_user_entries_override_only_the_fields_they_set(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[music.instruments.frontal]\nprogram = 0\n\n[music.instruments.temporal]\nchannel = 0\n")
    inst = resolve_instruments(REGIONS, load_settings(cfg).music)
    assert inst["frontal"].program == 0
    assert inst["frontal"].role == "melody" and inst["frontal"].low == 60, "other fields keep the region default"
    assert inst["temporal"].channel == 0 and inst["temporal"].role == "bass"
    assert inst["frontal"].channel != 0, "defaults move out of the way of a user's channel"
    channels = [i.channel for i in inst.values()]
    assert len(set(channels)) == len(channels)


def test_changing_the_role_brings_the_roles_register() -> None:
    music = MusicSettings(instruments={"frontal": InstrumentSettings(role="bass")})
    inst = resolve_instruments(REGIONS, music)
    assert inst["frontal"].role == "bass" and inst["frontal"].high <= 52


def test_percussion_role_goes_to_channel_ten() -> None:
    music = MusicSettings(instruments={"occipital": InstrumentSettings(role="percussion")})
    assert resolve_instruments(REGIONS, music)["occipital"].channel == 9


def test_entry_for_a_missing_group_names_it_and_lists_the_groups() -> None:
    music = MusicSettings(instruments={"frontl": InstrumentSettings(program=3)})
    with pytest.raises(ConfigError, match=r"'frontl', which does not exist; the groups are: frontal, central"):
        resolve_instruments(REGIONS, music)


def test_bad_channel_choices_are_config_errors() -> None:
    music = MusicSettings(instruments={"frontal": InstrumentSettings(channel=9)})
    with pytest.raises(ConfigError, match=r"channel 9 .*percussion.* role is melody"):
        resolve_instruments(REGIONS, music)
    same = {"frontal": InstrumentSettings(channel=3), "central": InstrumentSettings(channel=3)}
    with pytest.raises(ConfigError, match="'frontal' and 'central' share MIDI channel 3 with different programs"):
        resolve_instruments(REGIONS, MusicSettings(instruments=same))
    shared = {
        "frontal": InstrumentSettings(channel=3, program=40),
        "central": InstrumentSettings(channel=3, program=40),
    }
    assert resolve_instruments(REGIONS, MusicSettings(instruments=shared))["central"].channel == 3


# ----------------------------------------------------------------------------- composer


def test_same_seed_same_notes_other_seed_other_notes() -> None:
    a = _run(MusicSettings(seed=7), _walk(1))
    b = _run(MusicSettings(seed=7), _walk(1))
    c = _run(MusicSettings(seed=8), _walk(1))
    assert len(a) > 100
    assert a == b
    assert a != c


def test_notes_are_on_the_grid_in_span_in_scale_and_in_register() -> None:
    music = MusicSettings(key="E", scale="minor_pentatonic", tempo=110, steps_per_beat=4, seed=3)
    inst = resolve_instruments(REGIONS, music)
    comp = ClassicComposer(inst, music)
    classes = set(pitch_classes("E", "minor_pentatonic"))
    z = _walk(2)
    total = 0
    for i in range(400):
        start, end = i * HOP, (i + 1) * HOP
        for n in comp.compose(_state(i, REGIONS, z), start, end):
            total += 1
            assert start - 1e-9 <= n.time < end
            step = comp.beat_at(n.time) * 4  # on the grid, also across the plan's tempo changes
            assert abs(step - round(step)) < 1e-6
            assert n.pitch % 12 in classes
            spec = inst[n.instrument]
            assert spec.low <= n.pitch <= spec.high and n.channel == spec.channel
            assert spec.velocity[0] <= n.velocity <= spec.velocity[1]
    assert total > 200


def _max_sounding(notes: list[Note]) -> int:
    """Most notes sounding at once; a retrigger of a sounding (channel, pitch) ends the old note."""
    sounding: dict[tuple[int, int], float] = {}
    peak = 0
    for n in sorted(notes, key=lambda n: (n.time, n.channel, n.pitch)):
        sounding = {k: e for k, e in sounding.items() if e > n.time + 1e-9}
        sounding[(n.channel, n.pitch)] = n.time + n.duration
        peak = max(peak, len(sounding))
    return peak


@pytest.mark.parametrize("cap", [2, 6])
def test_polyphony_never_exceeds_the_cap_and_no_instrument_starves(cap: int) -> None:
    music = MusicSettings(max_polyphony=cap, seed=5)
    notes = _run(music, _const(theta=1.0, alpha=-2.0, beta=2.5), n=800)  # dense: the cap bites
    assert _max_sounding(notes) <= cap
    per = {g: sum(n.instrument == g for n in notes) for g in REGIONS}
    assert min(per.values()) >= 0.05 * len(notes) / len(REGIONS), per


def _by_instrument(notes: list[Note]) -> dict[str, list[Note]]:
    out: dict[str, list[Note]] = {}
    for n in notes:
        out.setdefault(n.instrument, []).append(n)
    return out


def test_beta_up_is_denser_louder_higher_than_alpha_up() -> None:
    music = MusicSettings(seed=11, max_polyphony=64)
    beta = _by_instrument(_run(music, _const(theta=0.0, alpha=-1.5, beta=1.5)))
    alpha = _by_instrument(_run(music, _const(theta=0.0, alpha=1.5, beta=-1.5)))
    for g in REGIONS:
        b, a = beta[g], alpha[g]
        assert len(b) > 1.5 * len(a), (g, len(b), len(a))
        assert np.mean([n.velocity for n in b]) > np.mean([n.velocity for n in a]) + 5, g
        assert np.mean([n.pitch for n in b]) > np.mean([n.pitch for n in a]), g


def test_theta_up_gives_longer_notes() -> None:
    music = MusicSettings(seed=2, max_polyphony=64)
    long = _run(music, _const(theta=2.0, alpha=0.0, beta=0.0))
    short = _run(music, _const(theta=-2.0, alpha=0.0, beta=0.0))
    assert np.mean([n.duration for n in long]) > 1.5 * np.mean([n.duration for n in short])


def test_a_sustained_change_shows_within_seconds_despite_smoothing() -> None:
    music = MusicSettings(seed=4, max_polyphony=64, smoothing=0.75)

    def z(i: int, g: str) -> dict[str, float]:
        calm, busy = {"theta": 0.0, "alpha": 2.0, "beta": -2.0}, {"theta": 0.0, "alpha": -2.0, "beta": 2.0}
        return calm if i < 120 else busy

    notes = _run(music, z, n=240)
    calm = sum(30 * HOP <= n.time < 30 * HOP + 20 for n in notes)  # 20 s of calm, well after the start
    busy = sum(122 * HOP + 2 <= n.time < 122 * HOP + 22 for n in notes)  # 20 s beginning 2.5 s after the change
    assert busy > 2.5 * calm, (busy, calm)


def test_calibrating_is_sparser_and_softer() -> None:
    music = MusicSettings(seed=9, max_polyphony=64)
    normal = _run(music, _const(theta=0.0, alpha=0.0, beta=0.0))
    calib = _run(music, _const(theta=0.0, alpha=0.0, beta=0.0), calibrating=True)
    assert len(calib) < 0.7 * len(normal)
    assert np.mean([n.velocity for n in calib]) < np.mean([n.velocity for n in normal])


def test_muted_instrument_is_silent_and_can_be_unmuted() -> None:
    music = MusicSettings(seed=1, instruments={"parietal": InstrumentSettings(muted=True)})
    comp = ClassicComposer(resolve_instruments(REGIONS, music), music)
    z = _const(theta=0.0, alpha=-1.0, beta=1.0)
    first = _run(music, z, n=120, composer=comp)
    assert first and all(n.instrument != "parietal" for n in first)
    comp.set_muted("parietal", False)
    later = [n for i in range(120, 240) for n in comp.compose(_state(i, REGIONS, z), i * HOP, (i + 1) * HOP)]
    assert any(n.instrument == "parietal" for n in later)
    with pytest.raises(KeyError):
        comp.set_muted("nope", True)


def test_percussion_plays_the_gm_drum_map() -> None:
    music = MusicSettings(seed=3, instruments={"occipital": InstrumentSettings(role="percussion")})
    drums = [n for n in _run(music, _const(theta=0.0, alpha=0.0, beta=1.0)) if n.instrument == "occipital"]
    assert drums and {n.pitch for n in drums} <= {36, 38, 42} and {n.channel for n in drums} == {9}


def test_missing_group_in_a_state_plays_neutral_and_empty_spans_give_nothing() -> None:
    music = MusicSettings(seed=0)
    comp = ClassicComposer(resolve_instruments(REGIONS, music), music)
    state = _state(0, ["frontal"], _const(theta=0.0, alpha=0.0, beta=0.0))
    notes = [n for i in range(40) for n in comp.compose(state, i * HOP, (i + 1) * HOP)]
    assert {n.instrument for n in notes} > {"frontal"}
    assert comp.compose(state, 5.0, 5.0) == []
