"""File sinks: .mid (mido read-back), .wav (real FluidSynth + TimGM6mb), piano-roll .png."""

from __future__ import annotations

import wave
from pathlib import Path

import mido
import numpy as np
import pytest

from brainharmonic_rt.config import DEFAULT_SOUNDFONT, InstrumentSettings, MusicSettings
from brainharmonic_rt.errors import DataError, SinkError
from brainharmonic_rt.events import Note
from brainharmonic_rt.sinks.midifile import MidiFileSink, notes_to_midi, read_notes
from brainharmonic_rt.sinks.pianoroll import save_pianoroll
from brainharmonic_rt.sinks.scheduler import Scheduler
from brainharmonic_rt.sinks.synth import SynthSink, render_wav

INSTRUMENTS = {
    "frontal": InstrumentSettings(channel=0, program=11, role="melody"),
    "temporal": InstrumentSettings(channel=2, program=32, role="bass", low=28, high=50),
}
TEMPO = 96.0
NOTES = [
    Note(0.5, 0.5, 62, 90, 0, "frontal"),
    Note(0.5, 1.25, 38, 100, 2, "temporal"),
    Note(1.0, 0.25, 65, 70, 0, "frontal"),
    Note(1.3125, 0.625, 69, 110, 0, "frontal"),  # off the beat grid: 1.3125 s = 2.1 beats at 96 BPM
]


async def _through_scheduler(path: Path, notes: list[Note]) -> Path:
    sink = MidiFileSink(path)
    sink.open(INSTRUMENTS, TEMPO)
    async with Scheduler([sink], realtime=False) as s:
        s.schedule(notes)
        await s.drain()
    sink.close()
    return path


async def test_midi_file_has_tempo_tracks_programs_and_the_notes(tmp_path: Path) -> None:
    path = await _through_scheduler(tmp_path / "s.mid", NOTES)
    mid = mido.MidiFile(str(path))
    assert mid.type == 1 and mid.ticks_per_beat == 480
    meta = mid.tracks[0]
    assert [m.tempo for m in meta if m.type == "set_tempo"] == [mido.bpm2tempo(TEMPO)]
    sig = next(m for m in meta if m.type == "time_signature")
    assert (sig.numerator, sig.denominator) == (4, 4)
    names = [next(m.name for m in tr if m.type == "track_name") for tr in mid.tracks[1:]]
    assert names == ["frontal", "temporal"]
    for track, inst in zip(mid.tracks[1:], INSTRUMENTS.values(), strict=True):
        first = next(m for m in track if not m.is_meta)
        assert (first.type, first.time, first.program, first.channel) == (
            "program_change",
            0,
            inst.program,
            inst.channel,
        )
        assert all(m.channel == inst.channel for m in track if not m.is_meta)
    # the 1.3125 s note lands on tick 1.3125 s * 96/60 beats/s * 480 = 1008
    ticks = 0
    for m in mid.tracks[1]:
        ticks += m.time
        if m.type == "note_on" and m.note == 69:
            assert ticks == 1008
    back = read_notes(path)
    assert [(n.pitch, n.velocity, n.channel, n.instrument) for n in back] == [
        (n.pitch, n.velocity, n.channel, n.instrument) for n in sorted(NOTES, key=lambda n: (n.time, n.channel))
    ]
    tick_s = 60 / TEMPO / 480
    for a, b in zip(back, sorted(NOTES, key=lambda n: (n.time, n.channel)), strict=True):
        assert a.time == pytest.approx(b.time, abs=tick_s) and a.duration == pytest.approx(b.duration, abs=tick_s)


async def test_midi_file_bytes_are_deterministic(tmp_path: Path) -> None:
    a = (await _through_scheduler(tmp_path / "a.mid", NOTES)).read_bytes()
    b = (await _through_scheduler(tmp_path / "b.mid", NOTES)).read_bytes()
    c = (await _through_scheduler(tmp_path / "c.mid", NOTES[:-1])).read_bytes()
    assert a == b
    assert a != c


def test_notes_to_midi_round_trips_and_matches_the_sink(tmp_path: Path) -> None:
    out = notes_to_midi(NOTES, INSTRUMENTS, TEMPO, tmp_path / "n.mid")
    assert [(n.pitch, n.instrument) for n in read_notes(out)] == [
        (n.pitch, n.instrument) for n in sorted(NOTES, key=lambda n: (n.time, n.channel))
    ]


async def test_file_sink_ends_notes_left_sounding(tmp_path: Path) -> None:
    sink = MidiFileSink(tmp_path / "cut.mid")
    sink.open(INSTRUMENTS, TEMPO)
    async with Scheduler([sink], realtime=False) as s:
        s.schedule([Note(0.0, 60.0, 60, 90, 0, "frontal")])
        s.advance(2.0)  # leave while the note sounds
    sink.close()
    sink.close()  # idempotent
    (note,) = read_notes(tmp_path / "cut.mid")
    assert note.duration == pytest.approx(2.0)
    mid = mido.MidiFile(str(tmp_path / "cut.mid"))
    assert any(m.type == "control_change" and m.control == 123 for m in mid.tracks[1])


def test_file_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match=r"Cannot write MIDI file .*/nope/x\.mid: folder .*nope does not exist"):
        MidiFileSink(tmp_path / "nope" / "x.mid").open(INSTRUMENTS, TEMPO)
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not midi at all")
    with pytest.raises(DataError, match=r"bad\.mid is not a readable MIDI file"):
        read_notes(bad)
    with pytest.raises(DataError, match=r"missing\.mid does not exist"):
        read_notes(tmp_path / "missing.mid")


def _wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (2, 2)
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2).astype(np.float64)
    return rate, data


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) if x.size else 0.0


def test_render_wav_with_the_real_soundfont(tmp_path: Path) -> None:
    out = render_wav(NOTES, INSTRUMENTS, tmp_path / "s.wav", soundfont=DEFAULT_SOUNDFONT, sample_rate=22050)
    rate, data = _wav(out)
    assert rate == 22050
    assert data.shape[0] == pytest.approx((1.9375 + 1.5) * rate, abs=2)  # last note end + tail
    silence = data[: int(0.45 * rate)]  # before the first note at 0.5 s
    playing = data[int(0.5 * rate) : int(1.5 * rate)]
    assert _rms(silence) < 1.0
    assert _rms(playing) > 300.0, _rms(playing)  # clearly audible in int16 units


def test_missing_soundfont_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match=r"SoundFont .*nope\.sf2 does not exist; .*apt install timgm6mb-soundfont"):
        render_wav(NOTES, INSTRUMENTS, tmp_path / "x.wav", soundfont=tmp_path / "nope.sf2")
    with pytest.raises(SinkError, match="--soundfont"):
        SynthSink(tmp_path / "x.wav", soundfont=tmp_path / "nope.sf2").open(INSTRUMENTS, TEMPO)
    assert not (tmp_path / "x.wav").exists()


async def test_synth_sink_renders_what_the_scheduler_sends(tmp_path: Path) -> None:
    sink = SynthSink(tmp_path / "live.wav", sample_rate=22050, tail=0.5)
    sink.open(INSTRUMENTS, TEMPO)
    async with Scheduler([sink], realtime=False) as s:
        s.schedule(NOTES)
        await s.drain()
    sink.close()
    sink.close()
    rate, data = _wav(tmp_path / "live.wav")
    assert _rms(data[int(0.5 * rate) : int(1.5 * rate)]) > 300.0


def test_pianoroll_png(tmp_path: Path) -> None:
    from matplotlib.image import imread

    out = save_pianoroll(
        NOTES, INSTRUMENTS, tmp_path / "roll.png", markers=[(0.0, "rest"), (1.0, "task")], title="test"
    )
    img = imread(str(out))
    assert img.shape[0] == 500 and img.shape[1] == 1200
    assert img[..., :3].std() > 0.05, "the picture is not blank"
    empty = save_pianoroll([], MusicSettings().instruments, tmp_path / "empty.png")
    assert empty.stat().st_size > 1000
