"""Multi-performer sync: two followers on this machine follow one leader; how far apart are their beats?

Three real services (``brainharmonic run --mqtt``), each fed by its own live LSL stream of an
eegmat recording and playing to its own JACK MIDI port; the leader runs ``--lead`` at TEMPO, the followers
``--follow lead`` starting at other tempos and keys. After a warm-up, for every leader beat:

* scheduled: the beat time each instance publishes on ``sync/beat`` (its own clock, shared here),
  leaving out beats within 2 s of a leader change (a beat moved by a change is not published again,
  so its last published time can be stale there);
* heard: the first note_on each port delivers within ±20 ms of the leader's beat (JACK-timed),
  compared pairwise where both play on that beat.

Every CHANGE_EVERY seconds the leader gets a new tempo and key over MQTT (as a performer would),
so the numbers include following through changes, not just a steady clock.

    python benchmarks/bench_sync.py [--seconds 300] [--tempo 120] [--warmup 20] [--change-every 60] [--json OUT]

Target (issue 6): beat onset difference p99 <= 10 ms over 5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import header
from _control_rig import Jack, JackTimedReader, Services, have, note_ons, recordings

NAMES = ("lead", "f1", "f2")


def stats(values: list[float]) -> dict[str, float]:
    a = np.abs(np.asarray(values, dtype=float))
    if a.size == 0:
        return {"n": 0}
    return {
        "n": int(a.size),
        "p50_ms": round(float(np.median(a)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "max_ms": round(float(a.max()), 3),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import aiomqtt

    from tests.broker import MosquittoBroker

    work = Path(tempfile.mkdtemp(prefix="bh-bench-sync-"))
    beats: dict[str, dict[int, float]] = {n: {} for n in NAMES}
    health: dict[str, dict[str, Any]] = {}
    with Jack() as jack, MosquittoBroker(work / "mq") as broker, Services(work) as svc:
        files = recordings()
        sids = svc.streams({n: files[i] for i, n in enumerate(NAMES)})
        ports = {
            "lead": svc.service("lead", sids["lead"], broker, tempo=args.tempo, seed=1, extra=["--lead"]),
            "f1": svc.service("f1", sids["f1"], broker, tempo=90.0, seed=2, extra=["--follow", "lead"]),
            "f2": svc.service("f2", sids["f2"], broker, tempo=140.0, seed=3, extra=["--follow", "lead"]),
        }
        readers = {n: await asyncio.to_thread(JackTimedReader, p, 90.0) for n, p in ports.items()}
        async with aiomqtt.Client(**broker.client_args("controller")) as client:
            await client.subscribe("brainharmonic/+/sync/beat")
            await client.subscribe("brainharmonic/+/telemetry/health")

            async def listen() -> None:
                async for m in client.messages:
                    body = json.loads(m.payload if isinstance(m.payload, bytes) else b"{}")
                    name = str(m.topic).split("/")[1]
                    if str(m.topic).endswith("sync/beat"):
                        beats.setdefault(name, {})[body["beat"]] = body["time"]
                    else:
                        health[name] = body

            listener = asyncio.create_task(listen())
            started = time.monotonic()
            changes = itertools.cycle([(args.tempo + 24, "F", "major"), (args.tempo, "D", "dorian")])
            next_change = started + args.warmup + args.change_every
            n_changes = 0
            change_times: list[float] = []
            print(
                f"# JACK period {jack.period} frames @ 48 kHz; "
                f"running {args.seconds:.0f} s (+{args.warmup:.0f} s warm-up)"
            )
            while time.monotonic() - started < args.seconds + args.warmup:
                await asyncio.sleep(1.0)
                svc.check()
                if args.change_every > 0 and time.monotonic() >= next_change:
                    bpm, key, scale = next(changes)
                    for cmd in ({"cmd": "set_tempo", "bpm": bpm}, {"cmd": "set_key", "key": key, "scale": scale}):
                        await client.publish("brainharmonic/lead/cmd", json.dumps(cmd).encode(), qos=1)
                    next_change += args.change_every
                    n_changes += 1
                    change_times.append(time.monotonic())
                if int(time.monotonic() - started) % 60 == 0:
                    roles = {n: h.get("sync", {}).get("role") for n, h in health.items()}
                    print(
                        f"  {time.monotonic() - started:5.0f} s: beats {[len(beats[n]) for n in NAMES]}, roles {roles}"
                    )
            listener.cancel()
        msgs = {n: r.messages() for n, r in readers.items()}
        for r in readers.values():
            r.close()
    t_from = started + args.warmup
    lead_beats = {b: t for b, t in beats["lead"].items() if t >= t_from}
    steady = {b: t for b, t in lead_beats.items() if all(abs(t - c) > 2.0 for c in change_times)}
    result: dict[str, Any] = {
        "seconds": args.seconds,
        "tempo": args.tempo,
        "jack_period": jack.period,
        "leader_changes": n_changes,
    }
    scheduled: dict[str, Any] = {}
    for f in NAMES[1:]:
        common = [b for b in steady if b in beats[f]]
        scheduled[f"lead-{f}"] = stats([(beats[f][b] - steady[b]) * 1000 for b in common])
    common = [b for b in steady if b in beats["f1"] and b in beats["f2"]]
    scheduled["f1-f2"] = stats([(beats["f1"][b] - beats["f2"][b]) * 1000 for b in common])
    result["scheduled"] = scheduled
    onsets = {n: np.array(sorted(t for t, _ in note_ons(m))) for n, m in msgs.items()}

    def onset_near(name: str, t: float) -> float | None:
        a = onsets[name]
        i = int(np.searchsorted(a, t - 0.02))
        return float(a[i]) if i < a.size and a[i] <= t + 0.02 else None

    heard: dict[str, Any] = {}
    late: dict[str, list[float]] = {n: [] for n in NAMES}
    per_beat = {b: {n: onset_near(n, t) for n in NAMES} for b, t in lead_beats.items()}
    for b, on in per_beat.items():
        for n in NAMES:
            if on[n] is not None:
                late[n].append((on[n] - lead_beats[b]) * 1000)
    for x, y in itertools.combinations(NAMES, 2):
        diffs = [(on[x] - on[y]) * 1000 for on in per_beat.values() if on[x] is not None and on[y] is not None]
        heard[f"{x}-{y}"] = stats(diffs)
    result["heard"] = heard
    result["onset_vs_leader_beat"] = {n: stats(v) for n, v in late.items()}
    result["leader_beats"] = len(lead_beats)
    result["sync_health"] = {n: h.get("sync") for n, h in health.items()}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=300.0, help="Measured duration (default 300).")
    p.add_argument("--warmup", type=float, default=20.0, help="Seconds ignored at the start (lock, baseline).")
    p.add_argument("--tempo", type=float, default=120.0, help="Leader tempo (BPM).")
    p.add_argument(
        "--change-every", type=float, default=60.0, help="Seconds between leader tempo/key changes (0: none)."
    )
    p.add_argument("--json", help="Also write the results here.")
    args = p.parse_args()
    have("mosquitto", "jackd")
    header("bench_sync: 2 followers + 1 leader on one machine, beat onset differences")
    result = asyncio.run(run(args))
    print(f"leader beats measured: {result['leader_beats']}, leader tempo/key changes: {result['leader_changes']}")
    for kind in ("scheduled", "heard"):
        for pair, s in result[kind].items():
            print(f"{kind:>9} {pair:<8} {s}")
    for n, s in result["onset_vs_leader_beat"].items():
        print(f"  onset - leader beat, {n:<4}: {s}")
    print(f"sync health: {result['sync_health']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
