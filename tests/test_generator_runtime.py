"""The committed generator, latent map and encoder together: real EEG windows in, learned notes out."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from brainharmonic_rt.config import Settings
from brainharmonic_rt.events import Note
from brainharmonic_rt.music.scales import pitch_classes

MODELS = Path(__file__).resolve().parents[1] / "models"
NEEDED = ("generator.onnx", "latent_map.npz", "encoder.onnx")
pytestmark = pytest.mark.skipif(not all((MODELS / n).is_file() for n in NEEDED), reason="committed models not present")


def _render(eegmat_dir: Path, seconds: float, seed: int) -> tuple[list[tuple[float, float, list[Note]]], float]:
    from brainharmonic_rt.brain.encoder import LearnedBrain
    from brainharmonic_rt.music.ensemble import resolve_instruments
    from brainharmonic_rt.music.learned import LearnedComposer
    from brainharmonic_rt.signal import SignalChain
    from brainharmonic_rt.sources.files import open_recordings

    settings = Settings()
    settings.music.seed = seed
    src = open_recordings([eegmat_dir / "Subject00_2.edf"], seconds=seconds)
    chain = SignalChain(src.info, settings.signal)
    brain = LearnedBrain(src.info, settings.signal, settings.bands, settings.encoder)
    composer = LearnedComposer(
        resolve_instruments(list(brain.groups), settings.music), settings.music, settings.generator
    )
    spans: list[tuple[float, float, list[Note]]] = []
    done = None
    worst = 0.0
    data = src.data
    stamps = np.arange(data.shape[1]) / src.info.sfreq
    from brainharmonic_rt.events import Chunk

    for a in range(0, data.shape[1], 32):
        for w in chain.push(Chunk(np.ascontiguousarray(data[:, a : a + 32]), stamps[a : a + 32])):
            state = brain.process(w)
            end = w.t_end + settings.music.lookahead
            start = end - settings.signal.hop if done is None else max(done, end - settings.signal.hop)
            t0 = time.perf_counter()
            notes = composer.compose(state, start, end)
            worst = max(worst, time.perf_counter() - t0)
            spans.append((start, end, notes))
            done = end
    return spans, worst


def test_learned_mode_end_to_end(eegmat_dir: Path) -> None:
    spans, worst = _render(eegmat_dir, 40.0, seed=1)
    settings = Settings()
    notes = [n for *_, ns in spans for n in ns]
    assert len(notes) > 20
    pcs = set(pitch_classes(settings.music.key, settings.music.scale))
    for start, end, ns in spans:
        for n in ns:
            assert start - 1e-9 <= n.time < end
            if n.channel != 9:
                assert n.pitch % 12 in pcs
    assert worst < 0.25, f"one window's composition took {worst * 1e3:.0f} ms"
    again, _ = _render(eegmat_dir, 40.0, seed=1)
    assert [n for *_, ns in again for n in ns] == notes


def test_groove_nudge_makes_rhythms_repeat() -> None:
    """The committed generator, 16-bar pieces from prior latents: more repeated rhythm with the nudge."""
    from brainharmonic_rt.evaluation.generate import GENERATE_GROOVE, generate_notes
    from brainharmonic_rt.evaluation.music_metrics import evaluate, from_notes
    from brainharmonic_rt.music.generator import GeneratorModel

    model = GeneratorModel(MODELS / "generator.onnx")
    rng = np.random.default_rng(5)
    lat = [rng.standard_normal((16, model.latent_dim)).astype(np.float32) for _ in range(6)]

    def groove(nudge: float) -> float:
        return float(
            np.mean(
                [
                    evaluate(
                        from_notes(generate_notes(model, z, [0], bars=16, seed=i, groove=nudge), 120.0)
                    ).groove_consistency
                    for i, z in enumerate(lat)
                ]
            )
        )

    off, on = groove(0.0), groove(GENERATE_GROOVE)
    assert on > off + 0.01, (off, on)


def test_engine_keeps_session_centres_across_mode_switches(eegmat_dir: Path) -> None:
    """The centres are fed in every mode and handed to each new learned composer (live set_mode)."""
    from brainharmonic_rt.config import load_settings
    from brainharmonic_rt.events import Chunk
    from brainharmonic_rt.pipeline import Engine
    from brainharmonic_rt.sources.files import open_recordings

    src = open_recordings([eegmat_dir / "Subject00_2.edf"], seconds=40.0)
    engine = Engine(src.info, load_settings(None, music={"mode": "learned"}))
    stamps = np.arange(src.data.shape[1]) / src.info.sfreq
    calibrating = 0

    def feed(t0: float, t1: float) -> None:
        nonlocal calibrating
        a, b = int(t0 * src.info.sfreq), int(t1 * src.info.sfreq)
        for k in range(a, b, 64):
            chunk = Chunk(np.ascontiguousarray(src.data[:, k : min(k + 64, b)]), stamps[k : min(k + 64, b)])
            for w in engine.windows(chunk):
                state, _ = engine.step(w)
                calibrating += state.calibrating

    feed(0.0, 8.0)
    assert engine.composer.centres is engine.centres
    engine.set_mode("classic")  # mid-calibration: the classic composer plays, the engine keeps feeding
    feed(8.0, 28.0)
    glob = engine.centres.sources[""]
    assert calibrating > 0 and glob.n == calibrating and glob.frozen  # every calibration window counted
    mean = glob.mean.copy()
    engine.set_mode("learned")
    assert engine.composer.centres is engine.centres
    feed(28.0, 40.0)
    assert np.array_equal(engine.centres.sources[""].mean, mean)  # kept, not re-learnt after the switch
    assert any(v.latent is not None for v in engine.composer._voices)  # and the learned voices are steered
