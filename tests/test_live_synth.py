"""The embedded live synth, heard: FluidSynth on a real JACK server (dummy driver), its output ports
recorded by a JACK client in the test. Audio while notes play, onsets where the notes were scheduled,
silence after panic / stream loss / SIGTERM, no clipping; the failure paths say one sentence."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mido
import numpy as np
import pytest

from brainharmonic_rt.config import AudioSettings, InstrumentSettings, load_settings
from brainharmonic_rt.errors import ConfigError
from brainharmonic_rt.events import Note
from brainharmonic_rt.pipeline import LivePipeline
from brainharmonic_rt.recording import read_jsonl
from brainharmonic_rt.sinks.audio import AudioUnavailable, start_output
from brainharmonic_rt.sinks.audio_record import read_recording
from brainharmonic_rt.sinks.fluid import Synth, find_soundfont
from brainharmonic_rt.sinks.live_synth import LiveSynthSink
from brainharmonic_rt.sinks.scheduler import Scheduler
from brainharmonic_rt.sources.lsl import LSLSource

from .audioutil import JackRecorder, dbfs, onsets, silent_after
from .lslutil import SyntheticOutlet
from .midiutil import MidiReader, note_ons

pytestmark = pytest.mark.usefixtures("jack_server")

BIN = [sys.executable, "-m", "brainharmonic_rt.cli"]
PIANO = {"piano": InstrumentSettings(program=0, channel=0, low=48, high=84, velocity=(40, 110))}
LONG = {
    "pad": InstrumentSettings(program=89, channel=1, low=48, high=72, velocity=(40, 100), role="harmony"),
    "harp": InstrumentSettings(program=46, channel=3, low=60, high=91, velocity=(40, 100), role="texture"),
}
#: Onsets may trail the scheduled time by the rest of a JACK period (5.3 ms at the tests' 256 frames),
#: FluidSynth's first block and scheduling noise on a shared 2-core machine.
#: Onsets line up with their notes within this (ms); the recorder's frame → time mapping in a Python JACK client
#: can be ~10 ms off on a loaded machine (seen once: -10.7 ms). The timing itself is measured by bench_synth.py.
EARLY_MS, LATE_MS = 15.0, 25.0


def _audio(name: str) -> AudioSettings:
    return AudioSettings(driver="jack", jack_name=name)


def _ports(name: str) -> list[str]:
    return [f"{name}:left", f"{name}:right"]


async def _play(sink: LiveSynthSink, instruments, notes: list[Note], *, after: float, panic_at: float | None = None):
    """Schedule ``notes`` (music time 0 = 0.5 s from now) and wait ``after`` s past the last note end."""
    origin = time.monotonic() + 0.5
    async with Scheduler([sink], realtime=True, origin=origin, instruments=instruments) as sched:
        sched.schedule(notes)
        if panic_at is not None:
            await asyncio.sleep(origin + panic_at - time.monotonic())
            sched.panic()
        end = max(n.time + n.duration for n in notes)
        await asyncio.sleep(origin + end + after - time.monotonic())
    return origin


async def test_synth_is_heard_on_time_through_jack_without_clipping(tmp_path: Path) -> None:
    name = f"bh-synth-{uuid.uuid4().hex[:6]}"
    sink = LiveSynthSink(_audio(name))
    assert sink.start(), sink.problem
    assert sink.driver == "jack"
    rec = JackRecorder(f"bh-rec-{uuid.uuid4().hex[:6]}")
    rec.start(_ports(name))
    try:
        # The synth's outputs go to the system playback ports by themselves.
        conns = {p.name for p in rec.client.get_all_connections(f"{name}:left")}
        assert "system:playback_1" in conns, conns
        sink.open(PIANO | {"drums": InstrumentSettings(program=0, channel=9, role="percussion")}, 120.0)
        notes = [Note(0.4 * k, 0.15, 60 + 2 * k, 100, 0, "piano") for k in range(8)]
        notes.append(Note(3.4, 0.1, 38, 110, 9, "drums"))  # GM snare on MIDI channel 10
        origin = await _play(sink, PIANO, notes, after=2.5)
    finally:
        sink.close()
        rec.stop()
    audio, rate = rec.audio, rec.rate
    assert len(audio) > 5 * rate
    assert dbfs(audio) <= -1.0, f"clipping risk: peak {dbfs(audio):.2f} dBFS"
    found = rec.time_of_frame(onsets(audio, rate))
    for n in notes:
        target = origin + n.time
        near = found[np.abs(found - target) < 0.2]
        assert near.size, f"no onset near the note at {n.time:.2f} s"
        delta_ms = (near[0] - target) * 1e3
        assert -EARLY_MS <= delta_ms <= LATE_MS, f"onset {delta_ms:.1f} ms from the note at {n.time:.2f} s"
        a = rec.frame_of_time(target)
        assert dbfs(audio[a : a + int(0.1 * rate)]) > -40.0, f"note at {n.time:.2f} s is not heard"
    end = rec.frame_of_time(origin + max(n.time + n.duration for n in notes))
    quiet = silent_after(audio, rate, end)
    assert quiet is not None and quiet <= 2.0, f"still sounding {quiet} s after the last note"
    assert rec.frame_of_time(origin) > 0 and dbfs(audio[: rec.frame_of_time(origin) - 10]) < -90, "noise before notes"


async def test_panic_silences_the_synth_within_two_seconds() -> None:
    name = f"bh-synth-{uuid.uuid4().hex[:6]}"
    sink = LiveSynthSink(_audio(name))
    assert sink.start(), sink.problem
    rec = JackRecorder(f"bh-rec-{uuid.uuid4().hex[:6]}")
    rec.start(_ports(name))
    try:
        sink.open(LONG, 96.0)
        notes = [Note(0.0, 6.0, p, 100, 1, "pad") for p in (55, 62, 67)]
        notes += [Note(0.1 * k, 6.0, 72 + 3 * k, 100, 3, "harp") for k in range(3)]
        origin = await _play(sink, LONG, notes, after=-3.0, panic_at=1.5)
    finally:
        sink.close()
        rec.stop()
    audio, rate = rec.audio, rec.rate
    panic = rec.frame_of_time(origin + 1.5)
    assert dbfs(audio[panic - int(0.5 * rate) : panic]) > -30, "the long notes were playing before the panic"
    quiet = silent_after(audio[: panic + int(2.9 * rate)], rate, panic)
    assert quiet is not None and quiet <= 2.0, f"{quiet} s after panic the synth is still above -60 dBFS"


async def test_stream_loss_silences_the_synth_and_record_audio_keeps_what_was_heard(
    source_id: str, tmp_path: Path
) -> None:
    name = f"bh-synth-{uuid.uuid4().hex[:6]}"
    settings = load_settings(
        stream={"source_id": source_id, "timeout": 5.0, "lost_after": 0.5},
        signal={"window": 1.0, "hop": 0.25, "baseline": 2.0},
        music={"tempo": 150.0, "seed": 3},
        audio={"driver": "jack", "jack_name": name, "record": True, "enabled": True},
    )
    sink = LiveSynthSink(settings.audio, polyphony=settings.music.max_polyphony)
    assert sink.start(), sink.problem
    rec = JackRecorder(f"bh-rec-{uuid.uuid4().hex[:6]}")
    rec.start(_ports(name))
    wall_minus_mono = time.time() - time.monotonic()
    outlet = SyntheticOutlet(source_id, n_channels=19, sfreq=250.0).start()
    pipe = LivePipeline(settings, LSLSource(settings.stream), [sink], record_root=tmp_path)
    task = asyncio.create_task(pipe.run())
    try:
        deadline = time.monotonic() + 30
        while pipe.stats.notes < 12:
            assert time.monotonic() < deadline, "no notes from the live run"
            await asyncio.sleep(0.05)
        outlet.stop()  # the stream vanishes: after lost_after the pipeline panics and waits for it
        deadline = time.monotonic() + 10
        while pipe.stats.stream_losses == 0:
            assert time.monotonic() < deadline, "the stream loss was not noticed"
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.5)
        pipe.stop("test over")
        await asyncio.wait_for(task, 10)
    finally:
        if not task.done():
            task.cancel()
        sink.close()
        rec.stop()
    folder = pipe.recorder.folder  # type: ignore[union-attr]
    events = read_jsonl(folder / "events.jsonl")
    lost = next(e for e in events if e["event"] == "stream_lost")
    lost_mono = lost["wall"] - wall_minus_mono
    audio, rate = rec.audio, rec.rate
    at = rec.frame_of_time(lost_mono)
    assert dbfs(audio[:at]) > -40, "the synth played before the stream was lost"
    quiet = silent_after(audio, rate, at)
    assert quiet is not None and quiet <= 2.0, f"{quiet} s after the stream loss the synth still sounds"
    assert dbfs(audio) <= -1.0

    # --record-audio: audio.flac holds what the JACK port carried (the same synth fed the same events).
    flac, flac_rate = read_recording(folder / "audio.flac")
    meta = json.loads((folder / "audio.json").read_text())
    assert flac_rate == rate and len(flac) > 2 * rate
    start = rec.frame_of_time(meta["start_monotonic"])
    live = audio[start : start + len(flac)]
    n = min(len(live), len(flac))
    lag = _lag_ms(_envelope(live[:n], rate), _envelope(flac[:n], rate))
    # The live synth starts each event at its next JACK period (5.3 ms here), the twin on the exact sample.
    assert abs(lag) <= 8.0, f"the recording is {lag:.1f} ms off what was heard"
    corr = float(np.corrcoef(_envelope(live[:n], rate, 20.0), _envelope(flac[:n], rate, 20.0))[0, 1])
    assert corr > 0.95, f"the recording does not follow what was heard (envelope correlation {corr:.3f})"
    assert abs(dbfs(flac) - dbfs(live[:n])) < 1.5


def _envelope(x: np.ndarray, rate: float, ms: float = 2.0) -> np.ndarray:
    k = max(1, int(rate * ms / 1000))
    m = len(x) // k
    return np.sqrt((x[: m * k] ** 2).mean(axis=1).reshape(m, k).mean(axis=1))


def _lag_ms(a: np.ndarray, b: np.ndarray, ms: float = 2.0, reach: int = 20) -> float:
    """Envelope lag of b behind a (ms) by cross-correlation within ±reach bins."""
    a, b = a - a.mean(), b - b.mean()
    best = max(range(-reach, reach + 1), key=lambda s: float(np.dot(a[reach:-reach], np.roll(b, s)[reach:-reach])))
    return -best * ms


def _run_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env.pop("BRAINHARMONIC_AUDIO__ENABLED", None)  # the default: heard through the speakers
    return env


def test_run_is_heard_by_default_and_sigterm_fades_it_out(tmp_path: Path) -> None:
    """`brainharmonic run` with no audio flag plays through JACK as brainharmonic-synth; SIGTERM → silence."""
    sid = f"bh-{uuid.uuid4().hex[:8]}"
    port = f"bh-{uuid.uuid4().hex[:6]}"
    rec = JackRecorder(f"bh-rec-{uuid.uuid4().hex[:6]}")  # activated only once the MIDI reader exists: a JACK
    # client made while this process runs a Python process callback stalls the process (the server waits for
    # the callback, which waits for the GIL held by the client being made); measured: 4 s, 67 xruns.
    with SyntheticOutlet(sid, n_channels=19, sfreq=250.0):
        proc = subprocess.Popen(
            [*BIN, "run", "--source-id", sid, "--virtual-port", port, "--record", str(tmp_path), "--record-audio",
             "--tempo", "160"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_run_env(),
        )  # fmt: skip
        try:
            with MidiReader(port, timeout=60) as reader:  # the virtual MIDI port stays open next to the synth
                outputs = {p.name for p in rec.client.get_ports(is_output=True)}
                assert "brainharmonic-synth:left" in outputs, outputs
                rec.start(_ports("brainharmonic-synth"))
                assert reader.wait_for(lambda m: len(note_ons(m)) >= 10, 60), "no notes from the live run"
                time.sleep(0.5)
                stopped = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                _out, err = proc.communicate(timeout=20)
                time.sleep(0.5)
                rec.stop()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "WARNING" not in err, err
    audio, rate = rec.audio, rec.rate
    at = rec.frame_of_time(stopped)
    assert dbfs(audio[max(0, at - 2 * rate) : at]) > -40, "nothing was heard before SIGTERM"
    quiet = silent_after(audio, rate, at)
    assert quiet is not None and quiet <= 2.0, f"{quiet} s after SIGTERM the synth still sounds"
    assert dbfs(audio) <= -1.0
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    flac, _ = read_recording(folder / "audio.flac")
    assert len(flac) > rate and dbfs(flac) > -40 and dbfs(flac) <= -1.0


def test_kill_9_keeps_all_but_the_last_second_of_audio(tmp_path: Path) -> None:
    sid = f"bh-{uuid.uuid4().hex[:8]}"
    with SyntheticOutlet(sid, n_channels=19, sfreq=250.0):
        proc = subprocess.Popen(
            [*BIN, "run", "--source-id", sid, "--no-midi", "--audio-driver", "jack", "--record", str(tmp_path),
             "--record-audio"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            meta: dict = {}
            while time.monotonic() < deadline:
                found = list(tmp_path.glob("*/audio.json"))
                if found:
                    meta = json.loads(found[0].read_text())
                    if time.monotonic() - meta["start_monotonic"] > 6.0:
                        break
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.1)
            else:
                pytest.fail("the run never started recording audio")
            killed = time.monotonic()
            proc.kill()
            proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    flac, rate = read_recording(found[0].with_name("audio.flac"))
    kept = len(flac) / rate
    missing = killed - meta["start_monotonic"] - kept
    assert 0 <= missing <= 1.0, f"{missing:.2f} s of audio lost to kill -9"
    assert dbfs(flac[-int(2 * rate) :]) > -50, "the recording kept silence instead of the music"


def test_missing_soundfont_is_one_sentence_and_midi_goes_on(tmp_path: Path) -> None:
    sid = f"bh-{uuid.uuid4().hex[:8]}"
    port = f"bh-{uuid.uuid4().hex[:6]}"
    with SyntheticOutlet(sid, n_channels=19, sfreq=250.0):
        proc = subprocess.Popen(
            [*BIN, "run", "--source-id", sid, "--virtual-port", port, "--soundfont", str(tmp_path / "nope.sf2"),
             "--audio-driver", "jack", "--duration", "8"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        with MidiReader(port, timeout=30) as reader:
            assert reader.wait_for(lambda m: len(note_ons(m)) >= 3, 30), "MIDI must go on without the synth"
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("INFO")]
    assert len(lines) == 1, err
    assert "nope.sf2 does not exist" in lines[0] and "--soundfont" in lines[0] and "MIDI only" in lines[0]


def test_driver_that_fails_is_one_sentence_and_midi_goes_on(tmp_path: Path) -> None:
    sid = f"bh-{uuid.uuid4().hex[:8]}"
    port = f"bh-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, PULSE_SERVER="unix:/nonexistent/pulse", PULSE_RUNTIME_PATH=str(tmp_path))
    with SyntheticOutlet(sid, n_channels=19, sfreq=250.0):
        proc = subprocess.Popen(
            [*BIN, "run", "--source-id", sid, "--virtual-port", port, "--audio-driver", "pulseaudio",
             "--duration", "8", "--record", str(tmp_path / "s")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        with MidiReader(port, timeout=30) as reader:
            assert reader.wait_for(lambda m: len(note_ons(m)) >= 3, 30), "MIDI must go on without audio"
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("INFO")]
    assert len(lines) == 1, err
    assert "pulseaudio" in lines[0] and "MIDI only" in lines[0] and "--audio-driver" in lines[0], lines[0]
    (folder,) = (tmp_path / "s").iterdir()  # ... and the session says so too
    notices = [e["message"] for e in read_jsonl(folder / "events.jsonl") if e["event"] == "notice"]
    assert any("pulseaudio" in n and "MIDI only" in n for n in notices), notices


def test_no_audio_device_says_what_was_tried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No JACK server, no PulseAudio/PipeWire server, no ALSA card: one sentence naming each and the fixes."""
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"bh-none-{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("PULSE_SERVER", "unix:/nonexistent/pulse")
    monkeypatch.setenv("PIPEWIRE_REMOTE", "bh-none")
    empty = tmp_path / "asound.conf"
    empty.write_text("")
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(empty))
    synth = Synth(find_soundfont())  # type: ignore[arg-type]
    try:
        with pytest.raises(AudioUnavailable) as err:
            start_output(synth, AudioSettings(driver="auto"))
    finally:
        synth.delete()
    msg = str(err.value)
    assert msg.startswith("No audio output found") and "\n" not in msg
    for driver in ("jack", "pulseaudio", "alsa"):
        assert f"{driver}:" in msg
    assert "MIDI only" in msg and "--audio-driver" in msg and "--no-audio" in msg


def test_unknown_driver_and_unreadable_soundfont_are_sentences(tmp_path: Path) -> None:
    synth = Synth(find_soundfont())  # type: ignore[arg-type]
    try:
        with pytest.raises(ConfigError, match=r"Audio driver 'nosuch' is not in this FluidSynth \(it has: .*jack"):
            start_output(synth, AudioSettings(driver="nosuch"))
    finally:
        synth.delete()
    garbage = tmp_path / "garbage.sf2"
    garbage.write_bytes(os.urandom(4096))
    sink = LiveSynthSink(AudioSettings(driver="jack"), garbage)
    assert not sink.start()
    assert sink.problem is not None and "garbage.sf2 cannot be loaded by FluidSynth" in sink.problem
    sink.open(PIANO, 120.0)  # plays nothing, fails nothing
    sink.send(mido.Message("note_on", note=60, velocity=90), 0.0)
    sink.close()


def test_audio_is_on_by_default_off_with_a_midi_port_or_no_audio() -> None:
    import argparse

    from brainharmonic_rt.sinks.live_synth import add_audio_arguments, audio_overrides, wants_audio

    p = argparse.ArgumentParser()
    add_audio_arguments(p)

    def audio(*argv: str) -> AudioSettings:
        overrides = {k: v for k, v in audio_overrides(p.parse_args(list(argv))).items() if v is not None}
        return AudioSettings(**overrides)

    assert wants_audio(audio(), None)
    assert not wants_audio(audio(), "FLUID Synth")  # an existing port: a synth or DAW plays the notes
    assert wants_audio(audio("--audio-driver", "jack"), "FLUID Synth", forced=True)
    assert not wants_audio(audio("--no-audio"), None)
    assert audio("--audio-driver", "alsa").driver == "alsa" and audio("--record-audio").record


def test_record_audio_without_a_session_folder_is_refused() -> None:
    r = subprocess.run(
        [*BIN, "run", "--board", "synthetic", "--record-audio", "--no-midi"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        "brainharmonic: error: --record-audio keeps the audio in the session folder; add --record DIR."
    )


async def test_closing_mid_note_fades_out_without_a_click() -> None:
    name = f"bh-synth-{uuid.uuid4().hex[:6]}"
    sink = LiveSynthSink(_audio(name))
    assert sink.start(), sink.problem
    rec = JackRecorder(f"bh-rec-{uuid.uuid4().hex[:6]}")
    rec.start(_ports(name))
    try:
        sink.open(LONG, 96.0)
        for p in (55, 62, 67):
            sink.send(mido.Message("note_on", channel=1, note=p, velocity=100), 0.0)
        await asyncio.sleep(1.0)
        closing = time.monotonic()
        sink.close()  # notes still held: the fade must take them to silence before the ports go away
        await asyncio.sleep(0.3)
    finally:
        sink.close()
        rec.stop()
    audio, rate = rec.audio, rec.rate
    at = rec.frame_of_time(closing)
    assert dbfs(audio[at - int(0.2 * rate) : at]) > -30, "the pad was sounding when the synth closed"
    level = np.abs(audio[at:]).max(axis=1)
    last = int(np.flatnonzero(level > 0)[-1])  # the last sample the synth's ports carried
    tail = audio[at + max(0, last - int(0.002 * rate)) : at + last + 1]
    assert dbfs(tail) < -50, f"the output ends at {dbfs(tail):.1f} dBFS: a click"
