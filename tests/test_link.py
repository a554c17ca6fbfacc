"""Ableton Link with real Link peers in separate processes.

Link finds peers by UDP multicast on every network interface. The peers here run in a private
network namespace (``unshare -n``) whose only interface is its own loopback, so discovery works on
this machine (measured: two peers find each other in ~0.3 s there) and no packet leaves the sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from brainharmonic_rt.config import load_settings
from brainharmonic_rt.control.link import check_link, wrap
from brainharmonic_rt.errors import ConfigError

HERE = Path(__file__).parent
ROOT = HERE.parent


def _netns_ok() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


needs_netns = pytest.mark.skipif(
    not _netns_ok(),
    reason="needs `unshare -n` (root or user namespaces) to keep Link's multicast on a private loopback",
)


def in_netns(*commands: list[str], timeout: float = 120) -> None:
    """Run ``commands`` in parallel in one fresh network namespace (loopback up), wait for all."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    quoted = [" ".join(f"'{a}'" for a in cmd) for cmd in commands]
    script = "ip link set lo up && " + " & ".join(quoted) + " & wait"
    r = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, r.stderr[-3000:]


def _log(path: Path) -> dict[str, np.ndarray]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]}


def test_wrap_folds_phase_into_half_a_bar() -> None:
    assert wrap(0.1) == pytest.approx(0.1)
    assert wrap(3.9) == pytest.approx(-0.1)
    assert wrap(-5.0) == pytest.approx(-1.0)
    assert wrap(2.0) == pytest.approx(-2.0)


def test_link_with_another_tempo_source_is_refused_in_one_sentence() -> None:
    with pytest.raises(ConfigError, match=r"^--link and --follow lead would both set the tempo; .*not both\.$"):
        check_link(load_settings(link={"enabled": True}, control={"follow": "lead"}))
    with pytest.raises(ConfigError, match=r"^--link and --clock-in Ext would both set the tempo"):
        check_link(load_settings(link={"enabled": True}, output={"clock_in": "Ext"}))
    check_link(load_settings(link={"enabled": True}))
    r = subprocess.run(
        [sys.executable, "-m", "brainharmonic_rt.cli", "run", "--board", "synthetic", "--link", "--clock-in", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith("brainharmonic: error: --link and --clock-in x would both set the tempo")
    assert len(r.stderr.strip().splitlines()) == 1


@needs_netns
def test_two_peers_in_two_processes_agree_on_tempo_and_beat_phase(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    start = time.monotonic() + 1.0
    peer = [sys.executable, str(HERE / "linkpeer.py"), "--seconds", "6", "--start", str(start)]
    in_netns([*peer, "--out", str(a), "--bpm", "100", "--script", "2:tempo=123.5"], [*peer, "--out", str(b)])
    la, lb = _log(a), _log(b)
    assert la["peers"].max() == 1 and lb["peers"].max() == 1, "the peers never found each other"
    late = lb["t"] > start + 3.0  # after A's tempo change has spread
    assert np.allclose(lb["tempo"][late], 123.5, atol=0.01), "B does not follow A's tempo"
    joined = (lb["t"] > start + 1.0) & (lb["peers"] == 1)
    a_beat = np.interp(lb["t"][joined], la["t"], la["beat"])
    err_ms = np.array([wrap(x) for x in lb["beat"][joined] - a_beat]) * 60.0 / lb["tempo"][joined] * 1e3
    assert np.percentile(np.abs(err_ms), 99) < 1.0, f"beat phase differs by up to {np.abs(err_ms).max():.2f} ms"


@needs_netns
def test_live_run_follows_link_tempo_bar_phase_and_start_stop(tmp_path: Path) -> None:
    daw, run = tmp_path / "daw.jsonl", tmp_path / "run.json"
    start = time.monotonic() + 1.0
    in_netns(
        [sys.executable, str(HERE / "linkpeer.py"), "--out", str(daw), "--seconds", "34", "--start", str(start),
         "--bpm", "123", "--script", "0:play;12:tempo=100;17:stop;20:play"],
        [sys.executable, str(HERE / "linkrun.py"), "--out", str(run), "--seconds", "24", "--after", "1.5"],
    )  # fmt: skip
    peer, res = _log(daw), json.loads(run.read_text())
    assert res["stats"]["peers"] == 1
    ons = np.array([t for t, ch, _ in res["note_ons"] if ch != 9])
    assert ons.size > 30, "the run played too little to judge"

    def session(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.interp(t, peer["t"], peer["beat"]), np.interp(t, peer["t"], peer["tempo"])

    # Bar phase: our beat at each composing frontier vs the session's beat there, modulo the bar.
    grid = np.array(res["grid"])
    steady = grid[(grid[:, 0] > grid[0, 0] + 2.0)]
    sb, st = session(steady[:, 0])
    err_ms = np.array([wrap(x) for x in steady[:, 1] - sb]) * 60.0 / st * 1e3
    # Left out: frontiers in the 0.5 s after the tempo change, composed before it reached us (and composed
    # again when it did, so never heard as such).
    fresh = ~((steady[:, 0] >= start + 12) & (steady[:, 0] < start + 12.5))
    p99 = np.percentile(np.abs(err_ms[fresh]), 99)
    assert p99 < 5.0, f"bar phase error p99 {p99:.2f} ms"
    # Tempo: both tempos are followed, notes sit on the session's sixteenth grid.
    for lo, hi, bpm in ((start + 4, start + 11.5, 123.0), (start + 13.5, start + 16.5, 100.0)):
        sel = ons[(ons > lo) & (ons < hi)]
        assert sel.size > 5, f"no notes between {lo - start:.0f} and {hi - start:.0f} s"
        beats, tempo = session(sel)
        assert np.allclose(tempo, bpm, atol=0.01)
        off = (beats * 4 + 0.5) % 1 - 0.5  # sixteenths off the session's grid
        assert np.percentile(np.abs(off) / 4 * 60 / bpm * 1e3, 95) < 5.0, "notes off the session's grid"
    # Start/stop: the session's stop silences us until its start.
    stopped = ons[(ons > start + 17.3) & (ons < start + 20.0)]
    assert stopped.size == 0, f"{stopped.size} notes while the session was stopped"
    assert ons[ons > start + 20.3].size > 3, "the music did not come back when the session started"


@needs_netns
def test_link_lead_proposes_our_tempo_to_the_session(tmp_path: Path) -> None:
    daw, run = tmp_path / "daw.jsonl", tmp_path / "run.json"
    start = time.monotonic() + 1.0
    in_netns(
        [sys.executable, str(HERE / "linkpeer.py"), "--out", str(daw), "--seconds", "18", "--start", str(start),
         "--bpm", "120"],
        [sys.executable, str(HERE / "linkrun.py"), "--out", str(run), "--seconds", "16", "--lead",
         "--retime-at", "9", "--retime-bpm", "140"],
    )  # fmt: skip
    peer, res = _log(daw), json.loads(run.read_text())
    assert res["stats"]["proposals"] >= 2
    joined = peer["peers"] == 1
    tempos = peer["tempo"][joined]
    assert np.any(np.abs(tempos - 96.0) < 0.01), "our starting tempo never reached the session"
    assert abs(tempos[-1] - 140.0) < 0.01, f"the session did not take our tempo change (ends at {tempos[-1]:.2f})"
    assert peer["playing"][joined].any(), "our start was not proposed"
    assert not peer["playing"][-1], "our stop at the end was not proposed"
