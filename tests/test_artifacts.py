"""Blinks and jaw clenches: detected on real eegmat EEG with realistic synthetic artifacts added, kept out
of the brain state, and (with [gestures]) heard as percussion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brainharmonic_rt.brain.classic import ClassicBrain
from brainharmonic_rt.config import load_settings
from brainharmonic_rt.evaluation.artifact_sim import add_artifacts, blink_shape, score
from brainharmonic_rt.events import Chunk, SignalInfo
from brainharmonic_rt.pipeline import render
from brainharmonic_rt.signal import SignalChain
from brainharmonic_rt.sources.files import ArraySource, open_recordings

pytestmark = pytest.mark.timeout(300)
RECORDINGS = ("Subject00_1", "Subject05_1", "Subject11_1", "Subject17_1")


def _run(info: SignalInfo, data: np.ndarray, settings) -> tuple[list, list]:
    chain = SignalChain(info, settings.signal, settings.quality, settings.artifacts)
    brain = ClassicBrain(info, settings.signal, settings.bands)
    events, states = [], []
    ts = np.arange(data.shape[1]) / info.sfreq
    for a in range(0, data.shape[1], 50):
        for w in chain.push(Chunk(data[:, a : a + 50], ts[a : a + 50])):
            events.extend(w.events)
            states.append(brain.process(w))
    return events, states


def test_detection_on_synthetic_artifacts_over_real_eeg(eegmat_dir: Path) -> None:
    settings = load_settings()
    found, truth, offset = [], [], 0.0
    clean_found = 0
    for k, name in enumerate(RECORDINGS):
        src = open_recordings([eegmat_dir / f"{name}.edf"])
        data = np.asarray(src.data)
        clean_events, _ = _run(src.info, data, settings)
        clean_found += len(clean_events)
        dirty, injected = add_artifacts(data, src.info.sfreq, src.info.ch_names, seed=100 + k)
        events, _ = _run(src.info, dirty, settings)
        found += [(e.kind, e.t + offset) for e in events]
        truth += [type(e)(e.kind, e.onset + offset, e.duration, e.amplitude_uv) for e in injected]
        offset += data.shape[1] / src.info.sfreq + 100
    res = score(found, truth)
    report = "; ".join(
        f"{k}: {int(v['injected'])} injected, {int(v['detected'])} detected, precision {v['precision']:.3f}, "
        f"recall {v['recall']:.3f}"
        for k, v in res.items()
    )
    print(f"\n{report}; clean recordings: {clean_found} detections in {offset / 60:.1f} min")
    assert res["blink"]["injected"] >= 30 and res["clench"]["injected"] >= 30
    assert res["blink"]["recall"] >= 0.9 and res["blink"]["precision"] >= 0.85, report
    assert res["clench"]["recall"] >= 0.85 and res["clench"]["precision"] >= 0.7, report


def test_a_blink_does_not_read_as_a_change_of_state(eegmat_dir: Path) -> None:
    src = open_recordings([eegmat_dir / "Subject03_1.edf"], seconds=60)
    info, data = src.info, np.asarray(src.data)
    sf = info.sfreq
    dirty = data.copy()
    weights = np.array([1.0 if "Fp" in n else 0.45 if n[4] == "F" else 0.05 for n in info.ch_names])
    onset = round(40 * sf)
    k = round(0.3 * sf)
    dirty[:, onset : onset + k] += np.outer(weights * 250e-6, blink_shape(k))
    on, off = load_settings(), load_settings(artifacts={"enabled": False})
    _, clean = _run(info, data, on)
    events, held = _run(info, dirty, on)
    _, unheld = _run(info, dirty, off)
    blinks = [e for e in events if e.kind == "blink"]  # (the recording has a muscle burst of its own at 52 s)
    assert len(blinks) == 1 and 40.0 <= blinks[0].t <= 40.6
    assert set(blinks[0].channels) == {n for n in info.ch_names if n.startswith("EEG F")}
    touched = [i for i, s in enumerate(held) if "blink" in s.group("frontal").held]
    # from its detection until a window length after it faded (plus the filter's ringing)
    assert touched and all(40.0 <= held[i].t_end <= 43.5 for i in touched)
    assert all("blink" not in s.group("occipital").held for s in held)

    def moved(states) -> float:
        return max(abs(states[i].group("frontal").z["theta"] - clean[i].group("frontal").z["theta"]) for i in touched)

    assert moved(unheld) > 1.0, "the blink does move an unprotected brain state"
    assert moved(held) < 0.5 * moved(unheld)
    for s in held:
        for g in s.groups:
            assert all(np.isfinite(v) for v in (*g.z.values(), *g.power.values()))


def test_headsets_without_frontal_or_temporal_channels(eegmat_dir: Path) -> None:
    src = open_recordings([eegmat_dir / "Subject00_1.edf"], seconds=60)
    keep = [i for i, n in enumerate(src.info.ch_names) if n[4] in "CPO"]  # central, parietal, occipital only
    info = SignalInfo("no-front", src.info.sfreq, tuple(src.info.ch_names[i] for i in keep))
    data = np.asarray(src.data)[keep]
    dirty, injected = add_artifacts(data, info.sfreq, info.ch_names, seed=3)
    events, _ = _run(info, dirty, load_settings())
    assert not [e for e in events if e.kind == "blink"], "no frontal channels: no blink is looked for"
    # Without temporal channels every channel is checked for muscle bursts (no dominance test).
    assert [e for e in events if e.kind == "clench"] or not [e for e in injected if e.kind == "clench"]


async def test_gestures_play_percussion_when_enabled(eegmat_dir: Path) -> None:
    src = open_recordings([eegmat_dir / "Subject00_1.edf"], seconds=90)
    dirty, _ = add_artifacts(np.asarray(src.data), src.info.sfreq, src.info.ch_names, seed=5)
    quiet = await render(load_settings(), ArraySource(src.info, dirty))
    assert not [n for n in quiet.notes if n.instrument == "gestures"]
    settings = load_settings(gestures={"enabled": True, "blink": "cymbal", "clench": "fill"})
    result = await render(settings, ArraySource(src.info, dirty))
    gestures = [n for n in result.notes if n.instrument == "gestures"]
    events = [e for s in result.states for e in s.events]
    assert events and gestures
    assert all(n.channel == 9 for n in gestures)
    crashes = [n for n in gestures if n.pitch == 49]
    snares = [n for n in gestures if n.pitch == 38]
    assert len(crashes) == sum(e.kind == "blink" for e in events)
    assert len(snares) == 4 * sum(e.kind == "clench" for e in events)
    for e in events:  # each gesture starts within a hop and a lookahead of the detection, on the grid
        assert any(0 <= n.time - e.t <= 0.25 + 0.1 + 0.2 for n in gestures)
    # The rest of the music is the same: gestures add, they do not disturb the composer.
    others = [n for n in result.notes if n.instrument != "gestures"]
    assert others == quiet.notes
