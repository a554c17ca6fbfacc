"""Per-bar music features, bar labels and effect sizes on hand-made input; the ensemble benchmark's core
on real eegmat sessions (short crops) in both modes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from brainharmonic_rt.evaluation.responsiveness import (
    FEATURES,
    bar_features,
    bar_labels,
    cliffs_delta,
    spearman,
)
from brainharmonic_rt.events import Note


@dataclass(frozen=True)
class Bar:
    """The three fields of a bar record the features read (start s, tempo BPM, mode)."""

    start: float
    tempo: float
    mode: str


def test_bar_features_by_hand() -> None:
    bars = [Bar(0.0, 120.0, "major"), Bar(2.0, 60.0, "minor"), Bar(6.0, 60.0, "minor")]
    notes = [
        Note(0.0, 0.5, 60, 80, 0),
        Note(0.0, 0.5, 64, 80, 0),
        Note(0.0, 0.5, 67, 80, 0),
        Note(0.5, 0.1, 36, 60, 9),  # drum: counts for density, velocity, polyphony, voices
        Note(1.0, 0.5, 72, 100, 1),
        Note(3.0, 5.0, 48, 70, 0),  # rings on into the third bar
    ]
    x = bar_features(notes, bars)
    assert x.shape == (3, len(FEATURES))
    f = [dict(zip(FEATURES, row, strict=True)) for row in x]
    assert f[0]["density"] == pytest.approx(5 / 4)
    assert f[0]["register"] == pytest.approx((60 + 64 + 67 + 72) / 4)
    assert f[0]["pitch_range"] == 12
    assert f[0]["velocity"] == pytest.approx(80)
    assert f[0]["duration"] == pytest.approx(1.0)  # beats
    assert f[0]["polyphony_mean"] == pytest.approx((3 * 0.5 + 0.1 + 0.5) / 2.0)
    assert f[0]["polyphony_max"] == 3  # the triad has ended when the drum comes in
    assert f[0]["voices"] == 3
    assert (f[0]["tempo"], f[0]["mode"]) == (120, 1)
    assert f[1]["density"] == pytest.approx(1 / 4)
    assert (f[1]["register"], f[1]["pitch_range"], f[1]["duration"]) == (48, 0, pytest.approx(5.0))
    assert f[1]["polyphony_mean"] == pytest.approx(3 / 4)
    assert (f[1]["polyphony_max"], f[1]["voices"], f[1]["tempo"], f[1]["mode"]) == (1, 1, 60, 0)
    # a bar without onsets: nothing to measure pitch or velocity on, but the held note sounds
    assert f[2]["density"] == 0 and f[2]["voices"] == 0
    assert math.isnan(f[2]["register"]) and math.isnan(f[2]["velocity"])
    assert f[2]["polyphony_mean"] == pytest.approx(2 / 4) and f[2]["polyphony_max"] == 1


def test_a_retriggered_note_ends_for_the_bar_features() -> None:
    bars = [Bar(0.0, 120.0, "major")]
    held = bar_features([Note(0.0, 2.0, 60, 80, 0), Note(1.0, 0.5, 60, 80, 1)], bars)
    cut = bar_features([Note(0.0, 2.0, 60, 80, 0), Note(1.0, 0.5, 60, 80, 0)], bars)
    j = FEATURES.index("polyphony_max")
    assert (held[0, j], cut[0, j]) == (2, 1)


def test_bar_labels_leave_out_calibration_and_the_change_of_recording() -> None:
    starts = np.arange(0.35, 160.0, 2.5)
    bars = [Bar(float(s), 96.0, "minor") for s in starts]
    label = bar_labels(
        bars,
        np.array([0.0, 100.0]),
        np.array([100.0, 160.0]),
        lookahead=0.1,
        hop=0.25,
        window=2.0,
        calibrated_from=20.0,
        settle=2.0,
    )

    def at(t: float) -> int:
        return int(label[np.searchsorted(starts, t, side="right") - 1])

    assert at(10) == -1  # still calibrating
    assert at(50) == 0 and at(95) == 0
    assert at(100) == -1  # composed from windows that hold rest signal
    assert at(103) == -1  # settling after the change
    assert at(130) == 1
    assert label[-1] == 1  # the last bar outlasts the recording: its own signal is all task
    assert set(label[(starts > 25) & (starts < 97)]) == {0}
    assert set(label[(starts > 106)]) == {1}


def test_effect_sizes() -> None:
    assert cliffs_delta(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert cliffs_delta(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == -1.0
    assert cliffs_delta(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == 0.0
    assert math.isnan(cliffs_delta(np.array([]), np.array([1.0])))
    x = np.arange(10.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert math.isnan(spearman(x, np.ones(10)))


def test_ensemble_benchmark_core_on_short_sessions(eegmat_dir: Path) -> None:
    """What bench_ensemble.py runs, on 60 s of rest + 60 s of task: 2 subjects classic, 1 learned."""
    from brainharmonic_rt.config import load_settings
    from brainharmonic_rt.evaluation.responsiveness import render_session, summarize_mode
    from brainharmonic_rt.evaluation.sessions import discover_sessions

    sessions = discover_sessions(eegmat_dir, ["Subject00", "Subject01"])
    for mode, chosen in (("classic", sessions), ("learned", sessions[:1])):
        settings = load_settings(None, music={"mode": mode})
        renders = [render_session(s, settings, seconds=60.0) for s in chosen]
        for r in renders:
            assert r.seconds == pytest.approx(120.0, abs=1.0)
            assert len(r.bars) >= 40 and (r.label == 0).any() and (r.label == 1).any()
            assert r.features.shape == (len(r.bars), len(FEATURES))
            assert r.metrics.max_polyphony <= settings.music.max_polyphony
            assert r.metrics.instruments_active >= 3
            assert r.metrics.dissonant_share <= 0.10
            assert r.arbiter_costs.size >= len(r.bars) - 2
        s = summarize_mode(renders)
        assert s["mode"] == mode and s["bars"]["rest"] > 0 and s["bars"]["task"] > 0
        assert [m["name"] for m in s["moves"]][: len(FEATURES)] == list(FEATURES)
        if len(renders) >= 2:
            c = s["classifier"]
            assert len(c["folds"]) == 2 and 0.0 <= c["balanced_accuracy_mean"] <= 1.0
        else:
            assert "skipped" in s["classifier"]
