"""Causal filters, re-reference and channel health, fed chunk by chunk like a live stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from scipy import signal as sps

from brainharmonic_rt.config import SignalSettings
from brainharmonic_rt.errors import ConfigError, DataError
from brainharmonic_rt.events import Chunk, SignalInfo
from brainharmonic_rt.signal import SignalChain
from brainharmonic_rt.signal.preprocess import ChannelHealth, Preprocessor

FS = 1000.0


def _info(n: int, sfreq: float = FS, names: list[str] | None = None) -> SignalInfo:
    return SignalInfo("test", sfreq, tuple(names or [f"ch{k}" for k in range(n)]))


def _settings(**kw: Any) -> SignalSettings:
    return SignalSettings(**kw)


def _sine(freq: float, seconds: float, n_ch: int = 2, amp: float = 1.0, sfreq: float = FS) -> np.ndarray:
    t = np.arange(round(seconds * sfreq)) / sfreq
    return np.tile(amp * np.sin(2 * np.pi * freq * t), (n_ch, 1))


def _chunks(n: int, rng: np.random.Generator, lo: int = 1, hi: int = 32) -> Iterator[slice]:
    a = 0
    while a < n:
        b = min(n, a + int(rng.integers(lo, hi + 1)))
        yield slice(a, b)
        a = b


def _run(pre: Preprocessor, x: np.ndarray, size: int = 8) -> np.ndarray:
    return np.concatenate([pre.process(x[:, a : a + size]) for a in range(0, x.shape[1], size)], axis=1)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def test_alpha_sine_passes_the_default_band_pass() -> None:
    pre = Preprocessor(_info(2), _settings())
    assert [f.split()[0] for f in pre.filters] == ["band-pass", "notch"]
    out = _run(pre, _sine(10.0, 6.0))
    settled = out[:, 3000:]
    assert _rms(settled) == pytest.approx(_rms(_sine(10.0, 3.0)), rel=0.05)


def test_mains_sine_is_notched_by_more_than_20_db() -> None:
    pre = Preprocessor(_info(2), _settings(bandpass=None, notch=50.0))
    out = _run(pre, _sine(50.0, 4.0))
    gain_db = 20 * np.log10(_rms(out[:, 2000:]) / _rms(_sine(50.0, 2.0)))
    assert gain_db < -20
    # The same filter leaves 40 Hz nearly alone, so the dip is a notch, not a low-pass.
    pre40 = Preprocessor(_info(2), _settings(bandpass=None, notch=50.0))
    assert _rms(_run(pre40, _sine(40.0, 4.0))[:, 2000:]) > 0.9 * _rms(_sine(40.0, 2.0))


def test_seeded_state_avoids_a_start_step() -> None:
    # Real amplifiers deliver a large DC offset; a zero filter state would ring on it for seconds.
    offset, amp = 5e-3, 1e-5
    x = offset + _sine(10.0, 2.0, amp=amp)
    out = Preprocessor(_info(2), _settings()).process(x)
    assert np.abs(out[:, :500]).max() < 3 * amp
    unseeded = sps.sosfilt(Preprocessor(_info(2), _settings()).design.sos, x, axis=-1)
    assert np.abs(unseeded[:, :500]).max() > 100 * amp  # what the seeding prevents


@pytest.mark.parametrize("reference", ["none", "average"])
def test_chunked_filtering_equals_one_shot(reference: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 5000)) + np.arange(6)[:, None]
    one = Preprocessor(_info(6), _settings(reference=reference)).process(x)
    pre = Preprocessor(_info(6), _settings(reference=reference))
    chunked = np.concatenate([pre.process(x[:, s]) for s in _chunks(x.shape[1], rng)], axis=1)
    # The state carries everything: equal to rounding (a block is one matrix product, so where chunks cut
    # changes the order of the sums; 2e-11 seen on unit-variance data with offsets up to 5).
    np.testing.assert_allclose(chunked, one, rtol=0, atol=1e-10)


def test_nan_chunk_never_poisons_output_and_channel_recovers() -> None:
    rng = np.random.default_rng(2)
    n = 12_000
    x = rng.standard_normal((4, n)) * 1e-5 + 1e-3
    x[1, 3000:3300] = np.nan
    x[2, 3100:3105] = np.inf  # a short glitch inside a chunk
    chain = SignalChain(_info(4), _settings(reference="average"))
    windows = []
    for s in _chunks(n, rng):
        windows += chain.push(Chunk(x[:, s], np.arange(s.start, s.stop) / FS))
    assert len(windows) == 1 + (n - 2000) // 250
    assert all(np.isfinite(w.data).all() for w in windows)
    for w in windows:
        last = round(w.t_end * FS)  # index of the window's last sample
        first = last - 1999
        reported = {c for c, reason in w.bad if reason == "nan"}
        assert reported == {c for c, (a, b) in {1: (3000, 3300), 2: (3100, 3105)}.items() if first < b and last >= a}
    # Long after recovery the channel behaves like its neighbours again.
    final = windows[-1].data
    assert _rms(final[1]) == pytest.approx(_rms(final[0]), rel=0.3)
    assert not windows[-1].bad


def test_all_nan_start_then_data() -> None:
    pre = Preprocessor(_info(2), _settings())
    assert np.array_equal(pre.process(np.full((2, 16), np.nan)), np.zeros((2, 16)))
    out = pre.process(1e-3 + _sine(10.0, 1.0, amp=1e-5))
    assert np.isfinite(out).all() and np.abs(out[:, :200]).max() < 3e-5  # seeded on the first finite sample


def _bad_channel_data(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((6, n)) * 1e-5
    x[0] = 2e-4  # dead: exactly constant
    x[1] *= 1e-5  # almost dead: far below the others
    x[2] = np.clip(rng.standard_normal(n) * 1e-4, -5e-5, 5e-5)  # amplifier at its rails
    return x


def test_flat_and_railing_channels_are_detected() -> None:
    rng = np.random.default_rng(3)
    health = ChannelHealth(flat_ratio=1e-3, rail_fraction=0.2)
    assert health.check(_bad_channel_data(rng, 2000)) == ((0, "flat"), (1, "flat"), (2, "railing"))
    assert health.check(rng.standard_normal((6, 2000))) == ()  # they come back when healthy
    assert health.bad_indices.size == 0


def test_flat_detection_survives_large_dc_offsets() -> None:
    # Unfiltered amplifiers (OpenBCI) sit at offsets 10^4 times their signal.
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 2000)) * 1e-5 + 0.1 * np.arange(1, 6)[:, None]
    x[2] = 0.3 + rng.standard_normal(2000) * 1e-9  # alive but 10^4 times quieter than the rest
    assert ChannelHealth(flat_ratio=1e-3).check(x) == ((2, "flat"),)


def test_average_reference_excludes_bad_channels() -> None:
    rng = np.random.default_rng(4)
    x = _bad_channel_data(rng, 4000)
    x[2] *= 1e3  # the railing channel is huge: it would dominate a plain average
    settings = _settings(reference="average", bandpass=None, notch=0.0, window=1.0, hop=0.5)
    chain = SignalChain(_info(6), settings)
    pre = chain.preprocessor
    first = pre.process(x[:, :1000])
    np.testing.assert_allclose(first, x[:, :1000] - x[:, :1000].mean(axis=0))  # no verdict yet
    chain.buffer.push(first, np.arange(1000) / FS, 0.0, raw=x[:, :1000])
    assert [c for c, _ in pre.health.bad] == [0, 1, 2]
    later = pre.process(x[:, 1000:1100])
    good = x[3:, 1000:1100]
    np.testing.assert_allclose(later, x[:, 1000:1100] - good.mean(axis=0))


def test_nan_channel_leaves_the_average_at_once() -> None:
    x = np.vstack([np.full(8, np.nan), np.ones(8), 3 * np.ones(8)])
    out = Preprocessor(_info(3), _settings(reference="average", bandpass=None, notch=0.0)).process(x)
    np.testing.assert_allclose(out[1:], [[-1.0] * 8, [1.0] * 8])


def test_reference_to_named_channels() -> None:
    names = ["EEG Fp1", "EEG Cz", "EEG A1", "EEG A2"]
    x = np.arange(4.0)[:, None] * np.ones((4, 5))
    pre = Preprocessor(_info(4, names=names), _settings(reference=["A1", "EEG A2"], bandpass=None, notch=0.0))
    np.testing.assert_allclose(pre.process(x)[:, 0], [-2.5, -1.5, -0.5, 0.5])
    with pytest.raises(ConfigError, match=r"Reference channel 'M1' .* not in stream 'test'"):
        Preprocessor(_info(4, names=names), _settings(reference=["M1"]))


def test_reset_reseeds_from_the_next_chunk() -> None:
    pre = Preprocessor(_info(2), _settings())
    pre.process(1e-3 + _sine(10.0, 1.0, amp=1e-5))
    pre.reset()
    out = pre.process(-4e-3 + _sine(10.0, 0.5, amp=1e-5))  # the stream came back with another offset
    assert np.abs(out).max() < 3e-5


def test_slow_rate_skips_filters_that_do_not_fit() -> None:
    sfreq = 1 / 0.72  # fMRI
    x = np.random.default_rng(5).standard_normal((3, 50))
    pre = Preprocessor(_info(3, sfreq=sfreq), _settings())  # EEG defaults: (1, 40) Hz band-pass, 50 Hz notch
    assert pre.filters == ()
    np.testing.assert_array_equal(pre.process(x), x)
    slow = Preprocessor(_info(3, sfreq=sfreq), _settings(bandpass=(0.01, 0.15), notch=0.0))
    assert slow.filters == ("band-pass 0.01-0.15 Hz (Butterworth, order 8)",)
    assert np.isfinite(slow.process(x)).all()


def test_high_edge_is_capped_below_nyquist() -> None:
    pre = Preprocessor(_info(1, sfreq=64.0), _settings(bandpass=(1.0, 40.0), notch=50.0))
    assert pre.filters == ("band-pass 1-28.8 Hz (Butterworth, order 8)",)  # 0.45 × 64; 50 Hz notch > Nyquist


def test_wrong_channel_count_is_a_data_error() -> None:
    pre = Preprocessor(_info(4), _settings())
    with pytest.raises(DataError, match=r"chunk of shape \(3, 8\), expected \(4, n_samples\)"):
        pre.process(np.zeros((3, 8)))
