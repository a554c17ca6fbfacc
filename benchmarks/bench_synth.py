"""The embedded live synth: note → sound latency at its JACK output, its CPU cost, its memory.

    python benchmarks/bench_synth.py [--notes 200] [--runs 3] [--period 64] [--soundfont PATH]

Starts its own JACK server (dummy driver, realtime where allowed, ``--period`` frames at 48 kHz).

1. Latency. The synth (LiveSynthSink, FluidSynth's JACK driver) and the Scheduler's dispatcher run in
   this process; a recorder in another process (its own GIL) records the synth's output ports and stamps
   each JACK cycle with ``time.monotonic()``. Notes (piano, 40 ms, 180-220 ms apart, so onsets are not
   locked to the period) are scheduled on the absolute clock; each audio onset (energy envelope: a
   12 dB rise over the 30 ms before, at the first sample 6 dB up) is put on the monotonic clock
   (frame / rate + the least-delayed cycle's offset) and compared with its scheduled time. That is the
   time the sound exists at the synth's JACK output port; a sound card adds its playback latency
   (one period more with JACK's default two periods).
2. CPU. The stress passage gain staging plays (the polyphony cap's worth of notes every sixteenth at
   140 BPM, top velocities, drums) played live for 10 s: process CPU time per second of audio, and
   FluidSynth's own load figure; and the same passage rendered offline (× real time).
3. Memory. RSS of a fresh process before and after the synth is loaded and opened for the default
   five-instrument ensemble (FluidSynth loads only the samples of the presets in use).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from _common import header, summary

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECORDER = r"""
import json, sys, time, jack, numpy as np
name, out, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
c = jack.Client("bench-rec", no_start_server=True)
rate = c.samplerate
buf = np.zeros((int(seconds * rate), 2), dtype=np.float32)
ins = [c.inports.register(f"in_{i}") for i in (1, 2)]
state = {"first": None, "n": 0, "xruns": 0}
stamps = []
def process(frames):
    now = time.monotonic()
    f = c.last_frame_time
    if state["first"] is None:
        state["first"] = f
    at = f - state["first"]
    end = min(at + frames, len(buf))
    if at < end:
        for ch, p in enumerate(ins):
            buf[at:end, ch] = p.get_array()[: end - at]
        state["n"] = max(state["n"], end)
    stamps.append((f, now))
c.set_process_callback(process)
c.set_xrun_callback(lambda d: state.__setitem__("xruns", state["xruns"] + 1))
c.activate()
for src, dst in zip([f"{name}:left", f"{name}:right"], ins):
    c.connect(src, dst)
print("ready", flush=True)
sys.stdin.readline()
c.deactivate()
s = np.array(stamps, dtype=np.float64)
np.savez(out, audio=buf[: state["n"]], rate=rate, xruns=state["xruns"], stamps=s, first=state["first"])
c.close()
"""


def start_jack(period: int) -> tuple[subprocess.Popen[bytes], str]:
    name = f"bench-synth-{uuid.uuid4().hex[:6]}"
    os.environ["JACK_DEFAULT_SERVER"] = name
    os.environ["JACK_NO_START_SERVER"] = "1"
    proc = subprocess.Popen(
        ["jackd", "-R", "-n", name, "-d", "dummy", "-r", "48000", "-p", str(period)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, JACK_NO_AUDIO_RESERVATION="1"),
    )
    deadline = time.monotonic() + 10
    while subprocess.run(["jack_lsp"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            sys.exit("jackd did not start")
        time.sleep(0.1)
    return proc, name


def onsets(audio: np.ndarray, rate: float) -> np.ndarray:
    sys.path.insert(0, str(ROOT))
    from tests.audioutil import onsets as detect

    return detect(audio, rate)


async def latency_run(n_notes: int, soundfont: str | None, seed: int) -> dict[str, object]:
    from brainharmonic_rt.config import AudioSettings, InstrumentSettings
    from brainharmonic_rt.events import Note
    from brainharmonic_rt.sinks.live_synth import LiveSynthSink
    from brainharmonic_rt.sinks.scheduler import Scheduler

    name = f"bench-synth-{uuid.uuid4().hex[:4]}"
    sink = LiveSynthSink(AudioSettings(driver="jack", jack_name=name), soundfont)
    if not sink.start():
        sys.exit(sink.problem)
    insts = {"piano": InstrumentSettings(program=0, channel=0, low=48, high=84)}
    sink.open(insts, 120.0)
    rng = np.random.default_rng(seed)
    gaps = rng.uniform(0.18, 0.22, n_notes)
    times = np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    notes = [Note(float(t), 0.04, int(rng.integers(55, 80)), 100, 0, "piano") for t in times]
    seconds = float(times[-1]) + 4.0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rec.npz"
        rec = subprocess.Popen(
            [sys.executable, "-c", RECORDER, name, str(out), str(seconds + 2)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert rec.stdout is not None and rec.stdin is not None
        assert rec.stdout.readline().strip() == "ready"
        origin = time.monotonic() + 0.5
        async with Scheduler([sink], realtime=True, origin=origin, instruments=insts) as sched:
            sched.schedule(notes)
            await asyncio.sleep(origin + seconds - 2.0 - time.monotonic())
            rt = sched.rt_scheduling
            stats = sched.stats()
        rec.stdin.write("\n")
        rec.stdin.flush()
        rec.wait(30)
        data = np.load(out)
        audio, rate = data["audio"], float(data["rate"])
        stamps, first = data["stamps"], float(data["first"])
        xruns = int(data["xruns"])
    sink.close()
    found = frame_times(onsets(audio, rate), stamps, first, rate)
    attack = intrinsic_attack(sink_sf(soundfont), {n.pitch for n in notes})
    lat = []
    for n in notes:
        target = origin + n.time
        near = found[(found > target - 0.02) & (found < target + 0.1)]
        if near.size:
            lat.append((near[0] - target - attack[n.pitch]) * 1e3)
    att = np.array(list(attack.values())) * 1e3
    return {
        "latency_ms": lat,
        "missed": n_notes - len(lat),
        "xruns": xruns,
        "rt": rt,
        "dispatch": stats,
        "attack_ms": (float(att.min()), float(np.median(att)), float(att.max())),
    }


def frame_times(frames: np.ndarray, stamps: np.ndarray, first: float, rate: float) -> np.ndarray:
    """Monotonic time of recorded frames: frame / rate plus the offset of the least-delayed JACK cycle
    within a second of it (local, so an xrun that moves JACK's frame clock does not shift the rest)."""
    f = (stamps[:, 0] - first) / rate
    off = stamps[:, 1] - f
    t = np.asarray(frames, dtype=np.float64) / rate
    out = np.empty_like(t)
    for i, x in enumerate(t):
        near = np.abs(f - x) < 1.0
        out[i] = x + float(off[near].min() if near.any() else off.min())
    return out


def intrinsic_attack(soundfont: Path, pitches: set[int], rate: float = 48000.0) -> dict[int, float]:
    """Seconds from note-on to the detected onset when the synth renders offline (the SoundFont's own attack
    and sample start), per pitch: subtracted, so what is left is the system's latency."""
    from brainharmonic_rt.config import AudioSettings
    from brainharmonic_rt.sinks.audio import staged_gain  # noqa: F401  (same module the sink uses)
    from brainharmonic_rt.sinks.fluid import Synth

    a = AudioSettings()
    out = {}
    for p in sorted(pitches):
        synth = Synth(soundfont, sample_rate=rate, gain=0.6, reverb=a.reverb, chorus=a.chorus)
        synth.program(0, 0)
        pre = synth.render(4800)
        synth.fs.noteon(0, p, 100)
        audio = np.concatenate([pre, synth.render(9600)])
        synth.delete()
        on = onsets(audio, rate)
        out[p] = (int(on[0]) - 4800) / rate if on.size else 0.0
    return out


def cpu_run(soundfont: str | None, seconds: float = 10.0) -> dict[str, float]:
    """The stress passage live on JACK: process CPU per audio second and FluidSynth's load; and offline."""
    import mido

    from brainharmonic_rt.config import AudioSettings, MusicSettings
    from brainharmonic_rt.music.ensemble import resolve_instruments
    from brainharmonic_rt.sinks.audio import stress_messages
    from brainharmonic_rt.sinks.fluid import Synth
    from brainharmonic_rt.sinks.live_synth import LiveSynthSink

    insts = resolve_instruments(["frontal", "central", "temporal", "parietal", "occipital"], MusicSettings())
    sink = LiveSynthSink(AudioSettings(driver="jack", jack_name=f"bench-cpu-{uuid.uuid4().hex[:4]}"), soundfont)
    if not sink.start():
        sys.exit(sink.problem)
    sink.open(insts, 140.0)
    steps = int(seconds / (60 / 140 / 4))
    events = stress_messages(insts, MusicSettings().max_polyphony, steps=steps)
    loads: list[float] = []
    t_start = time.monotonic()
    c0 = time.process_time()
    for t, kind, ch, note, vel in events:
        delay = t_start + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        kind_msg = "note_on" if kind == "on" else "note_off"
        sink.send(mido.Message(kind_msg, channel=ch, note=note, velocity=vel), t)
        if kind == "on" and len(loads) < 10_000:
            loads.append(sink.status()["cpu_load"] or 0.0)
    wall = time.monotonic() - t_start
    cpu = time.process_time() - c0
    voices = sink.status()["voices"]
    sink.close()
    # Offline: the same passage through a driverless synth, as fast as the CPU allows.
    synth = Synth(sink_sf(soundfont), sample_rate=48000.0, gain=0.3)
    for inst in insts.values():
        synth.program(inst.channel, inst.program)
    cursor, c1, t1 = 0, time.process_time(), 0.0
    for t, kind, ch, note, vel in events:
        target = round(t * 48000)
        if target > cursor:
            synth.render(target - cursor)
            cursor = target
        (synth.fs.noteon(ch, note, vel) if kind == "on" else synth.fs.noteoff(ch, note))
        t1 = t
    offline_cpu = time.process_time() - c1
    synth.delete()
    return {
        "process_cpu_percent": 100 * cpu / wall,
        "fluidsynth_load_median": float(np.median(loads)),
        "fluidsynth_load_p99": float(np.percentile(loads, 99)),
        "voices_at_end": float(voices or 0),
        "offline_x_realtime": t1 / offline_cpu if offline_cpu > 0 else float("inf"),
    }


def sink_sf(soundfont: str | None) -> Path:
    from brainharmonic_rt.sinks.fluid import resolve_soundfont

    return resolve_soundfont(soundfont)


MEMORY = r"""
import sys
sys.path.insert(0, sys.argv[2])
def rss():
    d = {l.split(':')[0]: int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith(('VmRSS', 'Rss'))}
    return d['VmRSS'], d['RssAnon'], d['RssShmem']
import brainharmonic_rt.pipeline, brainharmonic_rt.sinks.rtmidi_port
from brainharmonic_rt.config import AudioSettings, MusicSettings
from brainharmonic_rt.music.ensemble import resolve_instruments
from brainharmonic_rt.sinks.live_synth import LiveSynthSink
before = rss()
sink = LiveSynthSink(AudioSettings(driver="jack", jack_name="bench-mem"), sys.argv[1] or None)
sink.start()
sink.open(resolve_instruments(["frontal", "central", "temporal", "parietal", "occipital"], MusicSettings()), 96.0)
after = rss()
sink.close()
print(*before, *after, sink.driver)
"""


def memory_run(soundfont: str | None) -> list[float]:
    """RSS, anonymous RSS and shared-memory RSS (MB) before, then after the synth is loaded and opened."""
    r = subprocess.run(
        [sys.executable, "-c", MEMORY, soundfont or "", str(ROOT)], capture_output=True, text=True, timeout=120
    )
    if r.returncode != 0:
        sys.exit(r.stderr[-2000:])
    return [float(x) for x in r.stdout.split()[:6]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--notes", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--period", type=int, default=64)
    ap.add_argument("--soundfont", default=None)
    ap.add_argument("--only", choices=["latency", "cpu", "memory"], help="run one part")
    args = ap.parse_args()
    header(f"embedded synth: note → audio at its JACK output ({args.period}-frame periods at 48 kHz), CPU, RSS")
    print(f"# load average before: {os.getloadavg()}")
    jack, _name = start_jack(args.period)
    try:
        from brainharmonic_rt.sinks.fluid import resolve_soundfont

        print(f"# soundfont: {resolve_soundfont(args.soundfont)}")
        all_lat: list[float] = []
        for k in range(args.runs if args.only in (None, "latency") else 0):
            res = asyncio.run(latency_run(args.notes, args.soundfont, seed=k))
            lat = np.asarray(res["latency_ms"])
            all_lat += list(lat)
            d = res["dispatch"]
            att = res["attack_ms"]
            print(
                f"run {k + 1}: {summary(lat)}, jitter (std) {lat.std():.3f} ms, p99-p1 "
                f"{np.percentile(lat, 99) - np.percentile(lat, 1):.3f} ms; missed {res['missed']}, "
                f"recorder xruns {res['xruns']}, dispatcher SCHED_FIFO {res['rt']}, dispatch lateness p99 "
                f"{d['p99_late_ms']} ms; load {os.getloadavg()[0]:.2f} (SoundFont attack subtracted: "  # type: ignore[index]
                f"{att[0]:.2f}/{att[1]:.2f}/{att[2]:.2f} ms min/median/max)"  # type: ignore[index]
            )
        a = np.asarray(all_lat)
        if a.size:
            print(f"all runs: {summary(a)}, jitter (std) {a.std():.3f} ms; period = {args.period / 48:.3f} ms")
        for k in range(args.runs if args.only in (None, "cpu") else 0):
            c = cpu_run(args.soundfont)
            print(
                f"cpu run {k + 1}: process {c['process_cpu_percent']:.1f} % of a core while playing the stress "
                f"passage live (FluidSynth load median {c['fluidsynth_load_median']:.1f} %, p99 "
                f"{c['fluidsynth_load_p99']:.1f} %, {c['voices_at_end']:.0f} voices at the end); offline "
                f"{c['offline_x_realtime']:.1f}x real time; load {os.getloadavg()[0]:.2f}"
            )
        fonts = [str(resolve_soundfont(args.soundfont)), "/usr/share/sounds/sf2/TimGM6mb.sf2"]
        for sf in dict.fromkeys(fonts) if args.only in (None, "memory") else ():
            rss0, anon0, shm0, rss1, anon1, shm1 = memory_run(sf)
            print(
                f"rss: {Path(sf).name}: {rss0:.0f} MB → {rss1:.0f} MB with the synth (+{rss1 - rss0:.0f} MB: private "
                f"+{anon1 - anon0:.0f} MB, JACK shared memory +{shm1 - shm0:.0f} MB)"
            )
        print(f"# ru_maxrss of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        if a.size:
            print(json.dumps({"latency_all_ms": {"median": float(np.median(a)), "p99": float(np.percentile(a, 99))}}))
    finally:
        jack.terminate()
        jack.wait(5)


if __name__ == "__main__":
    main()
