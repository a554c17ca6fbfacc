"""Serve real EEG as live LSL streams, one per ``SOURCE_ID=FILE.edf`` argument (run as a child process).

Each stream carries 8 channels of the recording (Fp1 Fp2 F3 F4 C3 C4 P3 P4: frontal, central and
parietal groups) resampled to 250 Hz, looped, in chunks of 10 samples pushed at absolute target
times and stamped with ``local_clock()`` at the push, as a headset app does. Light enough that three
of them and three services fit on one busy core.

    python benchmarks/_lsl_push.py ID1=a.edf [ID2=b.edf ...]
"""

from __future__ import annotations

import sys
import threading
import time

import mne
import numpy as np
from mne_lsl.lsl import StreamInfo, StreamOutlet, local_clock

CHANNELS = ("Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4")
SFREQ, CHUNK = 250.0, 10


def load(path: str) -> np.ndarray:
    """Samples of shape (n_samples, 8), volts, 250 Hz."""
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    raw.rename_channels({c: c.removeprefix("EEG ").split("-")[0] for c in raw.ch_names})
    raw.pick(list(CHANNELS)).resample(SFREQ, verbose="error")
    return raw.get_data().T.astype(np.float32)


def serve(source_id: str, data: np.ndarray, stop: threading.Event) -> None:
    info = StreamInfo(source_id, "EEG", len(CHANNELS), SFREQ, "float32", source_id)
    info.set_channel_names(list(CHANNELS))
    outlet = StreamOutlet(info, chunk_size=CHUNK)
    period = CHUNK / SFREQ
    t0, k, pos = local_clock(), 0, 0
    while not stop.is_set():
        delay = t0 + (k + 1) * period - local_clock()
        if delay > 0:
            time.sleep(delay)
        idx = np.arange(pos, pos + CHUNK) % data.shape[0]
        outlet.push_chunk(np.ascontiguousarray(data[idx]), timestamp=local_clock())
        pos += CHUNK
        k += 1


def main() -> None:
    stop = threading.Event()
    threads = []
    for arg in sys.argv[1:]:
        source_id, _, path = arg.partition("=")
        t = threading.Thread(target=serve, args=(source_id, load(path), stop), daemon=True)
        t.start()
        threads.append(t)
    print("serving", ", ".join(a.partition("=")[0] for a in sys.argv[1:]), flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        stop.set()


if __name__ == "__main__":
    main()
