"""Soak: one learned-mode service for an hour while its stream and its broker come and go.

``brainharmonic run --mode learned`` runs as its own process (``--no-audio``; MIDI to a JACK
virtual port read here, JACK-timed; MQTT against a real mosquitto; a session folder) and reads
``brainharmonic replay FILE --loop``, an eegmat recording (19 ch @ 500 Hz) served over LSL by another
process. Every block (10 min) the replay is killed (SIGKILL: the stream vanishes) and started again
2 s later; every third block boundary the broker is restarted. At the end the service gets SIGTERM.

Printed, per block: the service's RSS, CPU, the notes played, the note lateness p99 two ways
(the scheduler's dispatch lateness from the health telemetry, a rolling window of its last 4096
note-ons; and on the port: JACK arrival minus the note's time from the session's ``notes.jsonl``,
anchored to the block's least-late note), windows dropped, stream and MQTT reconnects, load average.
At the end: the RSS slope after the first block (least squares over a sample every 10 s), stuck notes
(note-ons without a note-off on the port after the service stopped), crashes (the service exiting
before the end).

    python benchmarks/bench_soak.py [--minutes 60] [--block 10] [--file Subject00_2.edf]
    python benchmarks/bench_soak.py --minutes 3            # smoke: blocks of 1 min
Targets: RSS slope <= 2 MB/h, 0 stuck notes, lateness p99 per block <= 2 ms, 0 crashes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from _common import header
from _control_rig import EEGMAT, HealthListener, Jack, JackTimedReader, Services, have, proc_cpu_s, proc_memory

INSTANCE = "soak"
SAMPLE_EVERY = 10.0  # s between RSS samples


def slope_mb_per_h(t_s: np.ndarray, mb: np.ndarray) -> float:
    """Least-squares slope of ``mb`` over ``t_s``, in MB per hour."""
    if t_s.size < 3:
        return float("nan")
    return float(np.polyfit(t_s / 3600.0, mb, 1)[0])


def port_lateness(
    msgs: list[tuple[float, list[int]]], notes: list[dict[str, Any]], window: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Port note-ons matched with ``notes.jsonl`` rows: (arrival monotonic, arrival - note time) s.

    Arrival minus note time is the scheduler's origin plus the lateness, so it is nearly constant. The
    origin is the offset most pairs share among the first 200 note-ons and the rows near them in order
    (the recorder writes a note when its note_on goes out; a missing row only shifts them); then each
    note-on takes the
    row of its pitch and channel whose time is nearest its arrival minus that origin, if within
    ``window`` s (a note later than that is left out: the caller prints both counts).
    """
    ons = [(t, m) for t, m in msgs if m[0] & 0xF0 == 0x90 and m[2] > 0]
    pairs = [
        t - notes[j]["time"]
        for i, (t, m) in enumerate(ons[:200])
        for j in range(max(0, i - 8), min(len(notes), i + 9))
        if notes[j]["pitch"] == m[1] and notes[j]["channel"] == m[0] & 0x0F
    ]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    # the right pairs share one offset (to a few ms); pairs shifted by a missing row scatter
    offs = np.array(pairs)
    counts = [(np.abs(offs - x) <= 0.003).sum() for x in offs]
    origin = float(np.median(offs[np.abs(offs - offs[int(np.argmax(counts))]) <= 0.003]))
    rows: dict[tuple[int, int], list[float]] = {}
    for n in notes:
        rows.setdefault((n["channel"], n["pitch"]), []).append(n["time"])
    times = {k: np.array(v) for k, v in rows.items()}
    arrivals, offsets = [], []
    for t, m in ons:
        cand = times.get((m[0] & 0x0F, m[1]))
        if cand is None:
            continue
        best = cand[np.argmin(np.abs(t - origin - cand))]
        if abs(t - origin - best) <= window:
            arrivals.append(t)
            offsets.append(t - best)
    return np.array(arrivals), np.array(offsets)


def stuck_notes(msgs: list[tuple[float, list[int]]]) -> tuple[int, int]:
    """(note-ons with no note-off after them, of those the ones a later CC 123 on their channel would end)."""
    sounding: dict[tuple[int, int], int] = {}
    all_off_after: dict[int, float] = {}
    last_on: dict[tuple[int, int], float] = {}
    for t, m in msgs:
        kind, ch = m[0] & 0xF0, m[0] & 0x0F
        if kind == 0x90 and m[2] > 0:
            sounding[(ch, m[1])] = sounding.get((ch, m[1]), 0) + 1
            last_on[(ch, m[1])] = t
        elif kind == 0x80 or (kind == 0x90 and m[2] == 0):
            if sounding.get((ch, m[1]), 0) > 0:
                sounding[(ch, m[1])] -= 1
        elif kind == 0xB0 and m[1] == 123:
            all_off_after[ch] = t
    stuck = {k: v for k, v in sounding.items() if v > 0}
    covered = sum(v for k, v in stuck.items() if all_off_after.get(k[0], -1.0) >= last_on[k])
    return sum(stuck.values()), covered


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a torn last line
                rows.append(json.loads(line))
    return rows


def run(args: argparse.Namespace) -> None:
    from tests.broker import MosquittoBroker

    work = Path(tempfile.mkdtemp(prefix="bh-bench-soak-"))
    total, block = args.minutes * 60.0, args.block * 60.0
    n_blocks = int(np.ceil(total / block - 1e-9))
    path = EEGMAT / args.file
    sid = f"bh-soak-{uuid.uuid4().hex[:8]}"
    print(f"# {args.minutes:g} min, blocks of {args.block:g} min: replay killed and restarted every block, broker")
    print(f"# restarted every {args.broker_every} blocks; recording {path.name} looped; work folder {work}")
    samples: list[tuple[float, dict[str, float], float]] = []  # (t since start, memory MB, cpu s)
    rows: list[dict[str, Any]] = []
    crashes: list[str] = []
    with Jack(private=True) as jack, MosquittoBroker(work / "mq") as broker, Services(work) as svc:
        svc.replay("replay-0", path, sid)
        port = svc.service(
            INSTANCE,
            sid,
            broker,
            tempo=96.0,
            seed=7,
            extra=["--mode", "learned", "--no-audio", "--record", str(work / "sessions")],
        )
        run_proc = next(p for n, p in svc.procs if n == INSTANCE)
        reader = JackTimedReader(port, 120.0)
        health = HealthListener(broker, INSTANCE)
        print(f"# JACK period {jack.period} frames @ 48 kHz; service pid {run_proc.pid}", flush=True)
        start = time.monotonic()
        block_start, k, prev_cpu, prev_health = start, 0, proc_cpu_s(run_proc.pid), health.snapshot(INSTANCE)
        next_sample = start
        block_edges = [start]
        while True:
            now = time.monotonic()
            if run_proc.poll() is not None:
                tail = (work / f"{INSTANCE}.log").read_text(errors="replace")[-600:]
                crashes.append(f"exit {run_proc.returncode} at {now - start:.0f} s: {tail}")
                break
            if now >= next_sample:
                samples.append((now - start, proc_memory(run_proc.pid), proc_cpu_s(run_proc.pid)))
                next_sample += SAMPLE_EVERY
            if now - block_start >= block:
                snap = health.snapshot(INSTANCE)
                cpu = proc_cpu_s(run_proc.pid)
                row = block_row(k, snap, prev_health, (cpu - prev_cpu) / (now - block_start) * 100)
                rows.append(row | {"rss": proc_memory(run_proc.pid).get("VmRSS")})
                print(format_row(rows[-1]), flush=True)
                prev_cpu, prev_health, block_start = cpu, snap, now
                block_edges.append(now)
                k += 1
                if k >= n_blocks:
                    break
                svc.stop(f"replay-{k - 1}", kill=True)  # the stream vanishes
                if k % args.broker_every == 0:
                    broker.restart()
                time.sleep(2.0)
                svc.replay(f"replay-{k}", path, sid)
                continue
            time.sleep(0.5)
        final_health = health.snapshot(INSTANCE)
        health.close()
        if not crashes:
            code = svc.stop(INSTANCE, timeout=60)
            if code != 0:
                crashes.append(f"exit {code} on SIGTERM")
        time.sleep(1.0)  # the last note-offs reach the reader
        msgs = reader.messages()
        reader.close()
    (work / "port.json").write_text(json.dumps(msgs))  # the port as read, for a second look
    report(work, samples, rows, crashes, msgs, block_edges, final_health, health)


def block_row(k: int, snap: dict[str, Any], prev: dict[str, Any], cpu_pct: float) -> dict[str, Any]:
    sched, prev_sched = snap.get("scheduler", {}), prev.get("scheduler", {})
    lat = snap.get("latency_ms", {})
    return {
        "block": k,
        "cpu_pct": cpu_pct,
        "played": sched.get("played", 0) - prev_sched.get("played", 0),
        "late_dispatch": sched.get("late_dispatch", 0) - prev_sched.get("late_dispatch", 0),
        "midi_late_p99": lat.get("midi_late_p99"),
        "processing_p99": lat.get("processing_p99"),
        "dropped_windows": snap.get("dropped_windows", 0) - prev.get("dropped_windows", 0),
        "reconnects": snap.get("reconnects", 0),
        "mqtt_reconnects": snap.get("control", {}).get("reconnects"),
        "load": os.getloadavg(),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_row(r: dict[str, Any]) -> str:
    load = "/".join(f"{x:.2f}" for x in r["load"])
    return (
        f"block {r['block'] + 1}: RSS {r['rss']:.1f} MB, CPU {r['cpu_pct']:.1f} %, {r['played']} notes, "
        f"dispatch lateness p99 (telemetry, last <= 4096 notes) {_ms(r['midi_late_p99'])} ms, "
        f"notes > 5 ms late {r['late_dispatch']}, processing p99 {_ms(r['processing_p99'])} ms, "
        f"windows dropped {r['dropped_windows']}, stream reconnects {r['reconnects']}, "
        f"MQTT reconnects {r['mqtt_reconnects']}, load average {load}"
    )


def report(
    work: Path,
    samples: list[tuple[float, dict[str, float], float]],
    rows: list[dict[str, Any]],
    crashes: list[str],
    msgs: list[tuple[float, list[int]]],
    edges: list[float],
    final: dict[str, Any],
    health: HealthListener,
) -> None:
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1].get("VmRSS", np.nan) for s in samples])
    anon = np.array([s[1].get("RssAnon", np.nan) for s in samples])
    first_block = edges[1] - edges[0] if len(edges) > 1 else np.inf
    after = t >= first_block
    print("## memory (service process, a sample every 10 s)")
    print(
        f"RSS start {rss[0]:.1f} MB, min {rss.min():.1f}, max {rss.max():.1f}, end {rss[-1]:.1f} MB; "
        f"private (RssAnon) {anon[0]:.1f} -> {anon[-1]:.1f} MB"
    )
    print(
        f"RSS slope after the first block: {slope_mb_per_h(t[after], rss[after]):+.2f} MB/h "
        f"(private {slope_mb_per_h(t[after], anon[after]):+.2f} MB/h; {after.sum()} samples; target <= 2 MB/h)"
    )
    sessions = sorted((work / "sessions").glob("*/notes.jsonl"))
    notes = read_jsonl(sessions[0]) if sessions else []
    arrivals, offsets = port_lateness(msgs, notes)
    n_ons = sum(1 for _, m in msgs if m[0] & 0xF0 == 0x90 and m[2] > 0)
    print("## note lateness on the port (JACK arrival - note time, anchored per block to its least-late note)")
    print(f"note-ons on the port {n_ons}, rows in notes.jsonl {len(notes)}, matched {arrivals.size}")
    for k in range(len(edges) - 1):
        sel = (arrivals >= edges[k]) & (arrivals < edges[k + 1])
        if sel.sum() < 2:
            print(f"block {k + 1}: {sel.sum()} notes")
            continue
        late = (offsets[sel] - offsets[sel].min()) * 1e3
        print(
            f"block {k + 1}: {sel.sum()} notes, median {np.median(late):.2f} ms, p99 {np.percentile(late, 99):.2f} ms, "
            f"max {late.max():.2f} ms (anchor {offsets[sel].min():.4f} s)"
        )
    stuck, covered = stuck_notes(msgs)
    print("## end")
    sched = final.get("scheduler", {})
    print(
        f"stuck notes after SIGTERM: {stuck} (of which {covered} followed by CC 123 on their channel); target 0. "
        f"Crashes: {len(crashes)} (target 0). Health telemetry: {health.messages} messages, the listener connected "
        f"{health.connects} times; last: stream reconnects {final.get('reconnects')}, MQTT reconnects "
        f"{final.get('control', {}).get('reconnects')}, windows dropped {final.get('dropped_windows')}, notes played "
        f"{sched.get('played')}, notes > 5 ms late {sched.get('late_dispatch')}, max dispatch lateness "
        f"{sched.get('max_late_ms')} ms"
    )
    for c in crashes:
        print(f"crash: {c}")
    events = read_jsonl(sessions[0].with_name("events.jsonl")) if sessions else []
    kinds: dict[str, int] = {}
    for e in events:
        kinds[e.get("event", "?")] = kinds.get(e.get("event", "?"), 0) + 1
    print(f"session events: {kinds}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--block", type=float, help="minutes between stream drops (default 10, or 1 under 10 minutes)")
    ap.add_argument("--broker-every", type=int, help="restart the broker every N blocks (default 3; 2 under 10 min)")
    ap.add_argument("--file", default="Subject00_2.edf", help="eegmat recording to loop (default: 62 s a pass)")
    args = ap.parse_args()
    if args.block is None:
        args.block = 10.0 if args.minutes >= 10 else 1.0
    if args.broker_every is None:
        args.broker_every = 3 if args.minutes >= 10 else 2
    have("jackd", "mosquitto")
    header(f"soak: learned mode, {args.minutes:g} min")
    print(f"# load average at start: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    run(args)


if __name__ == "__main__":
    main()
