"""Sliding windows: exact sample timing whatever the chunking, fresh arrays, health verdicts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brainharmonic_rt.config import SignalSettings
from brainharmonic_rt.errors import ConfigError, DataError
from brainharmonic_rt.events import Chunk, SignalInfo, Window
from brainharmonic_rt.signal import SignalChain
from brainharmonic_rt.signal.preprocess import ChannelHealth
from brainharmonic_rt.signal.windows import WindowBuffer

FS = 500.0
T0 = 12_345.678  # an LSL-like clock that does not start at zero


def _counter(n_ch: int, n: int) -> np.ndarray:
    """Channel c holds ``1000 * c + sample index``, so every sample is identifiable."""
    return np.arange(n, dtype=float)[None, :] + 1000.0 * np.arange(n_ch)[:, None]


def _push_all(buf: WindowBuffer, data: np.ndarray, sizes: list[int]) -> list[Window]:
    stamps = T0 + np.arange(data.shape[1]) / FS
    out: list[Window] = []
    a = 0
    for size in sizes:
        out += buf.push(data[:, a : a + size], stamps[a : a + size], T0)
        a += size
    assert a == data.shape[1]
    return out


def _check_windows(windows: list[Window], n: int, n_win: int, n_hop: int, n_ch: int = 3) -> None:
    expected = 0 if n < n_win else 1 + (n - n_win) // n_hop
    assert len(windows) == expected
    for k, w in enumerate(windows):
        last = n_win - 1 + k * n_hop
        assert w.index == k
        assert w.data.shape == (n_ch, n_win)
        np.testing.assert_array_equal(w.data, _counter(n_ch, last + 1)[:, last + 1 - n_win :])
        assert w.t_end == pytest.approx(last / FS, abs=1e-9)
        assert w.stamp == pytest.approx(T0 + last / FS, abs=1e-9)


@pytest.mark.parametrize("size", [1, 7, 8, 32, 125, 999, 1000, 1001, 5000])
def test_window_timing_is_exact_for_any_chunk_size(size: int) -> None:
    n = 4321
    buf = WindowBuffer(3, FS, window_s=2.0, hop_s=0.25)
    windows = _push_all(buf, _counter(3, n), [size] * (n // size) + ([n % size] if n % size else []))
    _check_windows(windows, n, n_win=1000, n_hop=125)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 3000),
    cuts=st.lists(st.integers(1, 700), min_size=1, max_size=60),
    hop=st.sampled_from([0.002, 0.1, 0.25, 1.0, 2.0]),
)
def test_window_timing_with_random_chunking(n: int, cuts: list[int], hop: float) -> None:
    sizes, left = [], n
    for c in cuts * (1 + n // max(sum(cuts), 1)):
        if left == 0:
            break
        sizes.append(min(c, left))
        left -= sizes[-1]
    if left:
        sizes.append(left)
    buf = WindowBuffer(3, FS, window_s=2.0, hop_s=hop)
    _check_windows(_push_all(buf, _counter(3, n), sizes), n, n_win=1000, n_hop=round(hop * FS))


def test_window_data_is_a_fresh_array() -> None:
    buf = WindowBuffer(2, FS, window_s=1.0, hop_s=0.5)
    data = _counter(2, 2000)
    windows = _push_all(buf, data, [100] * 20)
    first = windows[0].data.copy()
    _push_all(buf, data, [100] * 20)  # overwrite the ring many times
    np.testing.assert_array_equal(windows[0].data, first)
    assert not any(np.shares_memory(w.data, buf._ring) for w in windows)
    assert not np.shares_memory(windows[0].data, windows[1].data)


def test_reset_needs_a_full_window_again_and_indices_go_on() -> None:
    buf = WindowBuffer(1, FS, window_s=1.0, hop_s=0.5)
    assert len(_push_all(buf, _counter(1, 1000), [1000])) == 3  # end at samples 499, 749, 999
    buf.reset()
    again = _push_all(buf, _counter(1, 500), [499, 1])
    assert [w.index for w in again] == [3]  # only once the 500th new sample arrives
    np.testing.assert_array_equal(again[0].data, _counter(1, 500))


def test_health_is_judged_on_the_raw_samples_of_each_window() -> None:
    buf = WindowBuffer(3, FS, window_s=1.0, hop_s=0.5, health=ChannelHealth())
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((3, 2000))
    raw = clean.copy()
    raw[1, 600:610] = np.nan
    stamps = np.arange(2000) / FS
    windows = []
    for a in range(0, 2000, 50):
        windows += buf.push(clean[:, a : a + 50], stamps[a : a + 50], 0.0, raw=raw[:, a : a + 50])
    # windows end at samples 499, 749, ..., 1999 and span 500 samples
    assert [w.bad for w in windows] == [((1, "nan"),) if 600 <= 249 + 250 * k + 250 < 1110 else () for k in range(7)]


def test_fmri_rate_windows() -> None:
    sfreq = 1 / 0.72
    buf = WindowBuffer(4, sfreq, window_s=60.0, hop_s=0.72)
    assert (buf.n_window, buf.n_hop) == (83, 1)
    stamps = np.arange(100) * 0.72
    windows = buf.push(np.zeros((4, 100)), stamps, 0.0)
    assert len(windows) == 18 and windows[0].t_end == pytest.approx(82 * 0.72)


def test_windows_too_short_for_the_rate_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"window = 1 s holds 1 sample\(s\) at 1.389 Hz; set it to at least"):
        WindowBuffer(4, 1 / 0.72, window_s=1.0, hop_s=0.5)
    with pytest.raises(ConfigError, match=r"hop = 0.1 s is 0 sample\(s\)"):
        WindowBuffer(4, 1 / 0.72, window_s=60.0, hop_s=0.1)


def test_wrong_shape_is_a_data_error() -> None:
    buf = WindowBuffer(4, FS, 1.0, 0.5)
    with pytest.raises(DataError, match="does not fit a 4-channel window buffer"):
        buf.push(np.zeros((3, 10)), np.zeros(10), 0.0)


def test_signal_chain_takes_t0_from_the_first_chunk() -> None:
    info = SignalInfo("t", FS, ("Fp1", "Fp2", "O1"))
    chain = SignalChain(info, SignalSettings(window=1.0, hop=0.5))
    x = np.random.default_rng(1).standard_normal((3, 1500))
    stamps = T0 + np.arange(1500) / FS
    windows = []
    for a in range(0, 1500, 32):
        windows += chain.push(Chunk(x[:, a : a + 32], stamps[a : a + 32]))
    assert chain.t0 == T0
    assert [round(w.t_end * FS) for w in windows] == [499, 749, 999, 1249, 1499]
    assert windows[-1].stamp == stamps[-1]
    assert chain.push(Chunk(np.zeros((3, 0)), np.zeros(0))) == []
    chain.reset()
    assert chain.t0 == T0  # session time goes on after a reconnect
    assert chain.stats()["windows"] == 5
