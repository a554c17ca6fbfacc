"""A real LSL outlet that pushes synthetic EEG at real-time pace from a thread, for pipeline tests.

Channel 0 counts samples so order and gaps can be asserted exactly; the other channels carry
an alpha-band sine plus noise so the brain stage sees something EEG-like.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from mne_lsl.lsl import StreamInfo, StreamOutlet, local_clock

TEN_TWENTY = ("Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T3", "T4", "T5", "T6",
              "Fz", "Cz", "Pz")  # fmt: skip


class SyntheticOutlet:
    """Pushes ``chunk`` samples every ``chunk / sfreq`` s against absolute target times."""

    def __init__(
        self,
        source_id: str,
        *,
        n_channels: int = 19,
        sfreq: float = 250.0,
        chunk: int = 10,
        name: str = "bh-test-eeg",
        ch_names: tuple[str, ...] | None = None,
    ) -> None:
        self.source_id, self.n_channels, self.sfreq, self.chunk, self.name = source_id, n_channels, sfreq, chunk, name
        if ch_names is None:
            ch_names = (
                TEN_TWENTY[:n_channels]
                if n_channels <= len(TEN_TWENTY)
                else tuple(f"E{i + 1}" for i in range(n_channels))
            )
        self.ch_names = ch_names
        self.nan_channels: set[int] = set()
        self.flat_channels: set[int] = set()  #: channels sending a constant (a loose or shorted electrode)
        self.clock_shift = 0.0  #: seconds added to every timestamp from now on (a device clock that jumps)
        self.paused = threading.Event()  #: while set, nothing is pushed but the outlet stays open (a stall)
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = np.random.default_rng(0)
        self.push_times: list[tuple[float, float]] = []  # (timestamp of last sample, local_clock after push)

    def start(self) -> SyntheticOutlet:
        info = StreamInfo(self.name, "EEG", self.n_channels, self.sfreq, "float32", self.source_id)
        info.set_channel_names(list(self.ch_names))
        self._outlet = StreamOutlet(info, chunk_size=self.chunk)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        period = self.chunk / self.sfreq
        t0 = local_clock()
        k = 0
        while not self._stop.is_set():
            if self.paused.is_set():  # stalled: resume later at real-time pace from then
                self._stop.wait(0.01)
                t0, k = local_clock() - period, 0
                continue
            target = t0 + (k + 1) * period
            delay = target - local_clock()
            if delay > 0:
                time.sleep(delay)
            n = np.arange(self.sent, self.sent + self.chunk)
            t = n / self.sfreq
            data = 20e-6 * np.sin(2 * np.pi * 10 * t)[:, None] + 5e-6 * self._rng.standard_normal(
                (self.chunk, self.n_channels)
            )
            data[:, 0] = n
            for c in self.nan_channels:
                data[:, c] = np.nan
            for c in self.flat_channels:
                data[:, c] = 3e-6
            stamp = local_clock() + self.clock_shift
            self._outlet.push_chunk(data.astype(np.float32), timestamp=stamp)
            self.push_times.append((stamp, local_clock()))
            self.sent += self.chunk
            k += 1

    def stop(self) -> None:
        """Stop pushing and close the outlet: the stream vanishes from the network."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None
        del self._outlet

    def __enter__(self) -> SyntheticOutlet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self.stop()
