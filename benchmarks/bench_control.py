"""Command-to-effect latency: an MQTT command is published → its effect arrives on the MIDI port.

One real service (``brainharmonic run --mqtt``) plays a live LSL stream of an eegmat recording to a
JACK MIDI port; this process publishes commands as the ``controller`` user and reads the port (JACK-timed).
Effects, per command:

* ``set_program`` → the program_change message arrives;
* ``mute`` → the muted channel's note_off / CC 123 arrives (its sounding notes end at once);
* ``set_tempo`` → (a) the first grid step of the new tempo (from the ack: ``from_monotonic`` and
  ``from_beat``), the system's part; (b) the first note_on at the new tempo, which also waits for
  the music to have a note on a step.
* every command: the reply on ``<instance>/reply``.

    python benchmarks/bench_control.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import header, summary
from _control_rig import Jack, JackTimedReader, Services, have, note_ons, recordings

MUTED = "central"  # the harmony pad: sustained chords, so notes are usually sounding when muted
PROGRAMMED = "frontal"


async def run(rounds: int) -> dict[str, list[float]]:
    import aiomqtt

    from tests.broker import MosquittoBroker

    work = Path(tempfile.mkdtemp(prefix="bh-bench-control-"))
    out: dict[str, list[float]] = {k: [] for k in ("ack", "program", "mute", "tempo_grid", "tempo_note")}
    with Jack() as jack, MosquittoBroker(work / "mq") as broker, Services(work) as svc:
        sid = svc.streams({"solo": recordings()[0]})["solo"]
        port = svc.service("bench", sid, broker, tempo=120.0, seed=4)
        reader = await asyncio.to_thread(JackTimedReader, port, 90.0)
        print(f"# JACK period {jack.period} frames @ 48 kHz")
        async with aiomqtt.Client(**broker.client_args("controller")) as client:
            await client.subscribe("brainharmonic/bench/reply", qos=1)
            await client.subscribe("brainharmonic/bench/error", qos=1)
            await client.subscribe("brainharmonic/bench/telemetry/music")
            replies: dict[str, tuple[dict[str, Any], float]] = {}
            channels: dict[str, int] = {}

            async def listen() -> None:
                async for m in client.messages:
                    body = json.loads(m.payload if isinstance(m.payload, bytes) else b"{}")
                    if "ok" in body and body.get("id"):
                        replies[body["id"]] = (body, time.monotonic())

            listener = asyncio.create_task(listen())

            async def ask(cmd: dict[str, Any]) -> tuple[dict[str, Any], float, float]:
                cid = uuid.uuid4().hex[:12]
                sent = time.monotonic()
                await client.publish("brainharmonic/bench/cmd", json.dumps({**cmd, "id": cid}).encode(), qos=1)
                deadline = sent + 5.0
                while cid not in replies:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no reply to {cmd}")
                    await asyncio.sleep(0.001)
                body, arrived = replies.pop(cid)
                if not body["ok"]:
                    raise RuntimeError(f"{cmd} refused: {body['message']}")
                return body, sent, arrived

            async def effect(pred: Any, after: float, timeout: float = 5.0) -> float | None:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    hits = [t for t, m in reader.messages() if t >= after and pred(m)]
                    if hits:
                        return min(hits)
                    await asyncio.sleep(0.01)
                return None

            # wait for the music (the service resolves the stream, fills a window, calibrates)
            while len(note_ons(reader.messages())) < 10:
                svc.check()
                await asyncio.sleep(0.5)
            for name in (MUTED, PROGRAMMED):  # channel of each instrument, from a program change reply
                body, _, _ = await ask({"cmd": "set_program", "instrument": name, "program": 0})
                channels[name] = body["result"]["channel"]
            tempos = [100.0, 140.0]
            for i in range(rounds):
                svc.check()
                # program
                program = 11 if i % 2 else 73
                body, sent, acked = await ask({"cmd": "set_program", "instrument": PROGRAMMED, "program": program})
                out["ack"].append((acked - sent) * 1000)
                pc = [0xC0 | channels[PROGRAMMED], program]
                t = await effect(lambda m, pc=pc: m == pc, sent - 0.001)
                if t is not None:
                    out["program"].append((t - sent) * 1000)
                await asyncio.sleep(0.3)
                # mute: note_off or CC 123 on the muted channel
                ch = channels[MUTED]
                body, sent, acked = await ask({"cmd": "mute", "instrument": MUTED})
                out["ack"].append((acked - sent) * 1000)
                t = await effect(
                    lambda m, ch=ch: m[0] in (0x80 | ch, 0xB0 | ch) or (m[0] == 0x90 | ch and m[2] == 0), sent - 0.001
                )
                if t is not None:
                    out["mute"].append((t - sent) * 1000)
                await asyncio.sleep(0.3)
                await ask({"cmd": "unmute", "instrument": MUTED})
                await asyncio.sleep(0.3)
                # tempo
                bpm = tempos[i % 2]
                body, sent, acked = await ask({"cmd": "set_tempo", "bpm": bpm})
                out["ack"].append((acked - sent) * 1000)
                res = body["result"]
                pos = res["from_beat"] * 4
                step0 = res["from_monotonic"] + (math.ceil(pos - 1e-6) - pos) * 60.0 / bpm / 4
                out["tempo_grid"].append((step0 - sent) * 1000)
                t = await effect(lambda m: m[0] & 0xF0 == 0x90 and m[2] > 0, res["from_monotonic"] - 0.002)
                if t is not None:
                    out["tempo_note"].append((t - sent) * 1000)
                await asyncio.sleep(0.5)
            listener.cancel()
        reader.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=40, help="Commands of each kind (default 40).")
    args = p.parse_args()
    have("mosquitto", "jackd")
    header("bench_control: MQTT command → effect on the MIDI port (service in its own process)")
    out = asyncio.run(run(args.rounds))
    labels = {
        "ack": "publish → reply (all commands)",
        "program": "set_program → program_change on the port",
        "mute": "mute → note_off/CC 123 on the port",
        "tempo_grid": "set_tempo → first step of the new grid",
        "tempo_note": "set_tempo → first note_on at the new tempo",
    }
    for k, label in labels.items():
        print(f"{label:<44} {summary(out[k]) if out[k] else 'no samples'}")


if __name__ == "__main__":
    main()
