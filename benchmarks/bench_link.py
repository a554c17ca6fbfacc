"""Ableton Link phase error: between two Link peers, and between a live run and a Link peer.

    python benchmarks/bench_link.py [--seconds 60] [--runs 3]

Everything runs inside a private network namespace (``unshare -n``, loopback only): Link discovers
peers by multicast, which must not leave this machine. Peers are separate processes
(``tests/linkpeer.py``, a stand-in for a DAW) logging (monotonic time, beat, tempo) every 5 ms.

1. Two peers: peer A changes the tempo every 10 s (120, 96, 140, ...); at each of B's samples, the
   phase difference to A's beat (interpolated at the same monotonic time) modulo the bar, in ms.
2. A live run (``tests/linkrun.py``: BrainFlow's synthetic board, classic composer, LinkSync) against a
   peer changing tempo every 15 s: our beat at each composing frontier vs the peer's beat there, modulo
   the bar (before that window's correction), and every note onset vs the peer's sixteenth grid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import header, summary

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / "tests" / "linkpeer.py"
RUN = ROOT / "tests" / "linkrun.py"


def in_netns(*commands: list[str], timeout: float) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    quoted = [" ".join(f"'{a}'" for a in cmd) for cmd in commands]
    script = "ip link set lo up && " + " & ".join(quoted) + " & wait"
    r = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        sys.exit(r.stderr[-2000:])


def load(path: Path) -> dict[str, np.ndarray]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]}


def wrap(b: np.ndarray, q: float = 4.0) -> np.ndarray:
    return (b + q / 2) % q - q / 2


def two_peers(seconds: float, tmp: Path) -> np.ndarray:
    a, b = tmp / "a.jsonl", tmp / "b.jsonl"
    start = time.monotonic() + 1.0
    tempos = [120, 96, 140, 110, 80, 150, 100]
    script = ";".join(f"{10 * k}:tempo={tempos[k % len(tempos)]}" for k in range(int(seconds // 10) + 1))
    peer = [sys.executable, str(PEER), "--seconds", str(seconds), "--start", str(start)]
    in_netns([*peer, "--out", str(a), "--script", script], [*peer, "--out", str(b)], timeout=seconds + 60)
    la, lb = load(a), load(b)
    ok = (lb["t"] > start + 1.0) & (lb["peers"] == 1)
    err = wrap(lb["beat"][ok] - np.interp(lb["t"][ok], la["t"], la["beat"])) * 60.0 / lb["tempo"][ok] * 1e3
    return np.abs(err)


def live_run(seconds: float, tmp: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, object]]:
    daw, run = tmp / "daw.jsonl", tmp / "run.json"
    start = time.monotonic() + 1.0
    tempos = [123, 100, 131, 90, 115]
    script = "0:play;" + ";".join(f"{15 * k}:tempo={tempos[k % len(tempos)]}" for k in range(int(seconds // 15) + 1))
    in_netns(
        [sys.executable, str(PEER), "--out", str(daw), "--seconds", str(seconds + 12), "--start", str(start),
         "--script", script],
        [sys.executable, str(RUN), "--out", str(run), "--seconds", str(seconds)],
        timeout=seconds + 90,
    )  # fmt: skip
    peer, res = load(daw), json.loads(run.read_text())
    grid = np.array(res["grid"])
    grid = grid[grid[:, 0] > grid[0, 0] + 2.0]
    beat = np.interp(grid[:, 0], peer["t"], peer["beat"])
    tempo = np.interp(grid[:, 0], peer["t"], peer["tempo"])
    bar_err = np.abs(wrap(grid[:, 1] - beat)) * 60.0 / tempo * 1e3
    # A window composed just before an (unannounced) tempo change predicted its frontier at the old tempo;
    # its notes after the change are composed again when the change arrives, so that frontier is never heard.
    changes = peer["t"][1:][np.diff(peer["tempo"]) != 0]
    fresh = np.array([not np.any((c <= t) & (t < c + 0.5)) for t in grid[:, 0] for c in [changes]])
    ons = np.array([t for t, ch, _ in res["note_ons"] if ch != 9 and t > grid[0, 0]])
    nb, nt = np.interp(ons, peer["t"], peer["beat"]), np.interp(ons, peer["t"], peer["tempo"])
    off = np.abs((nb * 4 + 0.5) % 1 - 0.5) / 4 * 60.0 / nt * 1e3
    return bar_err, bar_err[fresh], off, res["stats"]


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    header("Ableton Link phase error (peers in separate processes, private network namespace)")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for k in range(args.runs):
            e = two_peers(args.seconds, tmp)
            print(f"two peers, run {k + 1}: {summary(e)}; load {os.getloadavg()[0]:.2f}")
        for k in range(args.runs):
            bar, fresh, notes, stats = live_run(args.seconds, tmp)
            print(
                f"live run vs peer, run {k + 1}: bar phase at the frontier, every window {summary(bar)}; "
                f"leaving out frontiers in the 0.5 s after a tempo change (composed before it reached us, "
                f"composed again when it did) {summary(fresh)}; "
                f"note onsets vs the peer's sixteenth grid {summary(notes)}; snaps {stats['snaps']}; "
                f"load {os.getloadavg()[0]:.2f}"
            )


if __name__ == "__main__":
    main()
