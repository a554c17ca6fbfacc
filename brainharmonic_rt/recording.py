"""Session folders: everything a run saw and played, written as it happens.

Layout of a session folder::

    config.toml     the resolved settings of the run
    eeg.json        stream description (name, sfreq, channel names, sample layout)
    eeg.f32         samples as received, float32, sample-major (n_samples x n_channels), appended per chunk
    eeg_times.f64   one LSL (or source) timestamp per sample, float64
    states.jsonl    one line per window: session time, band powers, z-scores, bad channels, token
    notes.jsonl     one line per note played (its note_on went out): music time, duration, pitch, velocity,
                    channel, instrument; notes composed but cancelled by a live change are not here
    events.jsonl    start / stop, stream lost / back, no signal / signal back, silent channel groups, notices,
                    program changes made live ("program": music time, instrument, channel, program)
    instruments.json  the instrument table the run played with (name → program, channel, register, role, ...)
    quality.jsonl   per-channel signal quality, one line per quality interval (``[quality] interval``)
    notes.mid       the notes as a MIDI file (written on close; `render` rebuilds it after a crash)

Every file is written without user-space buffering (one write per chunk or line), so after ``kill -9``
nothing that reached a write is lost; readers trim a torn last sample.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from .config import InstrumentSettings, Settings, settings_to_toml
from .errors import DataError
from .events import BrainState, Chunk, Note, SignalInfo

FORMAT_VERSION = 1


class SessionRecorder:
    """Append-only writer of one session folder; use as a context manager."""

    def __init__(self, root: Path, settings: Settings, info: SignalInfo, *, name: str | None = None) -> None:
        self.root = Path(root)
        self.settings = settings
        self.info = info
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.folder = self._unique(self.root / (name or f"session-{stamp}"))
        self._files: dict[str, IO[Any]] = {}
        self._n_samples = 0
        self._instruments: dict[str, InstrumentSettings] | None = None
        self._programs: list[tuple[float, int, int]] = []  # (music time, channel, program) of live changes

    @staticmethod
    def _unique(path: Path) -> Path:
        candidate, k = path, 1
        while candidate.exists():
            k += 1
            candidate = path.with_name(f"{path.name}-{k}")
        return candidate

    def __enter__(self) -> SessionRecorder:
        try:
            self.folder.mkdir(parents=True)
        except OSError as exc:
            raise DataError(
                f"Cannot create the session folder {self.folder} ({exc.strerror}); choose a writable --record DIR."
            ) from None
        (self.folder / "config.toml").write_text(settings_to_toml(self.settings))
        meta = {
            "format_version": FORMAT_VERSION,
            "name": self.info.name,
            "type": self.info.stype,
            "source_id": self.info.source_id,
            "sfreq": self.info.sfreq,
            "ch_names": list(self.info.ch_names),
            "units": self.info.units,
            "dtype": "float32",
            "layout": "sample-major",
            "started": time.time(),
        }
        (self.folder / "eeg.json").write_text(json.dumps(meta, indent=1))
        self._files["eeg"] = open(self.folder / "eeg.f32", "ab", buffering=0)
        self._files["times"] = open(self.folder / "eeg_times.f64", "ab", buffering=0)
        for kind in ("states", "notes", "events", "quality"):
            self._files[kind] = open(self.folder / f"{kind}.jsonl", "a", buffering=1)
        self.event("start", folder=str(self.folder))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write_chunk(self, chunk: Chunk) -> None:
        """Append samples as received, shape (n_channels, n_samples)."""
        self._files["eeg"].write(np.ascontiguousarray(chunk.data.T, dtype=np.float32).tobytes())
        self._files["times"].write(np.ascontiguousarray(chunk.timestamps, dtype=np.float64).tobytes())
        self._n_samples += chunk.n_samples

    def write_state(self, state: BrainState) -> None:
        rec: dict[str, Any] = {
            "index": state.index,
            "t": round(state.t_end, 6),
            "stamp": state.stamp,
            "calibrating": state.calibrating,
            "groups": {g.name: {"power": g.power, "z": g.z, "n_good": g.n_good} for g in state.groups},
        }
        if state.bad:
            rec["bad"] = [list(b) for b in state.bad]
        if state.artifacts:
            rec["artifacts"] = [list(a) for a in state.artifacts]
            rec["held"] = {g.name: g.held for g in state.groups if g.held}
        if state.token is not None:
            rec["token"] = state.token
        if state.latent is not None:
            rec["latent"] = [round(float(v), 5) for v in state.latent]
        try:
            line = json.dumps(rec, allow_nan=False, default=_finite)
        except ValueError:  # a non-finite number: never end the run over it, write it as null
            line = json.dumps(_nulls(rec), allow_nan=False, default=_finite)
        self._files["states"].write(line + "\n")

    def set_instruments(self, instruments: dict[str, InstrumentSettings]) -> None:
        """The instrument table as the run plays it now (kept in instruments.json; notes.mid uses it)."""
        self._instruments = dict(instruments)
        table = {name: inst.model_dump(mode="json") for name, inst in instruments.items()}
        (self.folder / "instruments.json").write_text(json.dumps(table, indent=1))

    def program_change(self, t: float, instrument: str, channel: int, program: int) -> None:
        """A live program change at music time ``t`` (notes.mid plays it from there)."""
        self._programs.append((t, channel, program))
        self.event("program", time=round(t, 6), instrument=instrument, channel=channel, program=program)

    def write_notes(self, notes: list[Note]) -> None:
        fh = self._files["notes"]
        for n in notes:
            fh.write(json.dumps(note_record(n)) + "\n")

    def write_quality(self, record: dict[str, Any]) -> None:
        """One quality report: {"t": session time, "channels": {name: {line_noise, range_uv, ..., verdict}}}."""
        self._files["quality"].write(json.dumps(record, allow_nan=False) + "\n")

    def event(self, kind: str, **fields: Any) -> None:
        if "events" in self._files:
            self._files["events"].write(json.dumps({"event": kind, "wall": time.time(), **fields}) + "\n")

    def close(self, *, write_midi: bool = True) -> None:
        if not self._files:
            return
        self.event("stop", samples=self._n_samples)
        for fh in self._files.values():
            fh.close()
        self._files.clear()
        if write_midi:
            from .sinks.midifile import notes_to_midi

            notes = read_notes(self.folder)
            instruments = self._instruments if self._instruments is not None else _played_instruments(notes, self)
            notes_to_midi(
                notes, instruments, self.settings.music.tempo, self.folder / "notes.mid", programs=self._programs
            )


def note_record(n: Note) -> dict[str, Any]:
    """One note as a JSON-ready dict: times in seconds of session time (as in notes.jsonl)."""
    return {
        "time": round(n.time, 6),
        "duration": round(n.duration, 6),
        "pitch": n.pitch,
        "velocity": n.velocity,
        "channel": n.channel,
        "instrument": n.instrument,
    }


def _played_instruments(notes: list[Note], recorder: SessionRecorder) -> dict[str, InstrumentSettings]:
    """Without a recorded table (a recorder used on its own): the configured instruments of the groups that played."""
    from .music.ensemble import resolve_instruments

    groups = sorted({n.instrument for n in notes})
    return {k: v for k, v in resolve_instruments(groups, recorder.settings.music).items() if k in groups}


def _nulls(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON null), recursively."""
    if isinstance(value, dict):
        return {k: _nulls(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nulls(v) for v in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    return value


def _finite(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot record {type(value).__name__}")


@dataclass(frozen=True)
class SessionData:
    """A session folder read back. data : (n_channels, n_samples) float32; times : (n_samples,) seconds."""

    folder: Path
    info: SignalInfo
    data: np.ndarray
    times: np.ndarray
    config_toml: str


def is_session(path: Path) -> bool:
    return path.is_dir() and (path / "eeg.json").is_file() and (path / "eeg.f32").is_file()


def read_session(folder: str | os.PathLike[str]) -> SessionData:
    """Read a (possibly crashed) session folder; a torn last sample is dropped."""
    folder = Path(folder)
    if not is_session(folder):
        raise DataError(
            f"{folder} is not a session folder (no eeg.json + eeg.f32); "
            "pass a folder written by `brainharmonic run --record`."
        )
    try:
        meta = json.loads((folder / "eeg.json").read_text())
        ch_names = tuple(meta["ch_names"])
        info = SignalInfo(
            name=meta.get("name", folder.name),
            sfreq=float(meta["sfreq"]),
            ch_names=ch_names,
            stype=meta.get("type", "EEG"),
            source_id=meta.get("source_id", ""),
            units=meta.get("units", "V"),
        )
    except (ValueError, KeyError) as exc:
        raise DataError(f"{folder / 'eeg.json'} is damaged ({exc}); the session cannot be replayed.") from None
    raw = np.fromfile(folder / "eeg.f32", dtype=np.float32)
    times = np.fromfile(folder / "eeg_times.f64", dtype=np.float64) if (folder / "eeg_times.f64").exists() else None
    n_ch = len(ch_names)
    n = raw.size // n_ch
    if times is not None:
        n = min(n, times.size)
    data = raw[: n * n_ch].reshape(n, n_ch).T
    if times is None:
        times = np.arange(n) / info.sfreq
    config = (folder / "config.toml").read_text() if (folder / "config.toml").exists() else ""
    return SessionData(folder, info, data, times[:n], config)


def read_notes(folder: Path) -> list[Note]:
    """Notes from notes.jsonl; a torn last line (crash) is skipped."""
    path = Path(folder) / "notes.jsonl"
    notes: list[Note] = []
    if not path.exists():
        return notes
    for line in path.read_text().splitlines():
        try:
            d = json.loads(line)
            notes.append(Note(d["time"], d["duration"], d["pitch"], d["velocity"], d["channel"], d["instrument"]))
        except (ValueError, KeyError):
            continue
    return notes


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out
