"""Standard MIDI files: a sink that writes one on close, and helpers for notes ↔ files.

Files are type 1 at 480 ticks per beat: track 0 holds the tempo and a 4/4 time
signature, then one track per instrument (named after its channel group, program
change at tick 0). Times come from the messages' music time at the session tempo,
so the same input always gives the same bytes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import mido

from ..config import InstrumentSettings
from ..errors import DataError, SinkError
from ..events import Note
from .base import NoteTracker, is_note_off, is_note_on

TICKS_PER_BEAT = 480


def _check_writable(path: Path, what: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise SinkError(f"{what} path {path} is a folder; give a file name.")
    if not parent.is_dir():
        raise SinkError(f"Cannot write {what} {path}: folder {parent} does not exist; create it first.")
    if not os.access(parent, os.W_OK):
        raise SinkError(f"Cannot write {what} {path}: folder {parent} is not writable.")


class MidiFileSink:
    """Collects messages during a session and writes a type-1 .mid on close.

    Parameters
    ----------
    path : the .mid to write (its folder must exist).
    """

    def __init__(self, path: str | os.PathLike[str], *, ticks_per_beat: int = TICKS_PER_BEAT) -> None:
        self.path = Path(path)
        self.ticks_per_beat = ticks_per_beat
        self._instruments: dict[str, InstrumentSettings] = {}
        self._tempo = 120.0
        self._events: list[tuple[float, int, mido.Message]] = []
        self._programs: dict[int, int] = {}
        self._tracker = NoteTracker()
        self._lock = threading.Lock()
        self._open = False
        self._closed = False

    def open(self, instruments: dict[str, InstrumentSettings], tempo: float) -> None:
        """Start collecting; checks now that the file can be written, not after the session."""
        if self.path != Path(os.devnull):
            _check_writable(self.path, "MIDI file")
        self._instruments, self._tempo = dict(instruments), float(tempo)
        self._events.clear()
        self._programs = {}
        for inst in instruments.values():
            self._programs.setdefault(inst.channel, inst.program)
        self._tracker = NoteTracker()
        self._tracker.channels.update(self._programs)
        self._open, self._closed = True, False

    def send(self, msg: mido.Message, music_time: float) -> None:
        """Keep ``msg`` at ``music_time`` (seconds); repeats of the track's program change are dropped."""
        with self._lock:
            if not self._open:
                raise SinkError(f"MIDI file sink for {self.path} is not open; call open() first.")
            if msg.type == "program_change":
                if self._programs.get(msg.channel) == msg.program:
                    return
                self._programs[msg.channel] = msg.program
            self._tracker.update(msg)
            self._events.append((max(0.0, float(music_time)), len(self._events), msg))

    def close(self) -> None:
        """End dangling notes, silence used channels, write the file. Idempotent."""
        with self._lock:
            if self._closed or not self._open:
                self._closed = True
                return
            self._closed = True
            end = max((t for t, _, _ in self._events), default=0.0)
            for msg in self._tracker.silence():
                self._events.append((end, len(self._events), msg))
            mid = build_midi_file(
                [(t, m) for t, _, m in self._events], self._instruments, self._tempo, self.ticks_per_beat
            )
            try:
                mid.save(str(self.path))
            except OSError as exc:
                raise SinkError(f"Cannot write MIDI file {self.path}: {exc.strerror or exc}.") from None


def build_midi_file(
    events: Sequence[tuple[float, mido.Message]],
    instruments: Mapping[str, InstrumentSettings],
    tempo: float,
    ticks_per_beat: int = TICKS_PER_BEAT,
) -> mido.MidiFile:
    """A type-1 :class:`mido.MidiFile` from timed messages (music seconds, in delivery order)."""
    mid = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("track_name", name="brainharmonic", time=0))
    meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo), time=0))
    meta.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    meta.append(mido.MetaMessage("end_of_track", time=0))
    mid.tracks.append(meta)

    ticks_per_second = tempo / 60.0 * ticks_per_beat
    track_of: dict[int, int] = {}  # channel -> index into `tracks`
    tracks: list[tuple[str, list[tuple[int, int, mido.Message]]]] = []
    for name, inst in instruments.items():
        if inst.channel in track_of:
            continue
        track_of[inst.channel] = len(tracks)
        pc = mido.Message("program_change", channel=inst.channel, program=inst.program)
        tracks.append((name, [(0, -1, pc)]))
    for seq, (t, msg) in enumerate(events):
        ch = getattr(msg, "channel", None)
        if ch is None:
            continue
        if ch not in track_of:
            track_of[ch] = len(tracks)
            tracks.append((f"channel {ch}", []))  # 0-based, as everywhere (config, summaries)
        tracks[track_of[ch]][1].append((round(t * ticks_per_second), seq, msg))
    for name, items in tracks:
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=name, time=0))
        last = 0
        for tick, _, msg in sorted(items, key=lambda x: (x[0], x[1])):
            track.append(msg.copy(time=tick - last))
            last = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        mid.tracks.append(track)
    return mid


def notes_to_midi(
    notes: Iterable[Note],
    instruments: Mapping[str, InstrumentSettings],
    tempo: float,
    path: str | os.PathLike[str],
    *,
    programs: Iterable[tuple[float, int, int]] = (),
) -> Path:
    """Write ``notes`` as a .mid exactly as a virtual Scheduler + :class:`MidiFileSink` would; ``programs``:
    (music time, channel, program) changes made during the run, each before the notes at its time."""
    from .scheduler import events_from_notes

    sink = MidiFileSink(path)
    sink.open(dict(instruments), tempo)
    changes = [(t, mido.Message("program_change", channel=ch, program=p)) for t, ch, p in programs]
    events = sorted([*changes, *events_from_notes(notes)], key=lambda e: e[0])  # stable: a change goes first
    for t, msg in events:
        sink.send(msg, t)
    sink.close()
    return sink.path


def read_notes(path: str | os.PathLike[str]) -> list[Note]:
    """Notes of a .mid (instrument = track name), sorted by time; assumes one tempo (ours)."""
    p = Path(path)
    try:
        mid = mido.MidiFile(str(p))
    except FileNotFoundError:
        raise DataError(f"MIDI file {p} does not exist; check the path.") from None
    except (OSError, EOFError, ValueError, KeyError) as exc:
        raise DataError(f"{p} is not a readable MIDI file ({exc}); check the file.") from None
    tempo = next((m.tempo for tr in mid.tracks for m in tr if m.type == "set_tempo"), 500_000)
    sec_per_tick = tempo / 1e6 / mid.ticks_per_beat
    notes: list[Note] = []
    for track in mid.tracks:
        notes.extend(_track_notes(track, sec_per_tick))
    notes.sort(key=lambda n: (n.time, n.channel, n.pitch))
    return notes


def _track_notes(track: mido.MidiTrack, sec_per_tick: float) -> list[Note]:
    """Pair note_on/note_off (first in, first out per channel and pitch); CC 123 ends a channel's notes."""
    name = next((m.name for m in track if m.type == "track_name"), "")
    out: list[Note] = []
    open_: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def end(key: tuple[int, int], at: int) -> None:
        start, vel = open_[key].pop(0)
        dur = max(at - start, 1) * sec_per_tick
        out.append(Note(start * sec_per_tick, dur, key[1], vel, key[0], name))

    tick = 0
    for msg in track:
        tick += msg.time
        if is_note_on(msg):
            open_.setdefault((msg.channel, msg.note), []).append((tick, msg.velocity))
        elif is_note_off(msg) and open_.get((msg.channel, msg.note)):
            end((msg.channel, msg.note), tick)
        elif msg.type == "control_change" and msg.control == 123:
            for key in [k for k in open_ if k[0] == msg.channel]:
                while open_[key]:
                    end(key, tick)
    for key in list(open_):
        while open_[key]:
            end(key, tick)
    return out
