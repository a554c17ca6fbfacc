"""LSLSource against real LSL streams on loopback (PlayerLSL and StreamOutlet).

Each stream's first channel counts samples (0, 1, 2, ...) so order and gaps are
asserted exactly. Every wait has a deadline; nothing is paced by test sleeps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mne
import numpy as np
import pytest
from mne_lsl.lsl import StreamInfo, StreamOutlet, local_clock

from brainharmonic_rt.config import StreamSettings
from brainharmonic_rt.errors import StreamError, StreamLostError, StreamNotFoundError
from brainharmonic_rt.events import Chunk
from brainharmonic_rt.sources.base import Source
from brainharmonic_rt.sources.files import pick_signal, read_raw
from brainharmonic_rt.sources.lsl import LSLSource, _check_shape, format_streams, list_streams
from brainharmonic_rt.sources.player import make_player

pytestmark = pytest.mark.timeout(60)


class Pusher(threading.Thread):
    """Pushes counting samples at real-time pace (absolute targets) until stopped or ``limit``."""

    def __init__(
        self,
        outlet: StreamOutlet,
        n_channels: int,
        sfreq: float,
        chunk: int,
        *,
        dtype: type = np.float32,
        fill: Callable[[np.ndarray], None] | None = None,
        limit: int | None = None,
        paced: bool = True,
    ) -> None:
        super().__init__(daemon=True)
        self.outlet, self.n_channels, self.sfreq, self.chunk = outlet, n_channels, sfreq, chunk
        self.dtype, self.fill, self.limit, self.paced = dtype, fill, limit, paced
        self.halt = threading.Event()
        self.pushed = 0

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.halt.is_set() and (self.limit is None or self.pushed < self.limit):
            data: np.ndarray = np.zeros((self.chunk, self.n_channels), dtype=self.dtype)
            data[:, 0] = np.arange(self.pushed, self.pushed + self.chunk)
            if self.fill is not None:
                self.fill(data)
            if self.chunk == 1:
                self.outlet.push_sample(data[0])
            else:
                self.outlet.push_chunk(data)
            self.pushed += self.chunk
            if self.paced:
                delay = t0 + self.pushed / self.sfreq - time.monotonic()
                if delay > 0:
                    self.halt.wait(delay)


class Kit:
    """Creates outlets and pushers and closes them all at teardown."""

    def __init__(self) -> None:
        self.outlets: list[StreamOutlet] = []
        self.pushers: list[Pusher] = []

    def outlet(self, name: str, source_id: str, n_channels: int, sfreq: float, dtype: str = "float32") -> StreamOutlet:
        info = StreamInfo(name, "EEG", n_channels, sfreq, dtype, source_id)
        info.set_channel_names([f"C{i}" for i in range(n_channels)])
        out = StreamOutlet(info)
        self.outlets.append(out)
        return out

    def push(self, outlet: StreamOutlet, n_channels: int, sfreq: float, **kw: object) -> Pusher:
        chunk = int(kw.pop("chunk", max(1, round(sfreq / 100))))  # type: ignore[call-overload]
        p = Pusher(outlet, n_channels, sfreq, chunk, **kw)  # type: ignore[arg-type]
        self.pushers.append(p)
        p.start()
        return p

    def close(self, outlet: StreamOutlet) -> None:
        for p in self.pushers:
            if p.outlet is outlet:
                p.halt.set()
                p.join(2)
        outlet._del()

    def teardown(self) -> None:
        for p in self.pushers:
            p.halt.set()
            p.join(2)
        for o in self.outlets:
            o._del()


@pytest.fixture
def kit() -> Iterator[Kit]:
    k = Kit()
    yield k
    k.teardown()


async def collect(source: LSLSource, n_samples: int, timeout: float = 10.0) -> list[Chunk]:
    """Read chunks until ``n_samples`` arrived (raises TimeoutError past ``timeout``)."""
    out: list[Chunk] = []
    got = 0
    async with asyncio.timeout(timeout):
        async for chunk in source.chunks():
            out.append(chunk)
            got += chunk.n_samples
            if got >= n_samples:
                break
    return out


def joined(chunks: list[Chunk]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([c.data for c in chunks], axis=1), np.concatenate([c.timestamps for c in chunks])


def assert_counts(counter: np.ndarray) -> None:
    assert np.all(np.diff(counter) == 1), f"gaps or reordering in {counter[:20]}..."


# -- real recording through PlayerLSL ------------------------------------------------------
@pytest.fixture(scope="module")
def counting_raw(eegmat_dir: Path) -> mne.io.RawArray:
    """20 s of Subject00 at rest with a first channel that counts samples."""
    raw = pick_signal(read_raw(eegmat_dir / "Subject00_1.edf"))
    data = raw.get_data(stop=int(20 * raw.info["sfreq"]))
    info = mne.create_info(["counter", *raw.ch_names], raw.info["sfreq"], "eeg")
    return mne.io.RawArray(np.vstack([np.arange(data.shape[1]), data]), info, verbose="error")


async def test_player_edf_arrives_in_order_without_gaps(counting_raw: mne.io.RawArray, source_id: str) -> None:
    player = make_player(counting_raw, name="bh-test-player", source_id=source_id, chunk_size=5, pick=False)
    player.start()
    try:
        async with LSLSource(StreamSettings(source_id=source_id, timeout=5)) as src:
            assert isinstance(src, Source)
            assert src.info.ch_names == tuple(counting_raw.ch_names)
            assert src.info.sfreq == 500.0
            assert src.info.units == "V"
            chunks = await collect(src, 600)
            arrival = local_clock()
            stats = src.stats()
    finally:
        player.stop()
    data, ts = joined(chunks)
    assert data.dtype == np.float64 and data.shape[0] == 20
    counter = data[0].astype(int)
    assert_counts(counter)
    # The EEG arrives bit-exact (float64 on the wire) at the samples the counter names.
    np.testing.assert_array_equal(data[1:], counting_raw.get_data()[1:, counter])
    assert np.all(np.diff(ts) > 0)
    assert np.median(np.diff(ts)) == pytest.approx(1 / 500, rel=0.05)
    assert abs(arrival - ts[-1]) < 0.2  # timestamps are on the local LSL clock
    assert stats["samples"] >= 600 and stats["dropped_chunks"] == 0


@pytest.mark.parametrize(("n_channels", "sfreq"), [(4, 125.0), (64, 1000.0), (256, 250.0), (8, 16000.0)], ids=str)
async def test_channel_counts_and_rates(kit: Kit, source_id: str, n_channels: int, sfreq: float) -> None:
    out = kit.outlet(f"bh-rate-{n_channels}", source_id, n_channels, sfreq)
    kit.push(out, n_channels, sfreq)
    async with LSLSource(StreamSettings(source_id=source_id, timeout=5)) as src:
        assert src.info.n_channels == n_channels and src.info.sfreq == sfreq
        assert src.info.ch_names[:2] == ("C0", "C1")
        chunks = await collect(src, max(50, int(0.4 * sfreq)))
    data, _ = joined(chunks)
    assert data.shape[0] == n_channels
    assert_counts(data[0].astype(int))


async def test_selects_by_name_and_type(kit: Kit, source_id: str) -> None:
    kit.push(kit.outlet(f"bh-named-{source_id}", source_id, 3, 200.0), 3, 200.0)
    settings = StreamSettings(name=f"bh-named-{source_id}", type="EEG", timeout=5)
    async with LSLSource(settings) as src:
        assert src.info.source_id == source_id
        chunks = await collect(src, 40)
    assert_counts(joined(chunks)[0][0].astype(int))


async def test_not_found_lists_visible_streams(kit: Kit, source_id: str) -> None:
    kit.outlet(f"bh-visible-{source_id}", source_id, 2, 250.0)
    settings = StreamSettings(source_id=f"{source_id}-absent", timeout=0.5)
    with pytest.raises(StreamNotFoundError, match=rf"source_id '{source_id}-absent'.*bh-visible-{source_id}.*--stream"):
        async with LSLSource(settings):
            pass


@pytest.mark.parametrize(
    ("dtype", "n_channels", "sfreq", "match"),
    [
        ("string", 1, 100.0, "string format"),
        ("float32", 4, 0.0, "irregular sampling rate"),
        ("float32", 600, 250.0, "600 channels but at most 512"),
        ("float32", 4, 100.0, "100 Hz but 125 to 16000 Hz"),
    ],
    ids=["string", "irregular", "too-many-channels", "rate-too-low"],
)
async def test_unusable_streams_are_refused(
    kit: Kit, source_id: str, dtype: str, n_channels: int, sfreq: float, match: str
) -> None:
    kit.outlet("bh-unusable", source_id, n_channels, sfreq, dtype)
    with pytest.raises(StreamError, match=match):
        async with LSLSource(StreamSettings(source_id=source_id, timeout=3)):
            pass


async def test_nan_samples_pass_through(kit: Kit, source_id: str) -> None:
    def nans(block: np.ndarray) -> None:
        block[:, 1] = np.nan

    kit.push(kit.outlet("bh-nan", source_id, 3, 250.0), 3, 250.0, fill=nans)
    async with LSLSource(StreamSettings(source_id=source_id, timeout=5)) as src:
        data, _ = joined(await collect(src, 50))
    assert np.isnan(data[1]).all() and np.isfinite(data[0]).all()
    assert_counts(data[0].astype(int))


# -- loss and return ---------------------------------------------------------------------
async def test_closed_outlet_raises_stream_lost(kit: Kit, source_id: str) -> None:
    out = kit.outlet("bh-vanish", source_id, 4, 250.0)
    kit.push(out, 4, 250.0)
    settings = StreamSettings(source_id=source_id, timeout=5, lost_after=1.0)
    async with LSLSource(settings) as src:
        await collect(src, 25)
        kit.close(out)
        t0 = time.monotonic()
        with pytest.raises(StreamLostError, match=r"'bh-vanish'.*(lost|sent no samples)"):
            async with asyncio.timeout(5):
                async for _ in src.chunks():
                    pass
        assert time.monotonic() - t0 < settings.lost_after + 1.0
        with pytest.raises(StreamLostError):  # stays lost until reconnect()
            async for _ in src.chunks():
                pass


async def test_silent_stream_counts_as_lost(kit: Kit, source_id: str) -> None:
    kit.outlet("bh-silent", source_id, 4, 250.0)  # visible, but never pushes
    settings = StreamSettings(source_id=source_id, timeout=5, lost_after=0.5)
    async with LSLSource(settings) as src:
        t0 = time.monotonic()
        with pytest.raises(StreamLostError, match=r"'bh-silent'.*no samples for 0.5 s"):
            async with asyncio.timeout(5):
                async for _ in src.chunks():
                    pass
        assert time.monotonic() - t0 < 0.5 + 1.0


async def test_reconnect_when_stream_returns(kit: Kit, source_id: str) -> None:
    out = kit.outlet("bh-return", source_id, 4, 250.0)
    kit.push(out, 4, 250.0)
    async with LSLSource(StreamSettings(source_id=source_id, timeout=5, lost_after=1.0)) as src:
        await collect(src, 25)
        kit.close(out)
        with pytest.raises(StreamLostError):
            await collect(src, 10_000)
        task = asyncio.create_task(src.reconnect())
        kit.push(kit.outlet("bh-return", source_id, 4, 250.0), 4, 250.0)
        await asyncio.wait_for(task, 10)
        data, _ = joined(await collect(src, 50))
        assert_counts(data[0].astype(int))
        assert src.stats()["reconnects"] == 1


async def test_reconnect_with_other_channel_count_is_refused(kit: Kit, source_id: str) -> None:
    out = kit.outlet("bh-change", source_id, 4, 250.0)
    kit.push(out, 4, 250.0)
    async with LSLSource(StreamSettings(source_id=source_id, timeout=5, lost_after=1.0)) as src:
        await collect(src, 25)
        kit.close(out)
        with pytest.raises(StreamLostError):
            await collect(src, 10_000)
        kit.outlet("bh-change", source_id, 8, 250.0)
        with pytest.raises(StreamError, match="'bh-change' came back with 8 channels instead of 4"):
            await asyncio.wait_for(src.reconnect(), 10)


async def test_reconnect_waits_and_can_be_cancelled(kit: Kit, source_id: str) -> None:
    out = kit.outlet("bh-gone", source_id, 2, 250.0)
    kit.push(out, 2, 250.0)
    async with LSLSource(StreamSettings(source_id=source_id, timeout=5, lost_after=1.0)) as src:
        await collect(src, 10)
        kit.close(out)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(src.reconnect(), 1.0)


# -- bounded queue ---------------------------------------------------------------------------
async def test_slow_consumer_drops_oldest_chunks(kit: Kit, source_id: str) -> None:
    out = kit.outlet("bh-slow", source_id, 2, 1000.0)
    src = LSLSource(StreamSettings(source_id=source_id, timeout=5), max_queue_seconds=0.05)  # 50 samples
    async with src:
        t0 = time.monotonic()
        for k in range(0, 500, 10):  # 50 chunks of 10 samples in real time, each waited for, none consumed
            await asyncio.sleep(max(0.0, t0 + (k + 10) / 1000 - time.monotonic()))
            block = np.zeros((10, 2), dtype=np.float32)
            block[:, 0] = np.arange(k, k + 10)
            out.push_chunk(block)
            async with asyncio.timeout(5):
                while src.stats()["samples"] < k + 10 or src.stats()["queued_samples"] == 0:
                    await asyncio.sleep(0.002)
        stats = src.stats()
        assert stats["dropped_chunks"] >= 40
        kept: list[Chunk] = []
        async with asyncio.timeout(5):
            async for chunk in src.chunks():
                kept.append(chunk)
                # The reader counts a sample before its hand-off to the loop lands: wait for the last one.
                if chunk.data[0, -1] >= 499:
                    break
    counter = joined(kept)[0][0].astype(int)
    assert counter[-1] == 499 and len(counter) <= 60
    assert_counts(counter)


# -- discovery and details -------------------------------------------------------------------
async def test_list_and_format_streams(kit: Kit, source_id: str) -> None:
    kit.outlet(f"bh-listed-{source_id}", source_id, 7, 512.0)
    async with asyncio.timeout(10):
        while not any(s["source_id"] == source_id for s in await asyncio.to_thread(list_streams, 0.5)):
            pass
    mine = next(s for s in list_streams(0.5) if s["source_id"] == source_id)
    assert mine | {"hostname": None} == {
        "name": f"bh-listed-{source_id}",
        "type": "EEG",
        "source_id": source_id,
        "n_channels": 7,
        "sfreq": 512.0,
        "format": "float32",
        "hostname": None,
    }
    table = format_streams([mine])
    assert table.splitlines()[0].split()[:3] == ["NAME", "TYPE", "SOURCE_ID"]
    assert f"bh-listed-{source_id}" in table and "512" in table
    assert format_streams([]) == "No LSL streams visible."


def test_wrong_block_shape_is_a_stream_error() -> None:
    _check_shape("eeg", np.zeros((4, 3)), 4)
    with pytest.raises(StreamError, match="'eeg' delivered 3 channels instead of 4"):
        _check_shape("eeg", np.zeros((3, 5)), 4)


async def test_source_is_single_use_and_needs_entering(kit: Kit, source_id: str) -> None:
    kit.outlet("bh-once", source_id, 2, 250.0)
    src = LSLSource(StreamSettings(source_id=source_id, timeout=5))
    with pytest.raises(RuntimeError, match="async with"):
        await anext(aiter(src.chunks()))
    async with src:
        pass
    with pytest.raises(RuntimeError, match="only once"):
        async with src:
            pass


# -- latency -----------------------------------------------------------------------------
async def test_push_to_handler_latency_64ch_1khz(kit: Kit, source_id: str) -> None:
    """One sample pushed at a time at 1 kHz; channel 0 holds local_clock() at push."""

    def stamp(block: np.ndarray) -> None:
        block[:, 0] = local_clock()

    out = kit.outlet("bh-latency", source_id, 64, 1000.0, dtype="float64")
    async with LSLSource(StreamSettings(source_id=source_id, timeout=5)) as src:
        kit.push(out, 64, 1000.0, chunk=1, dtype=np.float64, fill=stamp)
        lat: list[np.ndarray] = []
        got = 0
        async with asyncio.timeout(15):
            async for chunk in src.chunks():
                lat.append(local_clock() - chunk.data[0])
                got += chunk.n_samples
                if got >= 3000:
                    break
        assert src.stats()["rate"] == pytest.approx(1000.0, rel=0.1)
    values = np.concatenate(lat)[500:] * 1e3  # skip the first 0.5 s (backlog from subscribing)
    p50, p99 = np.percentile(values, [50, 99])
    print(f"\nLSL push -> asyncio chunk latency, 64 ch @ 1 kHz: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    assert p99 < 20.0


# -- timestamps that cannot be trusted -------------------------------------------------------
class FaultyClock(threading.Thread):
    """Pushes counting samples in real time, each chunk stamped ``local_clock() + shift``.

    At sample ``at`` the fault happens: ``shift`` changes to ``step`` (a clock reset), or the last
    ``resend`` samples are pushed again with their own stamps (a relay that resends), or the last
    chunk is pushed ``repeat`` more times (duplicated timestamps).
    """

    def __init__(self, outlet: StreamOutlet, sfreq: float, chunk: int, *, at: int, **fault: float) -> None:
        super().__init__(daemon=True)
        self.outlet, self.sfreq, self.chunk, self.at, self.fault = outlet, sfreq, chunk, at, fault
        self.halt = threading.Event()
        self.pushed = 0
        self.shift = 0.0

    def run(self) -> None:
        t0 = time.monotonic()
        sent: list[tuple[np.ndarray, float]] = []
        while not self.halt.is_set():
            if self.pushed == self.at:
                self.shift = self.fault.get("step", 0.0)
                resend = int(self.fault.get("resend", 0))
                again = [c for c in sent if c[0][-1, 0] >= self.pushed - resend] if resend else []
                again += [sent[-1]] * int(self.fault.get("repeat", 0))
                for block, stamp in again:
                    self.outlet.push_chunk(block, timestamp=stamp)
            block = np.zeros((self.chunk, 2), dtype=np.float32)
            block[:, 0] = np.arange(self.pushed, self.pushed + self.chunk)
            stamp = local_clock() + self.shift
            self.outlet.push_chunk(block, timestamp=stamp)
            sent = [*sent[-100:], (block, stamp)]
            self.pushed += self.chunk
            delay = t0 + self.pushed / self.sfreq - time.monotonic()
            if delay > 0:
                self.halt.wait(delay)


async def _read_through_fault(kit: Kit, source_id: str, seconds: float, **fault: float) -> tuple[list[Chunk], dict]:
    """1 s of a 250 Hz stream, the fault, then the rest of ``seconds``; the chunks and the source's stats."""
    out = kit.outlet("bh-clock", source_id, 2, 250.0)
    pusher = FaultyClock(out, 250.0, 5, at=250, **fault)
    async with LSLSource(StreamSettings(source_id=source_id, timeout=5)) as src:
        pusher.start()
        try:
            chunks = await collect(src, round(seconds * 250) - 25, timeout=seconds + 5)
        finally:
            pusher.halt.set()
            pusher.join(2)
        return chunks, src.stats()


def assert_on_time(chunks: list[Chunk]) -> None:
    """Strictly increasing timestamps, each chunk's newest within 0.3 s of its arrival here (a loaded
    machine delays the reader thread by a tenth of a second now and then; a clock fault is seconds)."""
    _, ts = joined(chunks)
    assert np.all(np.diff(ts) > 0), f"timestamps go back by {-np.diff(ts).min():.3f} s"
    assert np.diff(ts).max() < 0.1, f"timestamps jump forward by {np.diff(ts).max():.3f} s"
    lags = np.array([c.received - c.timestamps[-1] for c in chunks[5:] if c.received is not None])
    assert np.abs(lags).max() < 0.3, f"a chunk's timestamp is {np.abs(lags).max():.3f} s off its arrival"


@pytest.mark.parametrize("step", [-30.0, 30.0], ids=["back-30s", "forward-30s"])
async def test_a_clock_that_steps_is_reanchored(kit: Kit, source_id: str, step: float) -> None:
    chunks, stats = await _read_through_fault(kit, source_id, 2.5, step=step)
    assert_counts(joined(chunks)[0][0].astype(int))  # not a sample lost
    assert_on_time(chunks)
    assert (stats["jumps_back"], stats["jumps_forward"]) == ((1, 0) if step < 0 else (0, 1))
    assert stats["clock_offset_s"] == pytest.approx(-step, abs=0.05)
    assert stats["overlap_samples"] == 0


async def test_resent_samples_are_dropped(kit: Kit, source_id: str) -> None:
    chunks, stats = await _read_through_fault(kit, source_id, 2.5, resend=75)  # the last 0.3 s again
    assert_counts(joined(chunks)[0][0].astype(int))  # each sample once, in order
    assert_on_time(chunks)
    assert stats["overlap_samples"] == 75 == stats["dropped_samples"]


async def test_duplicated_timestamps_are_dropped(kit: Kit, source_id: str) -> None:
    chunks, stats = await _read_through_fault(kit, source_id, 2.0, repeat=20)  # the last chunk 20 times more
    assert_counts(joined(chunks)[0][0].astype(int))
    assert_on_time(chunks)
    assert stats["overlap_samples"] == 100


async def test_reconnect_returns_only_once_samples_arrive(kit: Kit, source_id: str) -> None:
    """A stalled outlet that stays open: lost after lost_after, back only when samples flow again."""
    out = kit.outlet("bh-stall", source_id, 2, 250.0)
    pusher = kit.push(out, 2, 250.0)
    async with LSLSource(StreamSettings(source_id=source_id, timeout=5, lost_after=0.5)) as src:
        await collect(src, 50)
        pusher.halt.set()
        pusher.join(2)
        with pytest.raises(StreamLostError, match=r"sent no samples for 0\.5 s"):
            await collect(src, 10_000)
        task = asyncio.create_task(src.reconnect())
        await asyncio.sleep(2.0)  # 4 x lost_after of silence, the outlet still visible
        assert not task.done(), "reconnect() returned while the stream sent nothing"
        resumed = kit.push(out, 2, 250.0)
        await asyncio.wait_for(task, 5)
        assert resumed.pushed > 0
        data, _ = joined(await collect(src, 50))
        assert data[0, 0] == 0  # the first sample sent after the stall comes first
        assert_counts(data[0].astype(int))
        assert src.stats()["reconnects"] == 1
