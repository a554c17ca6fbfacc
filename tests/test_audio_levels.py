"""Gain staging and loudness, on real FluidSynth renders of real EEG ensembles: the live synth's staged
gain keeps the loudest ensemble below -1 dBFS, WAV renders sit at -16 LUFS (ITU-R BS.1770, measured
independently with pyloudnorm), peak at or below -1 dBFS and start and end without a click."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest

from brainharmonic_rt.config import DEFAULT_SOUNDFONT, InstrumentSettings, load_settings
from brainharmonic_rt.events import Note
from brainharmonic_rt.pipeline import render
from brainharmonic_rt.sinks.audio import limit, normalise_loudness, staged_gain, stress_messages
from brainharmonic_rt.sinks.fluid import Synth, apply, find_soundfont
from brainharmonic_rt.sinks.scheduler import events_from_notes
from brainharmonic_rt.sinks.synth import render_wav
from brainharmonic_rt.sources.files import open_recordings

SOUNDFONTS = [p for p in (find_soundfont(), Path(DEFAULT_SOUNDFONT)) if p is not None and p.is_file()]


@pytest.fixture(scope="module")
def ensemble(eegmat_dir: Path):
    """60 s of a real eegmat subject through the classic pipeline: (notes, instruments)."""
    settings = load_settings()
    src = open_recordings([eegmat_dir / "Subject03_2.edf"], seconds=60.0)
    result = asyncio.run(render(settings, src))
    assert len(result.notes) > 100
    return result.notes, result.instruments


def _dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(np.abs(x).max()))


def _play(synth: Synth, events, tail: float = 1.5) -> np.ndarray:
    sr = synth.sample_rate()
    blocks, cursor = [], 0
    for t, msg in events:
        target = round(t * sr)
        if target > cursor:
            blocks.append(synth.render(target - cursor))
            cursor = target
        apply(synth, msg)
    blocks.append(synth.render(round(tail * sr)))
    return np.concatenate(blocks)


@pytest.mark.parametrize("soundfont", SOUNDFONTS, ids=lambda p: p.name)
def test_staged_gain_keeps_the_loudest_ensemble_below_minus_1_dbfs(soundfont: Path, ensemble) -> None:
    notes, instruments = ensemble
    probe = Synth(soundfont, sample_rate=48000.0, gain=1.0)
    gain, stress_db = staged_gain(probe, instruments, 6, -1.0)
    probe.delete()
    assert stress_db == pytest.approx(-4.0, abs=0.01)  # the margin below the target, by construction
    # What the live synth plays at that gain: the real ensemble ...
    synth = Synth(soundfont, sample_rate=48000.0, gain=gain)
    real = _play(synth, events_from_notes(notes, instruments))
    # ... and a harder one: random chords at the polyphony cap (6 sounding), every note at its top velocity,
    # a new chord every sixteenth at 140 BPM with GM drums on every beat.
    rng = np.random.default_rng(1)
    insts = list(instruments.values())
    dense: list[Note] = []
    step = 60.0 / 140.0 / 4
    for k in range(160):
        for _ in range(6):
            inst = insts[int(rng.integers(len(insts)))]
            pitch = int(rng.integers(inst.low, inst.high + 1))
            dense.append(Note(k * step, step * 0.95, pitch, inst.velocity[1], inst.channel, "x"))
        if k % 4 == 0:
            dense += [Note(k * step, 0.1, d, 127, 9, "drums") for d in (36, 38, 49)]
    hard = _play(synth, events_from_notes(dense, instruments))
    synth.delete()
    assert _dbfs(real) <= -1.0, f"the real ensemble peaks at {_dbfs(real):.2f} dBFS"
    assert _dbfs(hard) <= -1.0, f"the dense ensemble peaks at {_dbfs(hard):.2f} dBFS"
    assert _dbfs(real) > -30.0, "staged so low that nothing is heard"


def test_stress_passage_uses_the_cap_and_every_instrument() -> None:
    insts = {
        "a": InstrumentSettings(channel=0, low=60, high=72, velocity=(40, 90)),
        "b": InstrumentSettings(channel=2, low=30, high=50, velocity=(40, 120)),
    }
    msgs = stress_messages(insts, 5, steps=8)
    assert msgs == stress_messages(insts, 5, steps=8), "seeded"
    first = [m for m in msgs if m[0] == 0.0 and m[1] == "on" and m[2] != 9]
    assert 3 <= len(first) <= 5 and {m[2] for m in first} == {0, 2}  # (a repeated pitch merges)
    assert all(m[4] == (90 if m[2] == 0 else 120) for m in msgs if m[1] == "on" and m[2] != 9)
    assert all(60 <= m[3] <= 72 for m in msgs if m[2] == 0) and all(30 <= m[3] <= 50 for m in msgs if m[2] == 2)
    assert {m[3] for m in msgs if m[2] == 9} == {36, 38, 49}
    sounding: dict[tuple[int, int], int] = {}
    for _, kind, ch, note, _ in msgs:  # never more than the cap sounding at once
        if ch != 9:
            sounding[(ch, note)] = sounding.get((ch, note), 0) + (1 if kind == "on" else -1)
            assert sum(v > 0 for v in sounding.values()) <= 5


def test_wav_render_is_at_minus_16_lufs_without_clipping_or_clicks(ensemble, tmp_path: Path) -> None:
    notes, instruments = ensemble
    out = render_wav(notes, instruments, tmp_path / "e.wav", sample_rate=44100)
    with wave.open(str(out)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2) / 32768.0
    lufs = pyloudnorm.Meter(rate).integrated_loudness(pcm)
    assert lufs == pytest.approx(-16.0, abs=1.0), lufs
    assert _dbfs(pcm) <= -1.0 + 0.01  # 16-bit rounding
    assert np.abs(pcm[:8]).max() < 1e-3 and np.abs(pcm[-8:]).max() < 1e-3, "starts or ends with a jump"
    edge = np.abs(np.diff(pcm[: int(0.005 * rate)], axis=0)).max()
    assert edge < 0.05, "the fade-in clicks"


def test_limiter_holds_the_ceiling_and_leaves_quiet_audio_alone() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, (48000, 2))
    x[20000:20100] *= 15.0  # a burst far over the ceiling
    y = limit(x, 48000, 10 ** (-1 / 20))
    assert np.abs(y).max() <= 10 ** (-1 / 20) + 1e-12
    assert np.array_equal(y[:15000], x[:15000]) and np.array_equal(y[26000:], x[26000:])
    quiet = x * 0.1
    assert np.array_equal(limit(quiet, 48000, 0.9), quiet)


def test_loudness_of_silence_is_left_alone() -> None:
    out, lufs = normalise_loudness(np.zeros((48000, 2)), 48000)
    assert lufs == float("-inf") and not out.any()
