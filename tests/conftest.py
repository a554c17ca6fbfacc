"""Shared fixtures: real parts only (LSL on loopback, JACK dummy server, real data).

The LSL configuration must be in place before liblsl loads, so it is written at import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_LSL_DIR = Path(tempfile.mkdtemp(prefix="bh-lsl-"))
# ResolveScope = link, not machine: here `lo` has no multicast, so machine scope falls back to unicast
# on 127.0.0.1 where only the newest outlet on the host (any process, any session) answers, hiding
# every other stream. The SessionID keeps test runs apart.
(_LSL_DIR / "lsl_api.cfg").write_text(
    f"[multicast]\nResolveScope = link\n\n[lab]\nSessionID = bh-test-{uuid.uuid4().hex[:12]}\n\n[log]\nlevel = -2\n"
)
os.environ["LSLAPICFG"] = str(_LSL_DIR / "lsl_api.cfg")
os.environ.setdefault("MNE_LSL_LOG_LEVEL", "WARNING")
os.environ["JACK_NO_START_SERVER"] = "1"  # never let a client autostart a server behind our back
# The tests' own JACK server, by name, so a server someone else runs (a studio setup, a benchmark at other
# settings) is never used or disturbed. Every JACK client made here and in subprocesses connects to it.
os.environ["JACK_DEFAULT_SERVER"] = f"bh-test-{uuid.uuid4().hex[:8]}"
# Live runs play through the embedded synth by default (on the tests' JACK server, where one runs). Tests of
# other features keep it off through the environment layer; the audio tests turn it on with --audio-driver
# or by settings, and test_live_synth.py checks the default itself with this variable removed.
os.environ["BRAINHARMONIC_AUDIO__ENABLED"] = "false"


@pytest.fixture(scope="session")
def eegmat_dir() -> Path:
    """The eegmat recording folder, found through the same lookup as `brainharmonic demo`."""
    from brainharmonic_rt.datasets import find_eegmat

    return find_eegmat(download=not os.environ.get("BRAINHARMONIC_NO_DOWNLOAD"))


@pytest.fixture
def source_id() -> str:
    """A unique LSL source_id per test, so tests never see each other's streams."""
    return f"bh-{uuid.uuid4().hex[:12]}"


def _jack_running() -> bool:
    """Whether the tests' server (JACK_DEFAULT_SERVER) answers."""
    return subprocess.run(["jack_lsp"], capture_output=True, timeout=10).returncode == 0


@pytest.fixture(scope="session")
def jack_server() -> Iterator[None]:
    """A real JACK server with the dummy driver (no sound card needed)."""
    if shutil.which("jackd") is None:
        pytest.fail("jackd is not installed; run `sudo scripts/install-system-deps.sh` first.")
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    # -R: realtime scheduling where the OS allows it (jackd falls back by itself where not). Measured on
    # this 2-core box: without it the dummy driver xruns under load and drops MIDI messages now and then.
    # -p 256 (5.3 ms periods): with 64-frame periods a loaded CI machine xruns often enough that a JACK
    # MIDI reader now and then sees a stale event again (measured: 1 run in 6 with both cores busy, 0 of 6
    # at 256). Tests assert order and pairing with loose timing; benchmarks/ measure timing at 64 frames.
    proc = subprocess.Popen(
        ["jackd", "-R", "-n", os.environ["JACK_DEFAULT_SERVER"], "-d", "dummy", "-r", "48000", "-p", "256"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 10
    while not _jack_running():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("jackd (dummy driver) did not start within 10 s.")
        time.sleep(0.1)
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
