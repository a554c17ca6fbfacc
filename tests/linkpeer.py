"""An Ableton Link peer in its own process (a stand-in for a DAW), for tests and benchmarks.

Joins the session (quantum 4, start/stop sync), follows a script of timed actions, and logs what it
sees every few milliseconds as JSON lines: monotonic time, beat, tempo, playing, peers.

    python tests/linkpeer.py --out log.jsonl --seconds 20 --start MONO --script "0:tempo=123,play;8:tempo=100"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time


def _actions(script: str) -> list[tuple[float, list[str]]]:
    out = []
    for part in filter(None, script.split(";")):
        at, _, what = part.partition(":")
        out.append((float(at), what.split(",")))
    return sorted(out)


async def main(args: argparse.Namespace) -> None:
    from aalink import Link

    link = Link(args.bpm)
    link.quantum = 4
    link.start_stop_sync_enabled = True
    link.enabled = True
    start = args.start if args.start else time.monotonic()
    todo = _actions(args.script)
    with open(args.out, "w") as fh:
        while (now := time.monotonic()) < start + args.seconds:
            while todo and now >= start + todo[0][0]:
                for act in todo.pop(0)[1]:
                    if act.startswith("tempo="):
                        link.tempo = float(act.split("=")[1])
                    elif act == "play":
                        link.playing = True
                    elif act == "stop":
                        link.playing = False
            t0 = time.monotonic()
            beat = link.beat
            t1 = time.monotonic()
            rec = {"t": (t0 + t1) / 2, "beat": beat, "tempo": link.tempo, "playing": link.playing}
            rec["peers"] = link.num_peers
            fh.write(json.dumps(rec) + "\n")
            await asyncio.sleep(args.every)
    link.enabled = False


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--start", type=float, default=0.0, help="monotonic time the script counts from")
    p.add_argument("--script", default="")
    p.add_argument("--bpm", type=float, default=120.0)
    p.add_argument("--every", type=float, default=0.005)
    asyncio.run(main(p.parse_args()))
