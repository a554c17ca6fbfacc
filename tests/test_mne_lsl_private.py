"""The private parts of mne-lsl we rely on still do what we rely on (see sources/mne_lsl_private.py).

If an mne-lsl release renames or changes them, these tests fail here, by name, instead of a live run
failing on stage.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
from mne_lsl.lsl import StreamInfo, StreamInlet, StreamOutlet, resolve_streams

from brainharmonic_rt.sources.mne_lsl_private import LostError, destroy


def _outlet(source_id: str) -> StreamOutlet:
    return StreamOutlet(StreamInfo("bh-private", "EEG", 2, 100.0, "float32", source_id))


def _visible(source_id: str) -> bool:
    return any(s.source_id == source_id for s in resolve_streams(timeout=0.5))


def test_destroy_takes_an_outlet_off_the_network_at_once() -> None:
    sid = f"bh-private-{uuid.uuid4().hex[:8]}"
    outlet = _outlet(sid)
    assert _visible(sid)
    keep = [outlet]  # a reference the garbage collector would not drop: destroy must not need it to
    destroy(outlet)
    destroy(outlet)  # idempotent
    deadline = time.monotonic() + 5.0
    while _visible(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _visible(sid), "the destroyed outlet is still announced"
    assert keep


def test_a_pull_from_a_vanished_outlet_raises_lost_error() -> None:
    assert issubclass(LostError, Exception)
    sid = f"bh-private-{uuid.uuid4().hex[:8]}"
    outlet = _outlet(sid)
    (sinfo,) = [s for s in resolve_streams(timeout=2.0) if s.source_id == sid]
    inlet = StreamInlet(sinfo, recover=False)
    inlet.open_stream(timeout=5.0)
    outlet.push_chunk(np.zeros((10, 2), np.float32))
    destroy(outlet)
    with pytest.raises(LostError):
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            inlet.pull_chunk(timeout=0.5)
    destroy(inlet)
