"""Scheduler timing on a real JACK MIDI loopback: arrival minus scheduled time.

The receiver runs in its own process (its own GIL) and stamps each message with
time.monotonic() (CLOCK_MONOTONIC, shared across processes). Needs a running JACK
server (`jackd --no-realtime -d dummy -r 48000 -p 64`).

    python bench_scheduler_jack.py [--notes 600] [--load none|numpy|python] [--dispatch thread|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

RECEIVER = r"""
# Queue mode (no Python in the JACK process cycle, so the receiver cannot cause xruns).
# rtmidi stamps each message with jack_get_time() deltas; absolute arrival = anchor + cumulative
# delta, anchor = min over messages of (poll time - cumulative delta), i.e. the tightest bound.
import json, sys, time, rtmidi
port, out_path, n_expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
mi = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "bench-rx", queue_size_limit=8192)
mi.ignore_types(sysex=False, timing=False, active_sense=False)
deadline = time.monotonic() + 10
while port not in mi.get_ports():
    if time.monotonic() > deadline: sys.exit("port not found")
    time.sleep(0.01)
mi.open_port(mi.get_ports().index(port))
print("ready", flush=True)
got, cum = [], 0.0
deadline = time.monotonic() + 120
last = time.monotonic()
while len(got) < n_expected and time.monotonic() < deadline:
    m = mi.get_message()
    if m is None:
        if got and time.monotonic() - last > 2.0:
            break
        time.sleep(0.0002)
        continue
    now = time.monotonic()
    last = now
    cum += m[1] if got else 0.0
    got.append((now, cum, list(m[0])))
anchor = min((p - c for p, c, _ in got), default=0.0)
json.dump([(anchor + c, msg) for _, c, msg in got], open(out_path, "w"))
mi.close_port()
mi.delete()  # explicitly: an implicitly freed JACK client can crash the process at exit
"""


async def busy(kind: str, stop: asyncio.Event) -> None:
    """Every 10 ms, 2 ms of work on the event loop."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 256))
    while not stop.is_set():
        t_end = time.monotonic() + 0.002
        if kind == "numpy":
            while time.monotonic() < t_end:
                y = np.fft.rfft(x, axis=1)
                x = x * 0.999 + np.abs(y[:, :256]).mean() * 1e-6
        elif kind == "python":
            acc = 0
            while time.monotonic() < t_end:
                for i in range(200):
                    acc += i * i
        await asyncio.sleep(0.008)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--notes", type=int, default=600)
    ap.add_argument("--load", default="none", choices=["none", "numpy", "python"])
    ap.add_argument("--dispatch", default="thread", choices=["thread", "asyncio"])
    ap.add_argument("--switch", type=float, default=0.0002, help="GIL switch interval while running (0 = leave)")
    args = ap.parse_args()
    from _common import header

    header(f"MIDI output timing on a JACK loopback (dispatch={args.dispatch}, load={args.load})")
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    from brainharmonic_rt.config import InstrumentSettings
    from brainharmonic_rt.events import Note
    from brainharmonic_rt.sinks.rtmidi_port import RtMidiSink
    from brainharmonic_rt.sinks.scheduler import Scheduler

    name = f"bench{os.getpid()}"
    sink = RtMidiSink(virtual_name="out", client_name=name)
    inst = {"a": InstrumentSettings(channel=0, program=0)}
    sink.open(inst, 120.0)
    n = args.notes
    out_path = tempfile.mktemp(suffix=".json")
    rx = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, f"{name}:out", out_path, str(2 * n + 1)], stdout=subprocess.PIPE, text=True
    )
    assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
    await asyncio.sleep(0.3)
    rng = np.random.default_rng(1)
    stop = asyncio.Event()
    load = asyncio.create_task(busy(args.load, stop))
    targets: list[tuple[float, int, int]] = []  # (wall target, status, pitch)
    loop = asyncio.get_running_loop()
    hop = 0.25
    per_hop = max(1, round(n * hop / 10.0))  # ~10 s of music
    sw = args.switch if args.switch > 0 else None
    if args.dispatch == "thread":
        sched = Scheduler([sink], realtime=True, instruments=inst, switch_interval=sw)
        async with sched:
            origin = sched._origin
            assert origin is not None
            k = 0
            t0 = time.monotonic()
            while k < n:
                now = time.monotonic() - origin
                notes = []
                for _ in range(min(per_hop, n - k)):
                    at = now + rng.uniform(0.05, 0.3)
                    notes.append(Note(at, 0.05, 36 + k % 80, 100, 0))
                    targets.append((origin + at, 0x90, 36 + k % 80))
                    targets.append((origin + at + 0.05, 0x80, 36 + k % 80))
                    k += 1
                sched.schedule(notes)
                await asyncio.sleep(max(0.0, t0 + hop * (k // per_hop) - time.monotonic()))
            await sched.drain()
            stats = sched.stats()
    else:  # plain asyncio call_at on loop.time() (== time.monotonic())
        import mido

        sink.send(mido.Message("program_change", channel=0, program=0), 0.0)
        k = 0
        t0 = time.monotonic()
        while k < n:
            for _ in range(min(per_hop, n - k)):
                at = time.monotonic() + rng.uniform(0.05, 0.3)
                p = 36 + k % 80
                loop.call_at(at, sink.send, mido.Message("note_on", note=p, velocity=100), 0.0)
                loop.call_at(at + 0.05, sink.send, mido.Message("note_off", note=p), 0.0)
                targets += [(at, 0x90, p), (at + 0.05, 0x80, p)]
                k += 1
            await asyncio.sleep(max(0.0, t0 + hop * (k // per_hop) - time.monotonic()))
        await asyncio.sleep(0.5)
        stats = {}
    stop.set()
    await load
    rx.wait(timeout=60)
    with open(out_path) as fh:
        got = json.load(fh)
    sink.close()
    # match each arrival to the nearest unused target of the same (status, pitch)
    pending: dict[tuple[int, int], list[float]] = {}
    for t, st, p in sorted(targets):
        pending.setdefault((st, p), []).append(t)
    lat = []
    for t, m in got:
        if len(m) != 3:
            continue
        key = (m[0] & 0xF0, m[1])
        cands = pending.get(key, [])
        if not cands:
            continue
        i = int(np.argmin([abs(t - c) for c in cands]))
        if abs(t - cands[i]) < 0.1:
            lat.append(t - cands.pop(i))
    lat_ms = np.array(lat) * 1000
    print(
        json.dumps(
            {
                "dispatch": args.dispatch,
                "load": args.load,
                "switch_interval": sw,
                "messages": len(lat_ms),
                "median_ms": round(float(np.median(lat_ms)), 3),
                "p99_ms": round(float(np.percentile(lat_ms, 99)), 3),
                "max_ms": round(float(lat_ms.max()), 3),
                "min_ms": round(float(lat_ms.min()), 3),
                "scheduler_stats": stats,
                "received": len(got),
                "expected": 2 * n + 1,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
