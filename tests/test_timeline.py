"""The timestamp checks on their own, block by block, on a simulated clock (exact and fast).

The same faults against real LSL outlets are in test_sources_lsl.py (LSLSource) and
test_pipeline_live.py (the whole run): this file pins the corner cases those cannot time exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from brainharmonic_rt.sources.timeline import Timeline

SFREQ = 250.0
CHUNK = 5  # 20 ms pushes
DELAY = 0.004  # transport: arrival - stamp of the newest sample


class Feed:
    """Feeds a Timeline blocks of a real-time stream (stamp of sample k = k / SFREQ + shift)."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.k = 0  # next sample
        self.shift = 0.0
        self.stamps: list[np.ndarray] = []  # what came out
        self.arrivals: list[float] = []
        self.kept = 0
        self.said: list[str] = []

    def block(self, first: int, n: int, arrival: float, shift: float | None = None) -> np.ndarray:
        stamps = np.arange(first, first + n) / SFREQ + (self.shift if shift is None else shift)
        keep, out, said = self.timeline.admit(stamps, arrival)
        assert keep.sum() == out.size
        self.said += said
        self.kept += out.size
        if out.size:
            self.stamps.append(out)
            self.arrivals.append(arrival)
        return keep

    def run(self, seconds: float) -> None:
        """Real time: one chunk every CHUNK / SFREQ s, arriving DELAY after its newest sample."""
        for _ in range(round(seconds * SFREQ / CHUNK)):
            self.block(self.k, CHUNK, (self.k + CHUNK - 1) / SFREQ + DELAY)
            self.k += CHUNK

    def out(self) -> np.ndarray:
        return np.concatenate(self.stamps)

    def assert_on_time(self, tolerance: float = 0.05) -> None:
        """Strictly increasing, never ahead of arrival, each block's newest within ``tolerance`` of it."""
        out = self.out()
        assert np.all(np.diff(out) > 0)
        lag = np.array([a - s[-1] for a, s in zip(self.arrivals, self.stamps, strict=True)])
        assert lag.min() >= -self.timeline.early
        assert np.abs(lag).max() < tolerance, f"newest sample off its arrival by {np.abs(lag).max():.3f} s"


def test_a_healthy_stream_passes_untouched() -> None:
    feed = Feed(Timeline(SFREQ))
    feed.run(2.0)
    np.testing.assert_array_equal(feed.out(), np.arange(feed.k) / SFREQ)
    c = feed.timeline.counts
    assert (c.overlap_samples, c.jumps_back, c.jumps_forward, c.lag_reanchors) == (0, 0, 0, 0)


@pytest.mark.parametrize("step", [-30.0, -0.8, 30.0, 3600.0])
def test_a_clock_step_is_reanchored_without_losing_a_sample(step: float) -> None:
    feed = Feed(Timeline(SFREQ, "eeg"))
    feed.run(1.0)
    feed.shift = step  # the device's clock jumps; its samples keep coming in real time
    feed.run(1.0)
    assert feed.out().size == feed.k, "no sample is lost"
    np.testing.assert_allclose(np.diff(feed.out()), 1 / SFREQ, atol=1e-9)  # continuous at the real rate
    feed.assert_on_time(0.01)
    c = feed.timeline.counts
    assert (c.jumps_back, c.jumps_forward, c.overlap_samples) == ((1, 0, 0) if step < 0 else (0, 1, 0))
    assert feed.timeline.offset == pytest.approx(-step)
    assert len(feed.said) == 1  # said once
    assert ("jumped back" if step < 0 else "ahead of this machine's clock") in feed.said[0]


def test_resent_samples_are_dropped() -> None:
    feed = Feed(Timeline(SFREQ))
    feed.run(1.0)
    resend = 75  # the last 0.3 s again, with their own stamps, right after the original
    keep = feed.block(feed.k - resend, resend, (feed.k - 1) / SFREQ + DELAY + 0.001)
    assert not keep.any()
    feed.run(1.0)
    assert feed.timeline.counts.overlap_samples == resend
    assert feed.kept == feed.k
    feed.assert_on_time()


def test_a_chunk_sent_again_and_again_is_dropped() -> None:
    feed = Feed(Timeline(SFREQ))
    feed.run(0.5)
    for _ in range(20):  # duplicated timestamps: the last chunk 20 times more
        feed.block(feed.k - CHUNK, CHUNK, (feed.k - 1) / SFREQ + DELAY + 0.001)
    feed.run(0.5)
    assert feed.timeline.counts.overlap_samples == 20 * CHUNK
    assert feed.kept == feed.k
    feed.assert_on_time()


def test_sender_jitter_keeps_every_sample() -> None:
    """A push delayed 1.5 ms at 16 kHz (stamped when pushed): the next one overlaps it, nothing is lost."""
    sfreq, chunk = 16000.0, 160
    timeline = Timeline(sfreq)
    rng = np.random.default_rng(0)
    kept = 0
    outs = []
    for j in range(200):
        late = 0.0015 * rng.random()
        newest = (j + 1) * chunk / sfreq + late  # the sender stamps its newest sample when it pushes
        stamps = newest - np.arange(chunk)[::-1] / sfreq
        _, out, _ = timeline.admit(stamps, newest + DELAY)
        kept += out.size
        outs.append(out)
    assert kept == 200 * chunk
    assert np.all(np.diff(np.concatenate(outs)) > 0)
    assert timeline.counts.overlap_samples == 0


def test_a_pass_restamped_in_the_past_is_cut_to_real_time() -> None:
    """mne-lsl's looping PlayerLSL: at a wrap a whole pass (here 2 s) arrives at once, stamped 2 s back."""
    feed = Feed(Timeline(500.0))
    sfreq = 500.0
    t = 0.0
    outs: list[np.ndarray] = []
    arrivals: list[float] = []

    def push(stamps: np.ndarray, arrival: float) -> None:
        _, out, _ = feed.timeline.admit(stamps, arrival)
        if out.size:
            outs.append(out)
            arrivals.append(arrival)

    k = 0
    for _ in range(100):  # 1 s of 10 ms pushes
        k += 5
        t = k / sfreq
        push(np.arange(k - 5, k) / sfreq, t + DELAY)
    burst = np.arange(k - 1000 + 5, k + 5) / sfreq  # one pass of 2 s ending at the next push: 995 old samples
    for i in range(0, burst.size, 50):  # the reader pulls it 0.1 s at a time, within a few ms
        push(burst[i : i + 50], t + 0.01 + DELAY + i * 1e-6)
    k += 5
    for _ in range(100):
        k += 5
        push(np.arange(k - 5, k) / sfreq, k / sfreq + DELAY)
    out = np.concatenate(outs)
    assert np.all(np.diff(out) > 0)
    lags = np.array([a - o[-1] for a, o in zip(arrivals, outs, strict=True)])
    assert lags.min() >= -feed.timeline.early and np.abs(lags[-50:]).max() < 0.01  # on time again
    assert out.size < 1000 + 0.3 * sfreq, f"{out.size} samples for 2 s: the burst was not cut"
    assert feed.timeline.counts.overlap_samples > 800
    assert feed.timeline.counts.jumps_back + feed.timeline.counts.jumps_forward <= 2  # one episode or two


def test_a_clock_far_behind_from_the_start_is_moved_onto_arrival() -> None:
    feed = Feed(Timeline(SFREQ))
    feed.shift = -10.0
    feed.run(0.5)
    assert feed.timeline.counts.lag_reanchors == 0  # not yet: a lag must last `confirm` s
    feed.run(1.5)
    assert feed.timeline.counts.lag_reanchors == 1
    # The smallest lag seen becomes zero: the clock offset and the transport delay cannot be told apart.
    assert feed.arrivals[-1] - feed.stamps[-1][-1] == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.diff(feed.out()) > 0) and feed.kept == feed.k


def test_the_backlog_read_on_subscribing_is_kept_as_it_is() -> None:
    """The first pull holds the samples sent while the inlet opened (about 1 s old): not a fault."""
    feed = Feed(Timeline(SFREQ))
    feed.block(0, 250, 1.0 + DELAY)  # 1 s of samples at once
    feed.k = 250
    feed.run(2.0)
    np.testing.assert_array_equal(feed.out(), np.arange(feed.k) / SFREQ)
    c = feed.timeline.counts
    assert (c.overlap_samples, c.jumps_back, c.jumps_forward, c.lag_reanchors) == (0, 0, 0, 0)


def test_a_sender_catching_up_after_a_stall_keeps_every_sample() -> None:
    """A sender stamps each chunk when it pushes it; starved of CPU for 0.3 s, it then pushes the backlog back to
    back, every chunk stamped "now". Those samples are real (real time allowed them): all are kept, under the
    ceiling, and the stream is on time again afterwards. (Seen in the suite on a loaded machine: a gap.)"""
    sfreq, chunk = 250.0, 10
    timeline = Timeline(sfreq)
    kept, outs, arrivals = 0, [], []
    t = 0.0
    sent = 0
    for j in range(200):
        t = (j + 1) * chunk / sfreq
        if 100 <= j < 108:  # stalled: these 8 chunks (0.32 s) are pushed at once when the CPU comes back
            continue
        burst = range(100, 109) if j == 108 else [j]
        for k, _ in enumerate(burst):
            stamps = t + k * 1e-5 - np.arange(chunk)[::-1] / sfreq  # stamped when pushed
            _, out, _ = timeline.admit(stamps, t + k * 1e-5 + DELAY)
            kept += out.size
            sent += chunk
            if out.size:
                outs.append(out)
                arrivals.append(t + k * 1e-5 + DELAY)
    assert kept == sent == 200 * chunk, f"{sent - kept} samples lost"
    out = np.concatenate(outs)
    assert np.all(np.diff(out) > 0)
    lags = np.array([a - o[-1] for a, o in zip(arrivals, outs, strict=True)])
    assert lags.min() >= -timeline.early and np.abs(lags[-20:]).max() < 0.01  # on time again
    assert timeline.counts.squeezed_samples > 0 and timeline.counts.overlap_samples == 0
