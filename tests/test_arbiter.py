"""The harmonic plan and the arbiter: mask, clash rule, polyphony cap, hysteresis, both composers."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from brainharmonic_rt.config import GeneratorSettings, HarmonySettings, InstrumentSettings, MusicSettings
from brainharmonic_rt.evaluation.music_metrics import from_notes, simultaneity
from brainharmonic_rt.events import BrainState, GroupState, Note
from brainharmonic_rt.music.arbiter import FORBID, Arbiter
from brainharmonic_rt.music.classic import ClassicComposer
from brainharmonic_rt.music.ensemble import resolve_instruments
from brainharmonic_rt.music.harmony import BarPlan, HarmonicPlan
from brainharmonic_rt.music.scales import pitch_classes

REGIONS = ["frontal", "central", "temporal", "parietal", "occipital"]
AVOID = {1, 6, 11}
HOP = 0.25


def _state(i: int, arousal: float, names: list[str] = REGIONS, calibrating: bool = False) -> BrainState:
    """A window whose every group has beta - alpha = ``arousal`` (z units)."""
    z = {"theta": 0.0, "alpha": -arousal / 2, "beta": arousal / 2}
    groups = tuple(GroupState(n, {}, dict(z), 3) for n in names)
    return BrainState(index=i, t_end=(i + 1) * HOP, stamp=0.0, groups=groups, calibrating=calibrating)


def _bar(plan: HarmonicPlan, index: int = 0, start: float = 0.0) -> BarPlan:
    return plan.start_bar(index, start, plan.base_tempo)


def _ensemble(n_voices: int = 3, low: int = 48, high: int = 84) -> dict[str, InstrumentSettings]:
    return {f"v{i}": InstrumentSettings(channel=i, low=low, high=high) for i in range(n_voices)}


def _clashes_and_peak(notes: list[Note]) -> tuple[int, int]:
    """(strongly dissonant simultaneous pairs, most notes sounding at once), counted as `eval music` does
    (a retrigger of a sounding channel and pitch ends the old note, as the scheduler plays it)."""
    bad, _, peak = simultaneity(from_notes(notes, 60.0))
    return bad, peak


# ----------------------------------------------------------------------------- the mask


def test_strong_beats_allow_chord_tones_and_weak_beats_scale_tones_in_register() -> None:
    music = MusicSettings(key="C", scale="major")
    plan = HarmonicPlan(music)
    arb = Arbiter(_ensemble(1, 50, 70), 6)
    bar = _bar(plan)
    arb.set_bar(bar)
    strong, weak = arb.allowed(0, 0.0, True), arb.allowed(0, 0.25, False)
    assert strong.size and set(strong % 12) <= set(bar.chord_pcs) and strong.min() >= 50 and strong.max() <= 70
    assert set(weak % 12) == set(pitch_classes("C", "major")) and weak.min() >= 50 and weak.max() <= 70
    assert set(strong) < set(weak)


def test_sounding_notes_remove_clashing_pitches_from_the_mask_and_the_logit_bias() -> None:
    music = MusicSettings(key="C", scale="major")
    arb = Arbiter(_ensemble(2), 6)
    arb.set_bar(_bar(HarmonicPlan(music)))
    before = arb.allowed(1, 0.5, False)
    assert arb.admit(0, 0.0, 2.0, 64) == pytest.approx(2.0)  # E sounds in voice 0
    after = arb.allowed(1, 0.5, False)
    assert {int(p) for p in before if (p - 64) % 12 in AVOID} == {65, 77, 53}  # F against E: minor second / M7
    assert not any((p - 64) % 12 in AVOID for p in after)
    assert set(after) == {p for p in before if (p - 64) % 12 not in AVOID}
    pitch_values = np.arange(21, 109)
    arb.set_vocab(100, np.arange(pitch_values.size) + 5, pitch_values)  # pitch tokens are ids 5..92
    bias = arb.pitch_bias(1, 0.5, False)
    assert bias.shape == (100,) and np.all(bias[:5] == 0) and np.all(bias[93:] == 0)
    pitch_bias = bias[5:93]
    assert np.all(pitch_bias[np.isin(pitch_values, after)] == 0)
    assert np.all(pitch_bias[~np.isin(pitch_values, after)] <= FORBID)


def test_a_full_cap_forbids_every_pitch_so_the_generator_moves_on() -> None:
    arb = Arbiter(_ensemble(2), 2)
    arb.set_bar(_bar(HarmonicPlan(MusicSettings(key="C", scale="major"))))
    arb.set_vocab(10, np.arange(10), np.arange(55, 65))
    assert arb.admit(0, 0.0, 2.0, 60) is not None and arb.admit(0, 0.0, 2.0, 64) is not None
    assert arb.allowed(1, 1.0, False).size == 0 and np.all(arb.pitch_bias(1, 1.0, False) <= FORBID)
    assert arb.allowed(1, 2.5, False).size > 0  # after they end


def test_learned_mask_reaches_the_real_generator(tmp_path: object) -> None:
    """The learned composer decodes through onnxruntime with the arbiter's mask: no clashes, chord tones on beats."""
    from brainharmonic_rt.music.learned import LearnedComposer

    music = MusicSettings(seed=4)
    comp = LearnedComposer(resolve_instruments(REGIONS, music), music, GeneratorSettings())
    notes: list[Note] = []
    for i in range(120):  # 30 s
        notes += comp.compose(_state(i, 1.0 if i > 60 else 0.0), 1.0 + i * HOP, 1.0 + (i + 1) * HOP)
    assert len(notes) > 100 and len({n.instrument for n in notes}) >= 3
    clashes, peak = _clashes_and_peak(notes)
    assert clashes == 0 and peak <= music.max_polyphony
    bars = list(comp.plan.history)
    on_strong = 0
    for n in notes:
        beat = comp.beat_at(n.time)
        if abs(beat - round(beat)) < 1e-6 and round(beat) % 2 == 0:
            bar = next(b for b in reversed(bars) if b.start <= n.time + 1e-6)
            assert n.pitch % 12 in bar.chord_pcs, (n, bar.chord)
            on_strong += 1
    assert on_strong > 10
    # the mask steers the sampling, so admission refuses few of the notes decoded (33 of 347 + 33 at seed 4)
    assert comp.arbiter.dropped <= 0.2 * len(notes), (comp.arbiter.dropped, len(notes))
    assert len(comp.arbiter.bar_costs) >= 10


# ----------------------------------------------------------------------------- the clash rule


def test_a_clashing_note_at_the_same_onset_is_refused_and_a_later_clash_cuts_the_note_short() -> None:
    arb = Arbiter(_ensemble(2), 6)
    arb.set_bar(_bar(HarmonicPlan(MusicSettings(key="C", scale="major"))))
    assert arb.admit(0, 1.0, 1.0, 60) == pytest.approx(1.0)
    assert arb.admit(1, 1.0, 1.0, 61) is None  # minor second against a sounding C
    assert arb.admit(1, 1.0, 1.0, 66) is None  # tritone
    assert arb.admit(1, 1.0, 1.0, 71) is None  # major seventh
    assert arb.admit(1, 1.0, 1.0, 67) == pytest.approx(1.0)  # a fifth is fine
    # a note that starts earlier but would still sound when a clashing note starts ends before it
    assert arb.admit(1, 0.5, 1.0, 54) == pytest.approx(0.5)  # F#: tritone with the C starting at 1.0
    assert arb.shortened == 1 and arb.dropped == 3
    # drums never clash; the rule can be switched off
    assert arb.admit(0, 1.0, 0.1, 37, drum=True) is not None
    free = Arbiter(_ensemble(2), 6, HarmonySettings(avoid_intervals=[]))
    free.set_bar(_bar(HarmonicPlan(MusicSettings(key="C", scale="major"))))
    assert free.admit(0, 0.0, 1.0, 60) is not None and free.admit(1, 0.0, 1.0, 61) is not None


def test_classic_ensemble_never_clashes_stays_in_scale_and_under_the_cap() -> None:
    music = MusicSettings(key="A", scale="minor", seed=9, max_polyphony=5)
    comp = ClassicComposer(resolve_instruments(REGIONS, music), music)
    rng = np.random.default_rng(1)
    notes: list[Note] = []
    for i in range(800):  # 200 s of a wandering brain, calm and aroused
        notes += comp.compose(_state(i, float(2.5 * np.sin(i / 60) + rng.normal(0, 0.5))), i * HOP, (i + 1) * HOP)
    pitched = [n for n in notes if n.channel != 9]
    assert len(pitched) > 500
    clashes, peak = _clashes_and_peak(notes)
    assert clashes == 0 and peak <= 5
    assert {n.pitch % 12 for n in pitched} <= set(pitch_classes("A", "minor"))
    assert len({n.instrument for n in notes}) == 5


# ----------------------------------------------------------------------------- the cap


def test_the_cap_holds_with_a_slot_kept_for_each_active_silent_instrument() -> None:
    arb = Arbiter(_ensemble(4), 4)
    arb.set_bar(_bar(HarmonicPlan(MusicSettings(key="C", scale="major", tempo=120))))
    for v in (1, 2, 3):  # three instruments played a short note a moment ago (active, silent now)
        assert arb.admit(v, 0.0, 0.1, 60 + 7 * v % 12) is not None
    chord = [arb.admit(0, 1.0, 2.0, p) for p in (48, 52, 55, 60)]  # voice 0 wants four notes
    assert chord[0] is not None and chord[1:] == [None, None, None]  # three slots held for the others
    got = [arb.admit(v, 1.0, 2.0, 60 + 7 * v) for v in (1, 2, 3)]
    assert all(g is not None for g in got)  # each of them still gets its note
    assert arb.admit(1, 1.5, 1.0, 64) is None  # full: 4 sound
    assert arb.admit(1, 3.0, 1.0, 64) is not None  # they ended


def test_a_note_whose_tail_would_overflow_the_cap_is_cut_short() -> None:
    arb = Arbiter(_ensemble(3), 2)
    arb.set_bar(_bar(HarmonicPlan(MusicSettings(key="C", scale="major"))))
    assert arb.admit(0, 1.0, 1.0, 60) is not None
    assert arb.admit(1, 1.0, 1.0, 64) is not None
    assert arb.admit(2, 0.0, 3.0, 67) == pytest.approx(1.0)  # would be the third note at 1.0
    assert arb.admit(2, 0.9, 0.5, 72, min_duration=0.2) is None  # 0.1 s left is too short


# ----------------------------------------------------------------------------- the plan


def test_plan_follows_sustained_arousal_with_hysteresis_and_a_cadence() -> None:
    music = MusicSettings(key="D", scale="dorian", tempo=100)
    plan = HarmonicPlan(music, HarmonySettings(smoothing=1.0, min_bars=2))
    bars: list[BarPlan] = []

    def drive(n_bars: int, arousal: Callable[[int], float]) -> None:
        """``n_bars`` bars of 10 windows each; ``arousal(bar)`` is the windows' beta - alpha."""
        for _ in range(n_bars):
            b = len(bars)
            for k in range(10):
                plan.observe(_state(b * 10 + k, arousal(b)))
            t = bars[-1].start + bars[-1].duration if bars else 0.0
            bars.append(plan.start_bar(b, t, bars[-1].tempo if bars else 100.0))

    rng = np.random.default_rng(0)
    drive(40, lambda b: float(rng.normal(0, 0.3)))  # noise around zero: never leaves neutral
    assert {b.level for b in bars} == {0} and all(b.tempo == 100.0 for b in bars)
    drive(20, lambda b: 3.0)  # sustained aroused state: faster, denser, higher, relative major via V → I
    change = next(k for k, b in enumerate(bars) if b.level == 1)
    up = bars[change]
    assert up.tempo == pytest.approx(112.0) and up.density > 1 and up.register > 0
    assert (up.key, up.mode) == ("F", "major") and up.chord == "C" and bars[change + 1].chord == "F"
    assert all(b.level == 1 for b in bars[change:])
    # a calm state: slower, sparser, lower, minor centre; the level changes at most once per min_bars
    drive(40, lambda b: -3.0 if b < 80 else (0.35 if b % 2 else -0.35))
    calm = [b for b in bars[60:] if b.level == -1]
    assert calm and calm[0].tempo == pytest.approx(88.0) and calm[0].density < 1 and calm[0].mode == "minor"
    changes = [k for k in range(1, len(bars)) if bars[k].level != bars[k - 1].level]
    assert all(b - a >= 2 for a, b in itertools.pairwise(changes))
    assert all(b.chord != "Bdim" for b in bars), "triads with a tritone are never chosen"


def test_pinned_key_and_tempo_stay_put_and_a_leaders_chords_win() -> None:
    music = MusicSettings(key="C", scale="major", tempo=90)
    plan = HarmonicPlan(music, HarmonySettings(adaptive_key=False, adaptive_tempo=False, smoothing=0.0))
    plan.observe(_state(0, 4.0))
    plan.follow_chords({1: 3})
    bars = [plan.start_bar(b, b * 2.0, 90.0) for b in range(6)]
    assert all(b.tempo == 90.0 and b.key == "C" for b in bars)
    assert bars[1].chord == "F" and bars[1].level == 1
    assert plan.chord_plan() and plan.chord_plan()[0][0] == 6


def test_calibration_keeps_the_plan_neutral_and_sparse() -> None:
    plan = HarmonicPlan(MusicSettings(), HarmonySettings(smoothing=0.0))
    plan.observe(_state(0, 4.0, calibrating=True))
    bar = plan.start_bar(0, 0.0, 96.0)
    assert bar.level == 0 and bar.density == pytest.approx(0.5) and bar.tempo == 96.0


# ----------------------------------------------------------------------------- live mode switch


def test_composers_hand_over_mid_session_on_one_grid_without_clashes() -> None:
    from brainharmonic_rt.music.learned import LearnedComposer

    music = MusicSettings(seed=2)
    inst = resolve_instruments(REGIONS, music)
    classic = ClassicComposer(inst, music)
    notes: list[Note] = []
    span = lambda i: (i * HOP, (i + 1) * HOP)  # noqa: E731
    for i in range(40):
        notes += classic.compose(_state(i, 2.0), *span(i))
    learned = LearnedComposer(inst, music, GeneratorSettings())
    learned.adopt(classic, 40 * HOP)
    handover = len(notes)
    for i in range(40, 100):
        notes += learned.compose(_state(i, 2.0), *span(i))
    assert len(notes) > handover + 20 and min(n.time for n in notes[handover:]) >= 40 * HOP - 1e-9
    back = ClassicComposer(inst, music)
    back.adopt(learned, 100 * HOP)
    n_learned = len(notes)
    for i in range(100, 140):
        notes += back.compose(_state(i, 2.0), *span(i))
    assert len(notes) > n_learned + 20
    assert learned.plan is classic.plan is back.plan and learned.arbiter is back.arbiter
    for n in notes:  # one grid through both hand-overs
        step = classic.beat_at(n.time) * 4
        assert abs(step - round(step)) < 1e-6, n
    clashes, peak = _clashes_and_peak(notes)
    assert clashes == 0 and peak <= music.max_polyphony


def test_veto_counts_refusals_by_reason() -> None:
    from brainharmonic_rt.music.arbiter import guard_telemetry

    music = MusicSettings(key="C", scale="major")
    plan = HarmonicPlan(music)
    arb = Arbiter(_ensemble(2, 48, 72), 2)
    pitches = np.arange(21, 109)
    arb.set_vocab(pitches.size + 1, np.arange(1, pitches.size + 1), pitches)
    arb.set_bar(_bar(plan))
    assert arb.veto(0, 0.25, False, 62) is None  # D: in scale and register
    assert arb.veto(0, 0.25, False, 61) is not None  # C#: not in C major
    assert arb.veto(0, 0.25, False, 80) is not None  # above the register
    assert arb.admit(1, 0.25, 1.0, 64) is not None  # E sounds in the other voice
    assert arb.veto(0, 0.5, False, 65) is not None  # F against E: a minor second
    assert arb.admit(0, 0.5, 1.0, 60) is not None  # two notes sound: the cap (2) is full
    assert arb.veto(1, 0.75, False, 67) is not None
    stats = arb.veto_stats()
    assert stats["checked"] == 5 and stats["refused"] == 4 and stats["rate"] == pytest.approx(0.8)
    assert stats["by_reason"] == {"scale": 1, "register": 1, "clash": 1, "cap": 1}
    flat = guard_telemetry({"arbiter": True, "veto": stats, "dropped": arb.dropped})
    assert flat["veto_rate"] == pytest.approx(0.8) and flat["veto_clash"] == pytest.approx(0.2)
    assert guard_telemetry({}) == {}
