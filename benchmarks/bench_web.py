"""The web page's cost to the music, and its command-to-effect latency (service in its own process).

One real service (``brainharmonic run --web``) plays a live LSL stream of an eegmat recording to a JACK
MIDI port; this process is the browsers: websocket viewers that acknowledge every second frame, as the
page does, and HTTP clients that POST commands, as the page does.

* **viewers**: each round runs three fresh services for ``--seconds`` each (``--duration``): with no
  viewer, with ``--viewers`` (50) viewers, and with the same viewers plus one that stops reading (a
  stalled browser). Each service prints its processing latency (window's last sample arrived → its
  notes scheduled) over the whole run; the rounds interleave the phases so the machine's other load
  hits them alike. Frames go out at ``[web] rate_hz = 20`` (the most the page allows).
* **commands**: ``POST /api/cmd`` on a kept-alive connection (what the page's fetch does) → the effect
  on the MIDI port (JACK-timed): ``set_program`` → program_change; ``mute`` → note_off / CC 123;
  ``set_tempo`` → the first step of the new grid (from the reply); and POST → reply for all of them.

    python benchmarks/bench_web.py [--rounds 3] [--seconds 60] [--viewers 50] [--commands 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import header, summary
from _control_rig import Jack, JackTimedReader, Services, have, note_ons, recordings

#: Windows every 0.1 s in the viewer phases: more windows per run, a steadier p99.
HOP = 0.1
WEB_TOML = """
[web]
rate_hz = {rate}
commands_per_second = 50.0
command_burst = 50
stall_timeout = 5.0
"""
MUTED, PROGRAMMED = "central", "frontal"
LATENCY = re.compile(r"processing latency p50 ([\d.]+) ms p99 ([\d.]+) ms")
WINDOWS = re.compile(r"stopped \(.*?\): (\d+) windows")


# --------------------------------------------------------------------------------------------- viewers


class Viewer:
    """A browser tab: reads every frame and acknowledges every second one (or, stalled, reads nothing at all)."""

    def __init__(self, url: str, stalled: bool = False) -> None:
        self.url, self.stalled = url, stalled
        self.frames = 0
        self.first = self.last = 0.0
        self.task: asyncio.Task[None] | None = None

    def rate(self) -> float:
        """Frames per second between the first and the last one received."""
        return (self.frames - 1) / (self.last - self.first) if self.frames > 1 and self.last > self.first else 0.0

    async def run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        seq = re.compile(r'"seq":(\d+)')
        try:
            async with connect(self.url.replace("http://", "ws://") + "/ws", max_queue=1, max_size=None) as ws:
                if self.stalled:
                    await asyncio.Future()  # never reads: its queue and the TCP window fill up
                async for message in ws:
                    m = seq.search(message if isinstance(message, str) else message.decode())
                    self.frames += 1
                    self.last = time.monotonic()
                    self.first = self.first or self.last
                    if m and self.frames % 2 == 1:  # every second frame, as the page does (the first is full)
                        await ws.send('{"ack":' + m.group(1) + "}")
        except ConnectionClosed:
            pass


async def get_json(url: str) -> Any:
    reader, writer = await asyncio.open_connection(*_host_port(url))
    path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {_host_port(url)[0]}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def _host_port(url: str) -> tuple[str, int]:
    host, _, port = url.split("/")[2].rpartition(":")
    return host, int(port)


async def phase(
    svc: Services, sid: str, name: str, seconds: float, viewers: int, stalled: int, web_toml: str
) -> dict[str, Any]:
    svc.web_service(name, sid, tempo=120.0, seed=4, hop=HOP, toml_extra=web_toml, extra=["--duration", str(seconds)])
    url = await asyncio.to_thread(svc.web_url, name)
    tabs = [Viewer(url) for _ in range(viewers)] + [Viewer(url, stalled=True) for _ in range(stalled)]
    for tab in tabs:
        tab.task = asyncio.create_task(tab.run())
    load_before = os.getloadavg()[0]
    web: dict[str, Any] = {}
    if tabs:  # the page's own figures, late in the run (the service exits at the end of --duration)
        await asyncio.sleep(seconds * 0.8)
        try:
            web = (await get_json(url + "/api/state"))["web"]
        except (OSError, ValueError, KeyError) as exc:
            print(f"# {name}: no state late in the run ({exc})")
    out = await asyncio.to_thread(svc.finish, name, seconds + 120)
    for tab in tabs:
        assert tab.task is not None
        tab.task.cancel()
    await asyncio.gather(*(t.task for t in tabs if t.task is not None), return_exceptions=True)
    m, w = LATENCY.search(out), WINDOWS.search(out)
    if m is None or w is None:
        raise RuntimeError(f"{name} printed no latency summary:\n{out[-1500:]}")
    healthy = [t.rate() for t in tabs if not t.stalled]
    return {
        "p50": float(m.group(1)),
        "p99": float(m.group(2)),
        "windows": int(w.group(1)),
        "load": (load_before + os.getloadavg()[0]) / 2,
        "frames_per_viewer_s": statistics.median(healthy) if healthy else 0.0,
        "dropped": web.get("viewers_dropped"),
        "build_ms": web.get("build_ms", {}),
        "send_ms": web.get("send_ms", {}),
    }


async def viewers_bench(rounds: int, seconds: float, n: int, web_toml: str) -> dict[str, list[dict[str, Any]]]:
    work = Path(tempfile.mkdtemp(prefix="bh-bench-web-"))
    out: dict[str, list[dict[str, Any]]] = {"no viewer": [], f"{n} viewers": [], f"{n} viewers + 1 stalled": []}
    with Jack(), Services(work) as svc:
        sid = svc.streams({"solo": recordings()[0]})["solo"]
        for r in range(rounds):
            for label, viewers, stalled in (
                (f"{n} viewers + 1 stalled", n, 1),
                ("no viewer", 0, 0),
                (f"{n} viewers", n, 0),
            ):
                res = await phase(svc, sid, f"r{r}-{label.replace(' ', '')}", seconds, viewers, stalled, web_toml)
                out[label].append(res)
                b, w = res["build_ms"], res["send_ms"]
                cost = f", build p50/p99 {b['p50']}/{b['p99']} ms, send p50/p99 {w['p50']}/{w['p99']} ms" if b else ""
                print(
                    f"# round {r + 1} {label:<24} p50 {res['p50']:.2f} ms p99 {res['p99']:.2f} ms, "
                    f"{res['windows']} windows, {res['frames_per_viewer_s']:.1f} frames/s per viewer, "
                    f"dropped by the service {res['dropped']}{cost}, load {res['load']:.2f}",
                    flush=True,
                )
    return out


# --------------------------------------------------------------------------------------------- commands


class Poster:
    """POST /api/cmd on one kept-alive HTTP/1.1 connection, as a browser's fetch does."""

    def __init__(self, url: str) -> None:
        self.host, self.port = _host_port(url)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Poster:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()

    async def post(self, cmd: dict[str, Any]) -> tuple[dict[str, Any], float, float]:
        assert self.reader is not None and self.writer is not None
        body = json.dumps(cmd).encode()
        head = (
            f"POST /api/cmd HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sent = time.monotonic()
        self.writer.write(head + body)
        await self.writer.drain()
        headers = await self.reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", headers).group(1))  # type: ignore[union-attr]
        reply = json.loads(await self.reader.readexactly(length))
        arrived = time.monotonic()
        if not reply["ok"]:
            raise RuntimeError(f"{cmd} refused: {reply['message']}")
        return reply, sent, arrived


async def commands_bench(rounds: int, web_toml: str) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="bh-bench-webcmd-"))
    out: dict[str, list[float]] = {k: [] for k in ("ack", "program", "mute", "tempo_grid")}
    with Jack() as jack, Services(work) as svc:
        sid = svc.streams({"solo": recordings()[0]})["solo"]
        port = svc.web_service("cmd", sid, tempo=120.0, seed=4, toml_extra=web_toml)
        url = await asyncio.to_thread(svc.web_url, "cmd")
        reader = await asyncio.to_thread(JackTimedReader, port, 90.0)
        print(f"# JACK period {jack.period} frames @ 48 kHz", flush=True)

        async def effect(pred: Any, after: float, timeout: float = 5.0) -> float | None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                hits = [t for t, m in reader.messages() if t >= after and pred(m)]
                if hits:
                    return min(hits)
                await asyncio.sleep(0.01)
            return None

        while len(note_ons(reader.messages())) < 10:
            svc.check()
            await asyncio.sleep(0.5)
        async with Poster(url) as page:
            channels = {}
            for name in (MUTED, PROGRAMMED):
                reply, _, _ = await page.post({"cmd": "set_program", "instrument": name, "program": 0})
                channels[name] = reply["result"]["channel"]
            for i in range(rounds):
                svc.check()
                program = 11 if i % 2 else 73
                _, sent, acked = await page.post({"cmd": "set_program", "instrument": PROGRAMMED, "program": program})
                out["ack"].append((acked - sent) * 1000)
                pc = [0xC0 | channels[PROGRAMMED], program]
                t = await effect(lambda m, pc=pc: m == pc, sent - 0.001)
                if t is not None:
                    out["program"].append((t - sent) * 1000)
                await asyncio.sleep(0.3)
                ch = channels[MUTED]
                _, sent, acked = await page.post({"cmd": "mute", "instrument": MUTED})
                out["ack"].append((acked - sent) * 1000)
                t = await effect(
                    lambda m, ch=ch: m[0] in (0x80 | ch, 0xB0 | ch) or (m[0] == 0x90 | ch and m[2] == 0), sent - 0.001
                )
                if t is not None:
                    out["mute"].append((t - sent) * 1000)
                await asyncio.sleep(0.3)
                await page.post({"cmd": "unmute", "instrument": MUTED})
                await asyncio.sleep(0.3)
                bpm = (100.0, 140.0)[i % 2]
                reply, sent, acked = await page.post({"cmd": "set_tempo", "bpm": bpm})
                out["ack"].append((acked - sent) * 1000)
                res = reply["result"]
                pos = res["from_beat"] * 4
                step0 = res["from_monotonic"] + (math.ceil(pos - 1e-6) - pos) * 60.0 / bpm / 4
                out["tempo_grid"].append((step0 - sent) * 1000)
                await asyncio.sleep(0.5)
        reader.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="Rounds of the three viewer phases (default 3).")
    p.add_argument("--seconds", type=float, default=60.0, help="Length of each phase's run (default 60 s).")
    p.add_argument("--viewers", type=int, default=50, help="Simultaneous websocket viewers (default 50).")
    p.add_argument("--commands", type=int, default=40, help="Commands of each kind (default 40; 0 skips).")
    p.add_argument("--skip-viewers", action="store_true", help="Only the command latencies.")
    p.add_argument("--rate", type=float, default=20.0, help="[web] rate_hz of the service (default 20, the most).")
    args = p.parse_args()
    have("jackd")
    header("bench_web: the web page's cost to the music, and command → effect on the MIDI port")
    web_toml = WEB_TOML.format(rate=args.rate)
    print(f"# [web] rate_hz = {args.rate:g}; windows every {HOP} s in the viewer phases")
    print(f"# load average at start: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    if not args.skip_viewers:
        res = asyncio.run(viewers_bench(args.rounds, args.seconds, args.viewers, web_toml))
        base = statistics.median(r["p99"] for r in res["no viewer"])
        for label, runs in res.items():
            p99 = [r["p99"] for r in runs]
            p50 = [r["p50"] for r in runs]
            each = ", ".join(f"{x:.2f}" for x in p99)
            print(
                f"{label:<26} processing p99 median {statistics.median(p99):.2f} ms (runs {each}; "
                f"{statistics.median(p99) - base:+.2f} ms vs no viewer), p50 median {statistics.median(p50):.2f} ms, "
                f"{statistics.median(r['windows'] for r in runs):.0f} windows per run, "
                f"{statistics.median(r['frames_per_viewer_s'] for r in runs):.1f} frames/s per viewer, "
                f"load {statistics.median(r['load'] for r in runs):.2f}"
            )
    if args.commands:
        out = asyncio.run(commands_bench(args.commands, web_toml))
        labels = {
            "ack": "POST /api/cmd → reply (all commands)",
            "program": "set_program → program_change on the port",
            "mute": "mute → note_off/CC 123 on the port",
            "tempo_grid": "set_tempo → first step of the new grid",
        }
        for k, label in labels.items():
            print(f"{label:<44} {summary(out[k]) if out[k] else 'no samples'}")
    print(f"# load average at end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
