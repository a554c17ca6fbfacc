"""A JACK client that records other clients' audio output ports, and what tests measure on it.

The recorder copies every cycle's samples into a preallocated buffer (no allocation in JACK's
thread) and remembers, per cycle, the frame time and ``time.monotonic()``; the least-delayed
cycle gives the offset that puts recorded frames on the monotonic clock the Scheduler uses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np


class JackRecorder:
    """Records ``sources`` (JACK output port names) from when it is started.

    Parameters
    ----------
    name : JACK client name.
    seconds : buffer length; recording stops (silently) when it is full.
    """

    def __init__(self, name: str, seconds: float = 60.0) -> None:
        import jack

        self.client = jack.Client(name, no_start_server=True)
        self.rate = self.client.samplerate
        self.period = self.client.blocksize
        self.buf = np.zeros((int(seconds * self.rate), 2), dtype=np.float32)
        self.n = 0
        self._first_frame: int | None = None
        self._stamps: list[tuple[int, float]] = []
        self._lock = threading.Lock()
        self.ins = [self.client.inports.register(f"in_{i}") for i in (1, 2)]
        self.xruns = 0
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)

    def _xrun(self, delay: float) -> None:
        self.xruns += 1

    def _process(self, frames: int) -> None:
        now = time.monotonic()
        frame = self.client.last_frame_time
        if self._first_frame is None:
            self._first_frame = frame
        at = frame - self._first_frame  # xruns skip cycles: place each one by its frame time
        end = min(at + frames, len(self.buf))
        if at < end:
            for ch, port in enumerate(self.ins):
                self.buf[at:end, ch] = port.get_array()[: end - at]
            self.n = max(self.n, end)
        if len(self._stamps) < 200_000:
            self._stamps.append((frame, now))

    def start(self, sources: Sequence[str]) -> None:
        self.client.activate()
        for src, dst in zip(sources, self.ins, strict=True):
            self.client.connect(src, dst)

    def stop(self) -> None:
        self.client.deactivate()
        self.client.close()

    @property
    def audio(self) -> np.ndarray:
        """Recorded frames, shape (frames, 2)."""
        return self.buf[: self.n]

    def time_of_frame(self, index: np.ndarray | float) -> np.ndarray | float:
        """Monotonic time of recorded frame ``index`` (the start of the cycle that produced it)."""
        assert self._first_frame is not None and self._stamps
        stamps = np.array(self._stamps, dtype=np.float64)
        offset = float(np.min(stamps[:, 1] - (stamps[:, 0] - self._first_frame) / self.rate))
        return np.asarray(index, dtype=np.float64) / self.rate + offset

    def frame_of_time(self, t: float) -> int:
        t0 = float(self.time_of_frame(0.0))
        return max(0, round((t - t0) * self.rate))


def dbfs(x: np.ndarray) -> float:
    """Peak level in dBFS (-inf for silence)."""
    peak = float(np.abs(x).max()) if x.size else 0.0
    return 20 * np.log10(peak) if peak > 0 else float("-inf")


def onsets(
    audio: np.ndarray,
    rate: float,
    *,
    floor_db: float = -50.0,
    rise_db: float = 12.0,
    before: float = 0.03,
    attack: float = 0.008,
) -> np.ndarray:
    """Frame indices of note onsets from the energy envelope (peak per 0.5 ms).

    An onset is where the level climbs ``rise_db`` above its highest value in the ``before`` s that end
    ``attack`` s earlier (so a note's own attack is not its reference), and above ``floor_db``; it is
    placed at the first sample 6 dB above that reference. One onset per 50 ms.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    hop = max(1, round(rate / 2000))
    m = len(audio) // hop
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    env = np.abs(audio[: m * hop]).max(axis=1).reshape(m, hop).max(axis=1)
    k, g = max(1, round(before * rate / hop)), max(1, round(attack * rate / hop))
    padded = np.concatenate([np.zeros(k + g), env])
    prior = sliding_window_view(padded, k)[:m].max(axis=1)  # bins [i-k-g, i-g)
    floor = 10 ** (floor_db / 20)
    hits = np.flatnonzero((env > floor) & (env > 10 ** (rise_db / 20) * prior))
    out: list[int] = []
    for i in hits:
        if out and i * hop - out[-1] <= 0.05 * rate:
            continue
        ref = max(2.0 * prior[i], floor)
        lo = max(0, (i - g) * hop)
        seg = np.abs(audio[lo : (i + 1) * hop]).max(axis=1)
        out.append(lo + int(np.argmax(seg > ref)))
    return np.asarray(out, dtype=np.int64)


def silent_after(audio: np.ndarray, rate: float, start: int, threshold_db: float = -60.0) -> float | None:
    """Seconds after frame ``start`` from which the audio stays below ``threshold_db`` (None: never)."""
    level = np.abs(audio[start:]).max(axis=1)
    above = np.flatnonzero(level > 10 ** (threshold_db / 20))
    if above.size == 0:
        return 0.0
    last = int(above[-1]) + 1
    return None if last >= len(level) else last / rate
