"""The `brainharmonic` command as a person uses it: subprocesses, real recordings, real ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mido
import numpy as np
import pytest

from brainharmonic_rt.recording import read_jsonl, read_session

from .midiutil import MidiReader, all_notes_off, note_ons, unmatched_notes

BIN = [sys.executable, "-m", "brainharmonic_rt.cli"]


def bh(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BIN, *args], capture_output=True, text=True, timeout=timeout, **kw)


def test_help_documents_every_command() -> None:
    out = bh("--help").stdout
    for cmd in ("demo", "run", "replay", "render", "streams", "ports", "config"):
        assert cmd in out
    assert "--stream" in bh("run", "--help").stdout


def test_render_is_deterministic_and_writes_everything(eegmat_dir: Path, tmp_path: Path) -> None:
    rest = eegmat_dir / "Subject00_1.edf"
    a, b, c = tmp_path / "a.mid", tmp_path / "b.mid", tmp_path / "c.mid"
    extra = ["--wav", str(tmp_path / "a.wav"), "--events", str(tmp_path / "a.jsonl"), "--png", str(tmp_path / "a.png")]
    r = bh("render", str(rest), "--out", str(a), "--seed", "7", "--seconds", "40", *extra)
    assert r.returncode == 0, r.stderr
    assert bh("render", str(rest), "--out", str(b), "--seed", "7", "--seconds", "40").returncode == 0
    assert bh("render", str(rest), "--out", str(c), "--seed", "8", "--seconds", "40").returncode == 0
    assert a.read_bytes() == b.read_bytes(), "same seed and input must give byte-identical MIDI"
    assert a.read_bytes() != c.read_bytes()
    mid = mido.MidiFile(a)
    assert len(mid.tracks) >= 4  # tempo track + one per instrument
    events = read_jsonl(tmp_path / "a.jsonl")
    assert len(events) == sum(1 for t in mid.tracks for m in t if m.type == "note_on" and m.velocity > 0)
    assert (tmp_path / "a.wav").stat().st_size > 100_000 and (tmp_path / "a.png").stat().st_size > 5_000


@pytest.mark.parametrize(
    ("args", "code", "pattern"),
    [
        (["render", "/nonexistent/x.edf", "--out", "x.mid"], 3, "does not exist|not found|No such"),
        (["render", "{garbage}", "--out", "x.mid"], 3, "garbage.edf"),
        (["config", "--show", "--config", "{badtoml}"], 2, "music.tempo"),
        (["run", "--source-id", "bh-nothing-here", "--timeout", "1", "--no-midi", "--no-audio"], 4, "bh-nothing-here"),
    ],
)
def test_bad_input_gets_one_clear_line(tmp_path: Path, args: list[str], code: int, pattern: str) -> None:
    garbage = tmp_path / "garbage.edf"
    garbage.write_bytes(os.urandom(4096))
    badtoml = tmp_path / "bad.toml"
    badtoml.write_text("[music]\ntempo = 900\n")
    args = [a.format(garbage=garbage, badtoml=badtoml) for a in args]
    r = bh(*args, cwd=tmp_path)
    assert r.returncode == code, r.stderr
    err = r.stderr.strip()
    assert "Traceback" not in err
    assert err.startswith("brainharmonic: error:")
    assert len(err.splitlines()) == 1
    import re

    assert re.search(pattern, err), err


def test_nonexistent_midi_port_lists_ports(jack_server: None, tmp_path: Path) -> None:
    from mne_lsl.player import PlayerLSL  # noqa: F401  (a stream must exist for run to get that far)

    from .lslutil import SyntheticOutlet

    sid = f"bh-{uuid.uuid4().hex[:8]}"
    with SyntheticOutlet(sid, n_channels=4):
        r = bh("run", "--source-id", sid, "--midi-port", "NoSuchSynth", "--duration", "5")
    assert r.returncode == 5, r.stderr
    assert "NoSuchSynth" in r.stderr and "Traceback" not in r.stderr


def _player(edf: Path, sid: str):
    from mne_lsl.player import PlayerLSL

    player = PlayerLSL(edf, chunk_size=10, name="bh-cli-test", source_id=sid)
    player.start()
    return player


def test_sigterm_during_run_silences_port_and_leaves_readable_session(
    jack_server: None, eegmat_dir: Path, tmp_path: Path
) -> None:
    sid = f"bh-{uuid.uuid4().hex[:8]}"
    port = f"bh-{uuid.uuid4().hex[:6]}"
    player = _player(eegmat_dir / "Subject01_1.edf", sid)
    proc = subprocess.Popen(
        [*BIN, "run", "--source-id", sid, "--virtual-port", port, "--record", str(tmp_path), "--tempo", "160"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with MidiReader(port, timeout=30) as reader:
            assert reader.wait_for(lambda m: len(note_ons(m)) >= 5, 60), "no notes from the live run"
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=20)
            time.sleep(0.2)
            msgs = reader.snapshot()
    finally:
        player.stop()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    used = {m[0] & 0x0F for _, m in note_ons(msgs)}
    assert used <= all_notes_off(msgs)
    assert unmatched_notes(msgs) == {}
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    sess = read_session(folder)
    assert sess.data.shape[0] == 21 and sess.data.shape[1] > 500
    assert read_jsonl(folder / "states.jsonl") and read_jsonl(folder / "notes.jsonl")
    # ... and the session re-renders offline.
    r = bh("render", str(folder), "--out", str(tmp_path / "again.mid"))
    assert r.returncode == 0, r.stderr
    assert mido.MidiFile(tmp_path / "again.mid").length > 0


def test_kill_9_loses_at_most_the_last_second(jack_server: None, eegmat_dir: Path, tmp_path: Path) -> None:
    from mne_lsl.lsl import local_clock

    sid = f"bh-{uuid.uuid4().hex[:8]}"
    player = _player(eegmat_dir / "Subject02_1.edf", sid)
    proc = subprocess.Popen(
        [*BIN, "run", "--source-id", sid, "--no-midi", "--record", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            folders = [p for p in tmp_path.iterdir() if p.is_dir()]
            if folders and len(read_jsonl(folders[0] / "states.jsonl")) > 8:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the run never wrote brain states")
        time.sleep(1.5)
        killed_at = local_clock()
        proc.kill()
        proc.communicate(timeout=10)
    finally:
        player.stop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    sess = read_session(folders[0])
    assert sess.times[-1] >= killed_at - 1.0, "more than the last second of EEG was lost"
    gaps = np.diff(sess.times)
    assert gaps.min() > 0 and gaps.max() < 0.1, "the recording reads back contiguous"
    assert read_jsonl(folders[0] / "notes.jsonl") is not None


def test_no_torch_in_the_runtime() -> None:
    code = (
        "import sys, brainharmonic_rt.cli, brainharmonic_rt.pipeline, brainharmonic_rt.sources.lsl, "
        "brainharmonic_rt.sinks.rtmidi_port, brainharmonic_rt.recording; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_demo_writes_mid_wav_png_and_a_summary(eegmat_dir: Path, tmp_path: Path) -> None:
    r = bh("demo", "--data", str(eegmat_dir), "--seconds", "30", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("demo.mid", "demo.wav", "demo.png", "demo.jsonl"):
        assert (tmp_path / "out" / name).stat().st_size > 1000, name
    assert "[rest]" in r.stdout and "[mental arithmetic]" in r.stdout
    assert len(mido.MidiFile(tmp_path / "out" / "demo.mid").tracks) >= 4
    # MIDI channels are printed 0-based, as the config writes them (review: the summary printed them 1-based)
    from brainharmonic_rt.config import Settings
    from brainharmonic_rt.music.ensemble import resolve_instruments

    mid = mido.MidiFile(tmp_path / "out" / "demo.mid")
    used = {m.channel for t in mid.tracks for m in t if m.type == "note_on"}
    printed = {int(x) for x in re.findall(r" channel +(\d+) ", r.stdout)}
    assert printed and used <= printed, (used, printed, r.stdout)
    defaults = resolve_instruments(["frontal", "central", "temporal", "parietal", "occipital"], Settings().music)
    assert {i.channel for i in defaults.values()} == printed


def test_fmri_npy_renders_with_its_preset(tmp_path: Path) -> None:
    fmri = Path(__file__).resolve().parents[2] / "shared" / "data" / "fmri" / "100206" / "rfMRI_REST1_LR.npy"
    if not fmri.exists():
        pytest.skip(f"fMRI sample data not present at {fmri}")
    r = bh("render", str(fmri), "--out", str(tmp_path / "f.mid"), "--seconds", "400", "--tr", "0.72")
    assert r.returncode == 0, r.stderr
    assert "379 channels" in r.stdout and mido.MidiFile(tmp_path / "f.mid").length > 100


def test_learned_mode_renders_deterministically_and_generate_writes_midi(eegmat_dir: Path, tmp_path: Path) -> None:
    rest, task = eegmat_dir / "Subject04_1.edf", eegmat_dir / "Subject04_2.edf"
    outs = [tmp_path / "a.mid", tmp_path / "b.mid"]
    for out in outs:
        r = bh("render", str(rest), str(task), "--mode", "learned", "--seconds", "25", "--seed", "3", "--out", str(out))
        assert r.returncode == 0, r.stderr
    assert outs[0].read_bytes() == outs[1].read_bytes(), "learned mode is deterministic for a seed"
    assert sum(1 for t in mido.MidiFile(outs[0]).tracks for m in t if m.type == "note_on") > 20
    r = bh("generate", "--bars", "4", "--latent-seed", "1", "--out", str(tmp_path / "g.mid"))
    assert r.returncode == 0, r.stderr
    assert mido.MidiFile(tmp_path / "g.mid").length > 4
