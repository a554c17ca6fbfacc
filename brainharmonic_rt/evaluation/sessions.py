"""Recordings on disk → sessions → windows, through the runtime's own signal chain.

A *session* is what a person lives through in one sitting: for PhysioNet eegmat, a
subject's rest recording followed by their task recording (so the baseline is taken at
the start of the rest, as in a live run); for any other file, the file alone. Training,
``embed`` and ``eval encoder`` all read data through here, so the windows they see are
exactly the windows the live pipeline would make.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..brain.encoder import EncoderInput, EncoderSpec
from ..config import SignalSettings
from ..errors import DataError
from ..events import Chunk, SignalInfo, Window
from ..signal import SignalChain
from ..signal.channels import group_channels
from ..sources.files import ArraySource, open_recordings

EEGMAT_FILE = re.compile(r"^Subject(\d+)_([12])\.edf$", re.IGNORECASE)
EEGMAT_LABELS = {"1": "rest", "2": "task"}
_BIDS_SUBJECT = re.compile(r"sub-([A-Za-z0-9]+)")
_EXTENSIONS = (".edf", ".bdf", ".fif", ".fif.gz", ".vhdr", ".set")
CHUNK = 32  # samples per chunk pushed through the chain (as ArraySource plays files)


@dataclass(frozen=True, slots=True)
class SessionFiles:
    """One session: the subject, its recordings in playing order, and a label per recording."""

    subject: str
    paths: tuple[Path, ...]
    labels: tuple[str, ...]


def discover_sessions(root: str | Path, subjects: Sequence[str] | None = None) -> list[SessionFiles]:
    """Every session under ``root``, sorted by subject.

    eegmat ``SubjectNN_1.edf`` + ``SubjectNN_2.edf`` make one session labelled (rest, task);
    other recordings (EDF/BDF/FIF/BrainVision/EEGLAB, also inside BIDS folders) are one
    session each, the subject taken from a ``sub-XX`` folder or file name, else the file stem.
    ``subjects`` keeps only those subject names (e.g. ``["Subject00"]``).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"Data folder {root} does not exist; pass --data pointing at a folder of recordings.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and any(p.name.lower().endswith(e) for e in _EXTENSIONS))
    eegmat: dict[str, dict[str, Path]] = {}
    sessions: list[SessionFiles] = []
    for path in files:
        m = EEGMAT_FILE.match(path.name)
        if m:
            eegmat.setdefault(f"Subject{int(m.group(1)):02d}", {})[m.group(2)] = path
            continue
        sub = _BIDS_SUBJECT.search(str(path.relative_to(root)))
        subject = f"sub-{sub.group(1)}" if sub else path.name.split(".")[0]
        sessions.append(SessionFiles(subject, (path,), (path.name.split(".")[0],)))
    for subject, parts in eegmat.items():
        keys = sorted(parts)
        sessions.append(SessionFiles(subject, tuple(parts[k] for k in keys), tuple(EEGMAT_LABELS[k] for k in keys)))
    sessions.sort(key=lambda s: (s.subject, s.paths))
    if subjects is not None:
        wanted = set(subjects)
        unknown = wanted - {s.subject for s in sessions}
        if unknown:
            raise DataError(
                f"Subject(s) {', '.join(sorted(unknown))} not found under {root}; "
                f"it holds {', '.join(sorted({s.subject for s in sessions})[:30])}."
            )
        sessions = [s for s in sessions if s.subject in wanted]
    if not sessions:
        raise DataError(
            f"No recordings ({', '.join(_EXTENSIONS)}) under {root}; pass --data pointing at a folder of EEG files."
        )
    return sessions


@dataclass
class OpenSession:
    """A session read into memory: the source, and where each recording starts (s)."""

    files: SessionFiles
    source: ArraySource
    starts: np.ndarray  # (n_recordings,) seconds from the session start
    ends: np.ndarray  # (n_recordings,)

    @property
    def info(self) -> SignalInfo:
        return self.source.info

    def segment_of(self, t_end: float, window_s: float) -> int:
        """Index of the recording holding the whole window ending at ``t_end``; -1 when it straddles two."""
        t_start = t_end - window_s + 1.0 / self.info.sfreq
        for k, (a, b) in enumerate(zip(self.starts, self.ends, strict=True)):
            if a - 1e-9 <= t_start and t_end < b:
                return k
        return -1


def open_session(files: SessionFiles, seconds: float | None = None) -> OpenSession:
    """Read a session's recordings back to back (each cropped to ``seconds`` when given)."""
    source = open_recordings(list(files.paths), seconds=seconds)
    stems = [p.name.split(".")[0] for p in files.paths]
    starts: list[float] = []
    for onset, desc in source.markers:
        if len(starts) < len(stems) and desc == stems[len(starts)]:
            starts.append(float(onset))
    if len(starts) != len(stems):
        raise DataError(f"Could not find where each of {', '.join(stems)} starts in the session; read them singly.")
    ends = [*starts[1:], source.duration]
    return OpenSession(files, source, np.asarray(starts), np.asarray(ends))


def session_windows(session: OpenSession, signal: SignalSettings) -> Iterator[Window]:
    """The session's windows, made by the runtime's :class:`SignalChain` from 32-sample chunks."""
    chain = SignalChain(session.info, signal)
    data = session.source.data
    n = data.shape[1]
    stamps = np.arange(n, dtype=np.float64) / session.info.sfreq
    for a in range(0, n, CHUNK):
        yield from chain.push(Chunk(np.ascontiguousarray(data[:, a : a + CHUNK]), stamps[a : a + CHUNK]))


@dataclass
class SessionArrays:
    """Prepared model inputs of one session (for training).

    x : float32 (n_windows, n_channels, n_samples); t_end : (n_windows,) s;
    segment : (n_windows,) recording index, -1 for windows straddling two recordings;
    region : int64 (n_channels,); skipped : windows dropped because a channel was bad.
    """

    subject: str
    x: np.ndarray
    t_end: np.ndarray
    segment: np.ndarray
    region: np.ndarray
    labels: tuple[str, ...]
    skipped: int = 0
    ch_names: tuple[str, ...] = field(default_factory=tuple)


def prepare_arrays(session: OpenSession, signal: SignalSettings, spec: EncoderSpec) -> SessionArrays:
    """Every window of ``session`` as the runtime's :class:`EncoderInput` prepares it.

    Windows where any grouped channel is bad are skipped (training wants a fixed channel
    set per session; the runtime itself just drops bad channels).
    """
    info = session.info
    groups = group_channels(info.ch_names, signal.groups, signal.fallback_groups)
    inp = EncoderInput(info, signal, spec, groups)
    n_ch = len(inp.channels)
    xs: list[np.ndarray] = []
    t_end: list[float] = []
    segment: list[int] = []
    skipped = 0
    for window in session_windows(session, signal):
        prep = inp.prepare(window)
        if prep is None or prep.x.shape[1] != n_ch:
            skipped += 1
            continue
        xs.append(prep.x[0])
        t_end.append(window.t_end)
        segment.append(session.segment_of(window.t_end, signal.window))
    if not xs:
        raise DataError(
            f"Session {session.files.subject} ({', '.join(p.name for p in session.files.paths)}) gave no "
            "usable window; check that its channels carry signal."
        )
    return SessionArrays(
        subject=session.files.subject,
        x=np.stack(xs).astype(np.float32),
        t_end=np.asarray(t_end),
        segment=np.asarray(segment, dtype=np.int64),
        region=inp.region.copy(),
        labels=session.files.labels,
        skipped=skipped,
        ch_names=tuple(info.ch_names[i] for i in inp.channels),
    )
