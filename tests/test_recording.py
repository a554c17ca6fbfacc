"""Session folders: notes.mid plays with the instruments the run played, and the program changes made live."""

from __future__ import annotations

import json
from pathlib import Path

import mido

from brainharmonic_rt.config import Settings
from brainharmonic_rt.events import Note, SignalInfo
from brainharmonic_rt.music.ensemble import resolve_instruments
from brainharmonic_rt.recording import SessionRecorder

GROUPS = ["frontal", "central", "temporal", "parietal", "occipital"]


def _programs(path: Path) -> dict[str, list[tuple[int, int]]]:
    """Track name → [(absolute tick, program)] of its program changes."""
    out: dict[str, list[tuple[int, int]]] = {}
    for track in mido.MidiFile(str(path)).tracks:
        name = next((m.name for m in track if m.type == "track_name"), "")
        tick, changes = 0, []
        for m in track:
            tick += m.time
            if m.type == "program_change":
                changes.append((tick, m.program))
        out[name] = changes
    return out


def test_notes_mid_keeps_each_instrument_and_the_live_program_changes(tmp_path: Path) -> None:
    """Review defect: notes.mid re-derived the instruments from the names that played, so with a silent group
    the others got the wrong program and channel (occipital written as bass), and live set_program was lost."""
    settings = Settings()
    table = resolve_instruments(GROUPS, settings.music)
    info = SignalInfo("test", 250.0, tuple(f"C{i}" for i in range(8)))
    occ = table["occipital"]
    with SessionRecorder(tmp_path, settings, info) as rec:
        rec.set_instruments(table)
        # frontal is silent for the whole session (its electrodes came loose)
        rec.write_notes([Note(0.5 * k, 0.25, 60 + k, 90, table[g].channel, g) for k, g in enumerate(GROUPS[1:])])
        rec.program_change(3.0, "occipital", occ.channel, 40)
        rec.write_notes([Note(3.5, 0.25, 70, 90, occ.channel, "occipital")])
    folder = rec.folder
    assert json.loads((folder / "instruments.json").read_text())["occipital"]["program"] == occ.program
    changes = _programs(folder / "notes.mid")
    assert changes["occipital"][0][1] == occ.program, "occipital starts with its own program"
    assert [p for _, p in changes["occipital"][1:]] == [40], "the live program change is in the file"
    assert changes["occipital"][1][0] > 0
    for g in GROUPS[1:4]:
        assert changes[g][0][1] == table[g].program, g
    mid = mido.MidiFile(str(folder / "notes.mid"))
    channel_of = {
        next(m.name for m in tr if m.type == "track_name"): {m.channel for m in tr if m.type == "note_on"}
        for tr in mid.tracks
    }
    for g in GROUPS[1:]:
        assert channel_of[g] == {table[g].channel}, g
