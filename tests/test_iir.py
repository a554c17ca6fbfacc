"""The numpy filters of signal.iir against scipy.signal's (the reference they replace at start-up)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from brainharmonic_rt.brain.bandpower import periodic_hann
from brainharmonic_rt.signal.iir import BLOCK, SosFilter, butter_bandpass, notch, steady_state


def _response(sos: np.ndarray) -> np.ndarray:
    return np.asarray(sps.sosfreqz(sos, worN=np.linspace(0, np.pi, 4000))[1])


@pytest.mark.parametrize(
    ("fs", "low", "high"),
    [(500.0, 1.0, 40.0), (1000.0, 1.0, 40.0), (256.0, 0.5, 45.0), (128.0, 1.0, 57.6), (250.0, 8.0, 12.0)],
)
def test_butterworth_band_pass_is_scipys(fs: float, low: float, high: float) -> None:
    ours = butter_bandpass(4, low, high, fs)
    theirs = sps.butter(4, (low, high), btype="bandpass", fs=fs, output="sos")
    np.testing.assert_allclose(_response(ours), _response(theirs), rtol=0, atol=1e-9)
    np.testing.assert_allclose(steady_state(ours), sps.sosfilt_zi(ours), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("f0", "fs"), [(50.0, 500.0), (60.0, 1000.0), (50.0, 256.0), (60.0, 128.0)])
def test_notch_is_scipys(f0: float, fs: float) -> None:
    theirs = sps.tf2sos(*sps.iirnotch(f0, 30.0, fs=fs))
    np.testing.assert_allclose(_response(notch(f0, 30.0, fs)), _response(theirs), rtol=0, atol=1e-12)


def test_steady_state_holds_a_constant() -> None:
    sos = np.vstack([butter_bandpass(4, 1.0, 40.0, 500.0), notch(50.0, 30.0, 500.0)])
    np.testing.assert_allclose(steady_state(sos), sps.sosfilt_zi(sos), rtol=0, atol=1e-15)
    # A non-zero DC gain too (a notch alone passes DC): the state stays put under a constant input.
    one = notch(50.0, 30.0, 500.0)
    y, zf = SosFilter(one).apply(np.full((1, 300), 3.0), 3.0 * steady_state(one)[:, None, :])
    np.testing.assert_allclose(y, 3.0, rtol=1e-12)
    np.testing.assert_allclose(zf[:, 0, :], 3.0 * steady_state(one), rtol=1e-12)


@pytest.mark.parametrize("lengths", [[1, 2, 3, 200], [BLOCK, BLOCK + 1, 7], [1000]])
def test_sos_filter_is_sosfilt_chunk_by_chunk(lengths: list[int]) -> None:
    sos = np.vstack([butter_bandpass(4, 1.0, 40.0, 1000.0), notch(50.0, 30.0, 1000.0)])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, sum(lengths))) * 20 + rng.uniform(-1e3, 1e3, (5, 1))
    zi0 = steady_state(sos)[:, None, :] * x[None, :, 0, None]
    expected, zf_expected = sps.sosfilt(sos, x, axis=-1, zi=zi0)
    f, zi, parts, start = SosFilter(sos), zi0, [], 0
    for n in lengths:
        y, zi = f.apply(x[:, start : start + n], zi)
        parts.append(y)
        start += n
    # To rounding of the input's scale: a block sums ~70 products where sosfilt sums 3 (2.8e-12 seen here).
    scale = np.abs(x).max()
    np.testing.assert_allclose(np.concatenate(parts, axis=1), expected, rtol=0, atol=1e-11 * scale)
    np.testing.assert_allclose(zi, zf_expected, rtol=0, atol=1e-11 * scale)
    # One channel as a 1-D array, as the gap path runs it.
    y1, z1 = f.apply(x[2, :50], zi0[:, 2, :])
    np.testing.assert_allclose(y1, expected[2, :50], rtol=0, atol=1e-11 * scale)
    assert y1.shape == (50,) and z1.shape == (sos.shape[0], 2)


def test_periodic_hann_is_scipys_value_for_value() -> None:
    for n in (*range(1, 70), 250, 256, 500, 512, 1000, 1001, 2000, 4096):
        np.testing.assert_array_equal(periodic_hann(n), sps.get_window("hann", n, fftbins=True))
