"""Runtime memory of a 64-channel live run (peak RSS), and proof that torch is never imported.

    python benchmarks/bench_memory.py [--seconds 30] [--runs 3]
Each run is a fresh `brainharmonic run` process (with a JACK MIDI port when a server is up)
reading a 64 ch @ 1 kHz LSL stream pushed by another process. Target: <= 400 MB.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import subprocess
import sys
import uuid

import numpy as np
from _common import header
from bench_latency import push

CHILD = """
import runpy, sys, threading, time
peak = {}
def sample():  # the largest private (RssAnon), JACK shared-memory (RssShmem) and proportional (Pss) sizes
    while True:
        st = {l.split(':')[0]: int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('Rss')}
        st['Pss'] = next(int(l.split()[1]) for l in open('/proc/self/smaps_rollup') if l.startswith('Pss:'))
        for k, v in st.items():
            peak[k] = max(peak.get(k, 0), v)
        time.sleep(0.5)
threading.Thread(target=sample, daemon=True).start()
sys.argv = ['brainharmonic'] + sys.argv[1:]
try:
    runpy.run_module('brainharmonic_rt.cli', run_name='__main__')
except SystemExit:
    pass
print('torch imported:', 'torch' in sys.modules)
print('VmHWM:', [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1], 'kB')
print('peaks: private (RssAnon) %d MB, shared memory (RssShmem, JACK) %d MB, Pss %d MB' % tuple(
    peak.get(k, 0) // 1024 for k in ('RssAnon', 'RssShmem', 'Pss')))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--audio", choices=["on", "off"], default="on", help="the embedded synth (needs an audio output)")
    args = ap.parse_args()
    header("runtime memory, 64 ch @ 1 kHz live run")
    jack = subprocess.run(["jack_lsp"], capture_output=True).returncode == 0
    peaks = []
    for k in range(args.runs):
        sid = f"mem-{uuid.uuid4().hex[:8]}"
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        pusher = ctx.Process(target=push, args=(sid, 64, 1000.0, args.seconds + 5, ready))
        pusher.start()
        ready.wait(30)
        midi = ["--virtual-port", f"mem{k}"] if jack else ["--no-midi"]
        midi += [] if args.audio == "on" else ["--no-audio"]
        out = subprocess.run(
            [sys.executable, "-c", CHILD, "run", "--source-id", sid, "--duration", str(args.seconds), *midi],
            capture_output=True, text=True, timeout=args.seconds + 60,
        )  # fmt: skip
        pusher.join(30)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith(("torch", "VmHWM", "stopped", "peaks"))]
        peak = int(next(ln for ln in lines if ln.startswith("VmHWM")).split()[1]) / 1024
        peaks.append(peak)
        synth = [ln.split(": ", 1)[-1] for ln in out.stderr.splitlines() if "live synth" in ln or "audio" in ln]
        print(f"run {k + 1}: peak RSS {peak:.0f} MB; " + "; ".join(lines + synth[:1]))
    print(f"peak RSS: median {np.median(peaks):.0f} MB, max {max(peaks):.0f} MB (target <= 400 MB)")


if __name__ == "__main__":
    main()
