"""Live changes of the classic composer, the scheduler's cancel, and the beat-sync logic, without I/O.

Leader and followers here are real ClassicComposers fed with real SyncBeat JSON; only the network
is left out (the end-to-end follower test over mosquitto is in test_control_live.py).
"""

from __future__ import annotations

import math

import mido
import numpy as np
import pytest

from brainharmonic_rt.config import ControlSettings, HarmonySettings, MusicSettings
from brainharmonic_rt.control.messages import SyncBeat
from brainharmonic_rt.control.sync import SNAP_BEATS, BeatSync
from brainharmonic_rt.errors import ConfigError
from brainharmonic_rt.events import BrainState, GroupState, Note
from brainharmonic_rt.music.classic import ClassicComposer
from brainharmonic_rt.music.ensemble import resolve_instruments
from brainharmonic_rt.music.scales import pitch_classes
from brainharmonic_rt.sinks.base import MemorySink
from brainharmonic_rt.sinks.scheduler import Scheduler

NAMES = ["frontal", "central", "parietal"]
HOP = 0.25


def _composer(**music: object) -> ClassicComposer:
    """A composer whose tempo only changes when sync says so (the plan's brain-driven tempo is off)."""
    m = MusicSettings(**{"seed": 5, **music})
    return ClassicComposer(resolve_instruments(NAMES, m), m, HarmonySettings(adaptive_tempo=False))


def _state(i: int, beta: float = 1.0) -> BrainState:
    groups = tuple(GroupState(n, {}, {"theta": 0.0, "alpha": -beta, "beta": beta}, 2) for n in NAMES)
    return BrainState(index=i, t_end=(i + 1) * HOP, stamp=0.0, groups=groups, calibrating=False)


def _play(c: ClassicComposer, first: int, last: int, start: float | None = None) -> list[Note]:
    out: list[Note] = []
    for i in range(first, last):
        lo = i * HOP if start is None or i > first else start
        out += c.compose(_state(i), lo, (i + 1) * HOP)
    return out


def test_tempo_change_keeps_the_grid_phase_and_spacing() -> None:
    c = _composer(tempo=120.0)
    _play(c, 0, 20)  # up to 5.0 s
    at = 5.03
    pos = c.beat_at(at)
    c.retime(at, 80.0)
    assert c.beat_at(at) == pytest.approx(pos) and c.tempo == pytest.approx(80.0)
    notes = _play(c, 20, 60, start=at)
    grid = 60 / 80 / 4
    first_step = at + (math.ceil(pos * 4) - pos * 4) * grid
    offsets = np.array([(n.time - first_step) / grid for n in notes])
    assert len(notes) > 30 and np.allclose(offsets, np.round(offsets), atol=1e-6) and offsets.min() >= -1e-9
    assert c.time_of_beat(c.beat_at(12.345)) == pytest.approx(12.345)


def test_key_and_register_changes_validate_before_changing_anything() -> None:
    c = _composer()
    _play(c, 0, 8)
    with pytest.raises(ConfigError, match="holds no note"):
        c.set_register("frontal", 61, 61)  # C#: not in D dorian
    with pytest.raises(ConfigError, match="holds no note"):
        c.set_key("C", "pentatonic", registers={"central": (61, 61)})
    assert (c.key, c.scale) == ("D", "dorian") and c.instruments["central"].low != 61
    c.set_key("F#", "major")
    notes = _play(c, 8, 40)
    assert notes and {n.pitch % 12 for n in notes} <= set(pitch_classes("F#", "major"))
    c.set_register("frontal", 72, 76)
    assert all(72 <= n.pitch <= 76 for n in _play(c, 40, 80) if n.instrument == "frontal")


def test_solo_and_mute_silence_the_others() -> None:
    c = _composer()
    c.set_solo("central")
    assert c.silenced() == {"frontal", "parietal"}
    assert {n.instrument for n in _play(c, 0, 60)} == {"central"}
    c.set_solo(None)
    c.set_muted("central", True)
    assert "central" not in {n.instrument for n in _play(c, 60, 120)}
    with pytest.raises(KeyError):
        c.set_solo("tuba")


def test_scheduler_cancel_drops_pending_and_ends_sounding_notes() -> None:
    sink = MemorySink()
    s = Scheduler([sink], realtime=False)
    s.open()
    s.schedule([Note(0.0, 2.0, 60, 90, 0, "a"), Note(0.5, 1.0, 64, 90, 1, "b"), Note(1.0, 1.0, 62, 90, 0, "a")])
    s.advance(0.6)
    assert s.sounding() == {"a": [60], "b": [64]}
    assert s.cancel(instruments={"a"}, end_sounding=True, channels={0}) == 1
    assert s.sounding() == {"b": [64]}
    s.schedule([Note(1.2, 0.5, 65, 90, 1, "b"), Note(3.0, 0.5, 67, 90, 1, "b")])
    assert s.cancel(after=2.0) == 1
    s.advance(10.0)
    on = [(t, m.note) for t, m in sink.messages if m.type == "note_on"]
    assert on == [(0.0, 60), (0.5, 64), (1.2, 65)]
    offs = [m.note for _, m in sink.messages if m.type == "note_off"]
    assert sorted(offs) == [60, 64, 65] and offs[0] == 60  # the sounding note ended at the cancel
    assert any(m.type == "control_change" and m.control == 123 and m.channel == 0 for _, m in sink.messages)
    s.send_now(mido.Message("program_change", channel=1, program=40))
    assert sink.messages[-1][1].type == "program_change"
    s.close()


def _sync(instance: str, **kw: object) -> BeatSync:
    return BeatSync(ControlSettings(instance=instance, **kw))


def _deliver(to: BeatSync, beat: SyncBeat | None, arrived: float) -> bool:
    assert beat is not None
    return to.on_message(f"brainharmonic/{beat.instance}/sync/beat", beat.model_dump_json().encode(), arrived)


def test_follower_snaps_then_tracks_the_leader_beat_for_beat() -> None:
    leader, follower = _composer(tempo=120.0, seed=1), _composer(tempo=90.0, key="A", scale="minor", seed=2)
    lsync, fsync = _sync("lead", lead=True), _sync("band", follow="lead", sync_smoothing=1.0)
    o_l, o_f = 1000.0, 1003.37  # monotonic times of each one's music 0 (the follower started later)
    for i in range(40):
        _play(leader, i, i + 1)
        frontier_l = (i + 1) * HOP
        _deliver(fsync, lsync.beat_message(leader, frontier_l, o_l), arrived=o_l + i * HOP)
        _play(follower, i, i + 1)
        fsync.align(follower, (i + 1) * HOP, o_f, now=o_l + i * HOP)
    assert fsync.role == "follower" and fsync.snaps == 1
    assert (follower.key, follower.scale) == ("D", "dorian") and follower.tempo == pytest.approx(leader.tempo)
    for b in range(int(leader.beat_at(10.0)), int(leader.beat_at(10.0)) + 8):  # the same beats at the same moments
        assert o_f + follower.time_of_beat(b) == pytest.approx(o_l + leader.time_of_beat(b), abs=1e-6)
    # a small error is closed smoothly: tempo nudged by at most max_adjust, no snap
    at = 10.0
    follower.retime(at, 120.0, beat=follower.beat_at(at) + 0.05)
    err = fsync.align(follower, at, o_f, now=o_l + 9.9)
    assert err == pytest.approx(0.05 * 500, rel=1e-3) and fsync.snaps == 1
    assert follower.tempo == pytest.approx(120 * (1 - 0.025), rel=1e-6)  # 25 ms closed over 1 s: -2.5 %
    follower.retime(at, 120.0, beat=follower.beat_at(at) + 0.15)  # 0.2 beats off in all
    fsync.align(follower, at, o_f, now=o_l + 9.9)
    assert follower.tempo == pytest.approx(120 * (1 - 0.05), rel=1e-6) and fsync.snaps == 1  # capped at 5 %
    # a jump beyond SNAP_BEATS snaps at once
    follower.retime(at, 120.0, beat=follower.beat_at(at) + SNAP_BEATS * 2)
    fsync.align(follower, at, o_f, now=o_l + 9.9)
    assert fsync.snaps == 2 and o_f + follower.time_of_beat(40) == pytest.approx(o_l + leader.time_of_beat(40))


def test_leader_loss_keeps_time_alone_or_the_lowest_follower_takes_over() -> None:
    c = _composer(tempo=100.0)
    lead, a, b = (
        _sync("lead", lead=True),
        _sync("a", follow="lead", takeover=True),
        _sync("b", follow="lead", takeover=True),
    )
    alone = _sync("c", follow="lead", sync_lost_after=1.0)
    _play(c, 0, 4)
    beat = lead.beat_message(c, 1.0, 50.0)
    for s in (a, b, alone):
        _deliver(s, beat, arrived=50.5)
    _deliver(b, a.beat_message(c, 1.0, 50.0), arrived=50.6)
    ref = b._reference(51.0)
    assert ref is not None and ref.last.instance == "lead" and b.role == "follower"
    # the leader goes quiet: 'a' (lowest name) leads, 'b' follows 'a', 'c' (no takeover) keeps time alone
    _deliver(b, a.beat_message(c, 1.0, 50.0), arrived=52.5)
    assert a._reference(53.0) is None and a.role == "leader"
    ref = b._reference(53.0)
    assert ref is not None and ref.last.instance == "a" and b.role == "follower"
    assert alone._reference(53.0) is None and alone.role == "alone"


def test_bad_or_spoofed_sync_messages_are_ignored_and_other_clocks_are_estimated() -> None:
    c = _composer()
    f = _sync("f", follow="lead")
    assert not f.on_message("brainharmonic/lead/sync/beat", b"{not json", 1.0) and f.rejected == 1
    _play(c, 0, 4)
    beat = _sync("lead", lead=True).beat_message(c, 1.0, 10.0)
    assert beat is not None
    f.on_message("brainharmonic/other/sync/beat", beat.model_dump_json().encode(), 2.0)  # name does not match topic
    assert f.peers == {}
    other_clock = beat.model_copy(update={"clock": "elsewhere", "sent": 100.0})
    for arrived in (107.3, 107.1, 107.9):
        f.on_message("brainharmonic/lead/sync/beat", other_clock.model_dump_json().encode(), arrived)
    assert f.peers["lead"].offset(shared=False) == pytest.approx(7.1)
    assert f.peers["lead"].offset(shared=True) == 0.0
