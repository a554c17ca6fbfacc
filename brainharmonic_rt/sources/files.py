"""Recordings on disk (EDF, BDF, FIF, BrainVision, EEGLAB, XDF, BIDS) as offline sources.

Everything MNE can read goes through :func:`read_raw`, which turns every failure
into one :class:`~brainharmonic_rt.errors.DataError` sentence naming the file and
the fix. :class:`ArraySource` then plays an in-memory array on a virtual clock, as
fast as the consumer takes it, so offline rendering is deterministic.
"""

from __future__ import annotations

import asyncio
import logging
import re
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import mne
import numpy as np

from ..errors import DataError
from ..events import Chunk, SignalInfo
from .base import Marker
from .channel_map import ChannelMap

log = logging.getLogger(__name__)

#: File name endings MNE reads, and the reader for each.
_READERS: dict[str, tuple[str, Callable[..., mne.io.BaseRaw]]] = {
    ".edf": ("EDF", mne.io.read_raw_edf),
    ".bdf": ("BDF", mne.io.read_raw_bdf),
    ".fif": ("FIF", mne.io.read_raw_fif),
    ".fif.gz": ("FIF", mne.io.read_raw_fif),
    ".vhdr": ("BrainVision", mne.io.read_raw_brainvision),
    ".set": ("EEGLAB", mne.io.read_raw_eeglab),
}
_BIDS_EXTENSIONS = [".edf", ".bdf", ".vhdr", ".set", ".fif"]
_XDF = (".xdf", ".xdfz")  # LabRecorder; read with pyxdf (see xdf.py)

# Names that are not scalp EEG even when a file types them as EEG.
_NOT_EEG = re.compile(
    r"(^|[\s_.\-])(ECG|EKG|EOG|HEOG|VEOG|EMG|RESP|GSR|EDA|PPG|SPO2)|^TEMP$"
    r"|^(EEG[ _-]?)?(A1|A2|M1|M2)([ _-]*(A1|A2|M1|M2|REF))?$"
    r"|\b(A2-A1|A1-A2|M2-M1|M1-M2)\b"
    r"|^(STATUS|TRIGGER|TRIG|STI\s*\d*|MARKER|EVENT|ANNOTATIONS?)$",
    re.IGNORECASE,
)
_NON_SIGNAL_TYPES = {"stim", "ecg", "eog", "emg", "resp", "bio", "misc", "syst", "chpi", "gsr", "temperature"}


@dataclass(frozen=True, slots=True)
class BIDSSelector:
    """Which recording of a BIDS dataset to read (entities as in the file names, without prefixes).

    ``root`` may be None when the path given to :func:`read_raw` is the BIDS root.
    """

    root: Path | None = None
    subject: str | None = None
    session: str | None = None
    task: str | None = None
    run: str | None = None
    datatype: str = "eeg"


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence MNE's log and warnings (tests turn warnings into errors)."""
    with warnings.catch_warnings(), mne.utils.use_log_level("ERROR"):
        warnings.simplefilter("ignore")
        yield


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    return next((ext for ext in sorted(_READERS, key=len, reverse=True) if name.endswith(ext)), None)


def _failure(path: Path, kind: str, exc: BaseException) -> DataError:
    text = " ".join(str(exc).split())
    # Readers quote the bytes they choked on: keep the message readable.
    detail = re.sub(r"[^\x20-\x7e]+", "?", text.split(' "')[0])[:160] or type(exc).__name__
    return DataError(
        f"Could not read {path} as {kind} ({detail}); the file may be truncated or corrupt: "
        "re-export or re-download it, or convert it to FIF or EDF."
    )


def read_raw(
    path: str | Path, *, bids: BIDSSelector | None = None, preload: bool = True, xdf_stream: str | None = None
) -> mne.io.BaseRaw:
    """Read any recording MNE reads, chosen by extension, an XDF file, or a BIDS recording.

    A BIDS recording is read when ``bids`` is given (its ``root``, or ``path`` as
    the root) or when ``path`` is a BIDS root folder (it holds
    ``dataset_description.json``). ``xdf_stream`` names (or types) the EEG stream of
    an XDF file. Raises DataError naming the file and the fix.
    """
    path = Path(path).expanduser()
    if bids is not None or (path.is_dir() and (path / "dataset_description.json").is_file()):
        return _read_bids(bids or BIDSSelector(root=path), path, preload)
    if not path.exists():
        raise DataError(f"Recording {path} does not exist; check the path (or pass the right file).")
    if path.is_dir():
        raise DataError(
            f"{path} is a folder, not a recording; pass a file ({', '.join(sorted(_READERS))}) "
            "or a BIDS root with dataset_description.json."
        )
    if path.name.lower().endswith(_XDF):
        from .xdf import read_xdf

        raw_xdf: mne.io.BaseRaw = read_xdf(path, xdf_stream)
        return raw_xdf
    ext = _kind(path)
    if ext is None:
        raise DataError(
            f"Recording {path} has an unknown file type '{path.suffix}'; "
            f"use one of {', '.join(sorted([*_READERS, *_XDF]))} or a BIDS folder."
        )
    kind, reader = _READERS[ext]
    try:
        with _quiet():
            raw = reader(path, preload=preload, verbose="error")
    except Exception as exc:
        raise _failure(path, kind, exc) from None
    _check_signal(raw, path)
    if ext in (".edf", ".bdf"):
        _say_if_truncated(path, raw)
    return raw


def _say_if_truncated(path: Path, raw: mne.io.BaseRaw) -> None:
    """One line when an EDF/BDF holds less than its header promises (MNE reads what is there, silently)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(256)
        n_records, record_s = int(head[236:244].decode("ascii").strip()), float(head[244:252].decode("ascii").strip())
    except (OSError, ValueError):
        return
    promised = n_records * record_s
    held = raw.n_times / raw.info["sfreq"]
    if n_records > 0 and held < promised - max(record_s, 1e-6):
        log.warning(
            "Recording %s is truncated: its header promises %.1f s but the file holds %.1f s; "
            "playing the %.1f s that are there (re-export or re-download it for the rest).",
            path,
            promised,
            held,
            held,
        )


def _check_signal(raw: mne.io.BaseRaw, path: Path) -> None:
    if raw.n_times < 2 or not raw.info["sfreq"] > 0:
        raise DataError(f"Recording {path} holds no samples; pass a recording with data in it.")


def _entities(root: Path, datatype: str) -> str:
    from mne_bids import get_entity_vals

    found = []
    for key, label in (("subject", "subjects"), ("session", "sessions"), ("task", "tasks"), ("run", "runs")):
        with _quiet():
            vals = get_entity_vals(root, key, ignore_datatypes=None)
        if vals:
            found.append(f"{label} {', '.join(vals)}")
    return "; ".join(found) or "nothing"


def _read_bids(sel: BIDSSelector, path: Path, preload: bool) -> mne.io.BaseRaw:
    from mne_bids import BIDSPath, find_matching_paths, read_raw_bids

    root = Path(sel.root if sel.root is not None else path).expanduser()
    if not (root / "dataset_description.json").is_file():
        raise DataError(f"{root} is not a BIDS dataset (no dataset_description.json); pass the BIDS root folder.")
    with _quiet():
        matches: list[BIDSPath] = find_matching_paths(
            root,
            subjects=sel.subject,
            sessions=sel.session,
            tasks=sel.task,
            runs=sel.run,
            datatypes=sel.datatype,
            suffixes=sel.datatype,
            extensions=_BIDS_EXTENSIONS,
        )
    # A BrainVision recording is matched once per file (.vhdr, .eeg, .vmrk): keep one per recording.
    unique = {m.copy().update(extension=None).basename: m for m in matches}
    wanted = (
        ", ".join(
            f"{k} {v}"
            for k, v in (
                ("subject", sel.subject),
                ("session", sel.session),
                ("task", sel.task),
                ("run", sel.run),
            )
            if v is not None
        )
        or "any entities"
    )
    if not unique:
        raise DataError(
            f"No {sel.datatype} recording in BIDS dataset {root} matches {wanted}; "
            f"it holds {_entities(root, sel.datatype)}: "
            "choose among those (--subject/--session/--task/--run)."
        )
    if len(unique) > 1:
        names = ", ".join(sorted(unique))
        raise DataError(
            f"{len(unique)} recordings in BIDS dataset {root} match {wanted} ({names}); "
            "narrow the choice with --subject/--session/--task/--run."
        )
    bids_path = next(iter(unique.values()))
    try:
        with _quiet():
            raw = read_raw_bids(bids_path, verbose="error")
            if preload:
                raw.load_data(verbose="error")
    except Exception as exc:
        raise _failure(Path(str(bids_path.fpath)), "BIDS", exc) from None
    _check_signal(raw, Path(str(bids_path.fpath)))
    return raw


def pick_signal(raw: mne.io.BaseRaw) -> mne.io.BaseRaw:
    """Keep the scalp EEG channels of ``raw`` (in place, returned for chaining).

    Keeps EEG-typed channels (all data channels if none is typed EEG) and drops
    those whose names say reference, ECG/EOG/EMG or trigger (e.g. eegmat's
    "EEG A2-A1" and "ECG ECG"). Raises DataError if nothing is left.
    """
    types = raw.get_channel_types()
    if "eeg" in types:
        keep = [n for n, t in zip(raw.ch_names, types, strict=True) if t == "eeg"]
    else:
        keep = [n for n, t in zip(raw.ch_names, types, strict=True) if t not in _NON_SIGNAL_TYPES]
    keep = [n for n in keep if not _NOT_EEG.search(n.strip())]
    if not keep:
        where = raw.filenames[0] if raw.filenames and raw.filenames[0] else "the recording"
        raise DataError(
            f"No EEG channels left in {where} after dropping references, ECG/EOG/EMG and triggers "
            f"(channels: {', '.join(raw.ch_names[:10])}); set the channel types in the file."
        )
    with _quiet():
        raw.pick(keep)
    return raw


class ArraySource:
    """An in-memory recording as an offline :class:`~brainharmonic_rt.sources.base.Source`.

    Parameters
    ----------
    info : SignalInfo
        Describes the channels of ``data``.
    data : array of shape (n_channels, n_samples)
        The signal (converted to float64; not modified).
    timestamps : array of shape (n_samples,) | None
        Seconds from the start; by default ``arange(n_samples) / sfreq``.
    chunk_size : int
        Samples per chunk.

    ``markers`` lists (onset in seconds from the start, description), e.g. the
    boundary of each concatenated file. Runs on a virtual clock:
    chunks come as fast as they are consumed, the same every time.
    """

    def __init__(
        self,
        info: SignalInfo,
        data: np.ndarray,
        timestamps: np.ndarray | None = None,
        *,
        chunk_size: int = 32,
        markers: Sequence[Marker] = (),
    ) -> None:
        arr = np.asarray(data, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] != info.n_channels:
            raise ValueError(f"data must have shape ({info.n_channels}, n_samples) for {info.name!r}, got {arr.shape}")
        if timestamps is None:
            ts = np.arange(arr.shape[1], dtype=np.float64) / info.sfreq
        else:
            ts = np.asarray(timestamps, dtype=np.float64)
            if ts.shape != (arr.shape[1],):
                raise ValueError(f"timestamps must have shape ({arr.shape[1]},), got {ts.shape}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 sample, got {chunk_size}")
        self.info = info
        self.chunk_size = int(chunk_size)
        self.markers: list[Marker] = list(markers)
        self._data = arr.view()
        self._data.flags.writeable = False
        self._ts = ts.view()
        self._ts.flags.writeable = False
        self._entered = False
        self._n_samples = 0
        self._n_chunks = 0

    @property
    def data(self) -> np.ndarray:
        """The whole signal, read-only, shape (n_channels, n_samples)."""
        return self._data

    @property
    def timestamps(self) -> np.ndarray:
        """Seconds of each sample, read-only, shape (n_samples,)."""
        return self._ts

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self._data.shape[1] / self.info.sfreq

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("An ArraySource can be entered only once; create a new one.")
        self._entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Yield the signal in chunks of ``chunk_size`` samples, then end."""
        n = self._data.shape[1]
        for i, start in enumerate(range(0, n, self.chunk_size)):
            stop = min(start + self.chunk_size, n)
            chunk = Chunk(np.ascontiguousarray(self._data[:, start:stop]), self._ts[start:stop].copy())
            self._n_samples += chunk.n_samples
            self._n_chunks += 1
            yield chunk
            if i % 8 == 7:  # let other tasks (and Ctrl-C) in
                await asyncio.sleep(0)

    def stats(self) -> dict[str, Any]:
        """Counters for telemetry (same keys as LSLSource where they apply)."""
        return {
            "samples": self._n_samples,
            "chunks": self._n_chunks,
            "dropped_chunks": 0,
            "reconnects": 0,
            "rate": self.info.sfreq,
        }


def open_recordings(
    paths: Sequence[str | Path],
    *,
    bids: BIDSSelector | None = None,
    seconds: float | None = None,
    start: float = 0.0,
    chunk_size: int = 32,
    channels: ChannelMap | None = None,
    xdf_stream: str | None = None,
) -> ArraySource:
    """Read one or more recordings, keep their EEG, and play them back to back.

    With ``channels`` the named channels are kept (and renamed) instead of the EEG-typed
    ones (see :mod:`.channel_map`); ``xdf_stream`` picks the EEG stream of XDF files.

    Each recording is cropped to ``[start, start + seconds]`` (seconds from its own
    beginning; ``seconds=None`` keeps the rest). Channels must match by name across
    files (they are reordered to the first file's order) and the rates must agree.
    The source's ``markers`` hold each file's start (description = file stem, e.g.
    "Subject00_1") and the files' own annotations. With ``bids`` and no paths, the
    selected BIDS recording is read.
    """
    items: list[str | Path] = list(paths)
    if not items and bids is not None and bids.root is not None:
        items = [bids.root]
    if not items:
        raise DataError("No recording given; pass at least one file (or a BIDS root with --subject/--task).")
    if start < 0 or (seconds is not None and not seconds > 0):
        raise DataError(f"start ({start} s) must be >= 0 and seconds ({seconds}) > 0; fix the crop range.")
    blocks: list[np.ndarray] = []
    markers: list[Marker] = []
    first: mne.io.BaseRaw | None = None
    stems: list[str] = []
    offset = 0.0
    for item in items:
        raw = pick_channels(read_raw(item, bids=bids, xdf_stream=xdf_stream), channels, Path(item))
        path = Path(raw.filenames[0]) if raw.filenames and raw.filenames[0] else Path(item)
        stem = path.name.split(".")[0]
        if start >= raw.times[-1]:
            raise DataError(
                f"start ({start:g} s) is past the end of {path} ({raw.times[-1]:.1f} s long); choose an earlier start."
            )
        if first is None:
            first = raw
        else:
            _match_channels(first, raw, path)
            if raw.info["sfreq"] != first.info["sfreq"]:
                raise DataError(
                    f"{path} is sampled at {raw.info['sfreq']:g} Hz but the first recording at "
                    f"{first.info['sfreq']:g} Hz; resample it (e.g. raw.resample) "
                    "before playing them together."
                )
            raw.reorder_channels(first.ch_names)
        sfreq = raw.info["sfreq"]
        i0 = round(start * sfreq)
        i1 = raw.n_times if seconds is None else min(raw.n_times, i0 + round(seconds * sfreq))
        data = raw.get_data(start=i0, stop=i1)
        markers.append((offset, stem))
        t0 = raw.first_samp / sfreq
        for ann in raw.annotations:
            onset = float(ann["onset"]) - t0 - start
            if 0 <= onset < (i1 - i0) / sfreq:
                markers.append((offset + onset, str(ann["description"])))
        blocks.append(data)
        stems.append(stem)
        offset += data.shape[1] / sfreq
    assert first is not None
    info = SignalInfo(
        name="+".join(stems),
        sfreq=float(first.info["sfreq"]),
        ch_names=tuple(first.ch_names),
        stype="EEG",
        source_id="file:" + "+".join(stems),
        units="V",
    )
    return ArraySource(info, np.concatenate(blocks, axis=1), chunk_size=chunk_size, markers=markers)


def pick_channels(raw: mne.io.BaseRaw, channels: ChannelMap | None, path: Path) -> mne.io.BaseRaw:
    """The channels to play: those ``channels`` names (renamed, in index order), else the scalp EEG
    (:func:`pick_signal`). In place, returned for chaining."""
    if channels is None:
        return pick_signal(raw)
    channels.check(len(raw.ch_names), str(path))
    old = [raw.ch_names[i] for i in channels.indices]
    with _quiet():
        raw.pick(old)
        raw.rename_channels(dict(zip(old, channels.names.values(), strict=True)))
        raw.set_channel_types(dict.fromkeys(channels.names.values(), "eeg"))
    return raw


def _match_channels(first: mne.io.BaseRaw, raw: mne.io.BaseRaw, path: Path) -> None:
    missing = [c for c in first.ch_names if c not in raw.ch_names]
    extra = [c for c in raw.ch_names if c not in first.ch_names]
    if missing or extra:
        what = []
        if missing:
            what.append(f"lacks {', '.join(missing[:8])}")
        if extra:
            what.append(f"has extra {', '.join(extra[:8])}")
        origin = Path(first.filenames[0]).name if first.filenames and first.filenames[0] else "the first file"
        raise DataError(
            f"{path} {' and '.join(what)} compared with {origin}; "
            "play recordings with the same channels together (or pick matching channels first)."
        )
