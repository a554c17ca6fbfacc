"""Capacity: how many 32-channel @ 256 Hz headsets in learned mode this machine serves at once.

N services (``brainharmonic run --mode learned --no-audio``, each its own process, its own JACK
virtual MIDI port and MQTT telemetry against a real mosquitto) each read their own synthetic LSL
stream (32 channels of the BioSemi-32 layout, alpha sine plus noise, 8-sample chunks pushed at
absolute target times and stamped at the push, from one pusher process). After a warm-up (model
load and the 10 s baseline), the bench measures for ``--seconds`` and prints per N:

* windows dropped (health telemetry, difference over the measurement);
* note dispatch lateness: the share of note-ons sent more than 5 ms after their time (the
  scheduler's ``late_dispatch`` over ``played``: p99 > 5 ms exactly when this share is > 1 %) and
  the telemetry's p99 (its last <= 4096 note-ons, warm-up included); processing latency p99
  (window's last sample → notes scheduled);
* CPU % of one core and RSS (and its private part) per service process; the load average.

N grows (1, 2, 3, 4, 6, 8, ...) until a service drops a window or its lateness p99 exceeds 5 ms.

    python benchmarks/bench_capacity.py [--seconds 60] [--warmup 10] [--counts 1,2,3,4,6,8,10,12]
Target (issue 11): report how many headsets are served with 0 dropped windows and lateness p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from _common import header
from _control_rig import HealthListener, Jack, Services, have, proc_cpu_s, proc_memory

BIOSEMI32 = ("Fp1", "AF3", "F7", "F3", "FC1", "FC5", "T7", "C3", "CP1", "CP5", "P7", "P3", "Pz", "PO3", "O1",
             "Oz", "O2", "PO4", "P4", "P8", "CP6", "CP2", "C4", "T8", "FC6", "FC2", "F4", "F8", "AF4", "Fp2", "Fz",
             "Cz")  # fmt: skip
SFREQ, CHUNK = 256.0, 8


def push(source_ids: list[str], stop: Any) -> None:
    """One outlet per id in its own thread (run in a child process): 32 ch @ 256 Hz, volts."""
    import threading

    from mne_lsl.lsl import StreamInfo, StreamOutlet, local_clock

    def serve(source_id: str, seed: int) -> None:
        info = StreamInfo(source_id, "EEG", len(BIOSEMI32), SFREQ, "float32", source_id)
        info.set_channel_names(list(BIOSEMI32))
        outlet = StreamOutlet(info, chunk_size=CHUNK)
        rng = np.random.default_rng(seed)
        n_block = int(SFREQ) * 8
        t = np.arange(n_block) / SFREQ
        alpha = 20e-6 * np.sin(2 * np.pi * (9.5 + seed % 3) * t) * (1 + 0.5 * np.sin(2 * np.pi * t / 8))
        block = (alpha[:, None] + 8e-6 * rng.standard_normal((n_block, len(BIOSEMI32)))).astype(np.float32)
        period = CHUNK / SFREQ
        t0, k = local_clock(), 0
        while not stop.is_set():
            delay = t0 + (k + 1) * period - local_clock()
            if delay > 0:
                time.sleep(delay)
            idx = np.arange(k * CHUNK, (k + 1) * CHUNK) % n_block
            outlet.push_chunk(np.ascontiguousarray(block[idx]), timestamp=local_clock())
            k += 1

    threads = [threading.Thread(target=serve, args=(s, i), daemon=True) for i, s in enumerate(source_ids)]
    for th in threads:
        th.start()
    stop.wait()


def measure(n: int, seconds: float, warmup: float, work: Path) -> list[dict[str, Any]]:
    """Run ``n`` services side by side; one row of figures per service."""
    from tests.broker import MosquittoBroker

    ids = [f"bh-cap-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    pusher = ctx.Process(target=push, args=(ids, stop), daemon=True)
    pusher.start()
    folder = work / f"n{n}"
    folder.mkdir()
    names = [f"cap{n}x{i}" for i in range(n)]
    try:
        with MosquittoBroker(folder / "mq") as broker, Services(folder) as svc:
            health = HealthListener(broker)
            for i, (name, sid) in enumerate(zip(names, ids, strict=True)):
                svc.service(name, sid, broker, tempo=96.0, seed=i, extra=["--mode", "learned", "--no-audio"])
            pids = {name: p.pid for name, p in svc.procs}
            deadline = time.monotonic() + warmup + 60.0
            # warm: every service publishes health with notes played (model loaded, baseline over)
            while not all(health.snapshot(m).get("scheduler", {}).get("played", 0) > 0 for m in names):
                svc.check()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{n} services: not all played a note within {warmup + 60:.0f} s")
                time.sleep(0.5)
            time.sleep(warmup)
            before = {m: health.snapshot(m) for m in names}
            cpu0 = {m: proc_cpu_s(pids[m]) for m in names}
            t0 = time.monotonic()
            time.sleep(seconds)
            svc.check()
            elapsed = time.monotonic() - t0
            after = {m: health.snapshot(m) for m in names}
            rows = []
            for m in names:
                b, a = before[m], after[m]
                played = a["scheduler"]["played"] - b["scheduler"]["played"]
                late = a["scheduler"]["late_dispatch"] - b["scheduler"]["late_dispatch"]
                rows.append(
                    {
                        "dropped": a["dropped_windows"] - b["dropped_windows"],
                        "played": played,
                        "late_share": late / played if played else float("nan"),
                        "late_p99": a["latency_ms"].get("midi_late_p99"),
                        "proc_p99": a["latency_ms"].get("processing_p99"),
                        "cpu": (proc_cpu_s(pids[m]) - cpu0[m]) / elapsed * 100,
                        "mem": proc_memory(pids[m]),
                        "load": os.getloadavg(),
                    }
                )
            health.close()
            return rows
    finally:
        stop.set()
        pusher.join(10)


def print_rows(n: int, rows: list[dict[str, Any]]) -> bool:
    """Print N's line; True if every service kept up (0 dropped, <= 1 % of notes > 5 ms late)."""
    dropped = sum(r["dropped"] for r in rows)
    late_share = max(r["late_share"] for r in rows)
    ok = dropped == 0 and not late_share > 0.01
    cpu = np.array([r["cpu"] for r in rows])
    rss = np.array([r["mem"]["VmRSS"] for r in rows])
    anon = np.array([r["mem"]["RssAnon"] for r in rows])
    p99 = [r["late_p99"] for r in rows]
    proc = [r["proc_p99"] for r in rows]
    load = "/".join(f"{x:.2f}" for x in rows[-1]["load"])
    print(
        f"N={n}: {'kept up' if ok else 'FELL BEHIND'}; windows dropped {dropped}; "
        f"notes {sum(r['played'] for r in rows)}, "
        f"worst share > 5 ms late {late_share * 100:.1f} %; dispatch lateness p99 per service {fmt(p99)} ms; "
        f"processing p99 {fmt(proc)} ms; CPU per service median {np.median(cpu):.1f} % (sum {cpu.sum():.0f} %); "
        f"RSS per service median {np.median(rss):.0f} MB (private {np.median(anon):.0f} MB, sum of private "
        f"{anon.sum():.0f} MB); load average {load}",
        flush=True,
    )
    return ok


def fmt(values: list[float | None]) -> str:
    return "/".join("-" if v is None else f"{v:.2f}" for v in values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="measurement per N, after the warm-up")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds after every service played its first note")
    ap.add_argument("--counts", default="1,2,3,4,6,8,10,12", help="the N to try, in order")
    args = ap.parse_args()
    have("jackd", "mosquitto")
    header(f"capacity: learned-mode services, 32 ch @ {SFREQ:g} Hz each, {args.seconds:g} s per N")
    print(f"# {os.cpu_count()} cores; load average at start {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    work = Path(tempfile.mkdtemp(prefix="bh-bench-capacity-"))
    best = 0
    with Jack(private=True) as jack:
        print(f"# JACK period {jack.period} frames @ 48 kHz; work folder {work}")
        for n in (int(x) for x in args.counts.split(",")):
            rows = measure(n, args.seconds, args.warmup, work)
            if not print_rows(n, rows):
                break
            best = n
    print(f"served with 0 dropped windows and lateness p99 <= 5 ms: {best} headset(s) at once")


if __name__ == "__main__":
    main()
