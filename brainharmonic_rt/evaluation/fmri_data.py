"""fMRI runs on disk → band-passed region series and the runtime's windows, for training and evaluation.

Each run is its own session (as `render RUN.npy` plays it): the runtime's :class:`SignalChain`
with the fMRI preset's settings filters it causally and cuts its windows, so training and
``eval fmri-encoder`` see exactly what a live run would. Layout expected under ``--data``:
``<subject>/<run>.npy`` (the HCP folders: ``rfMRI_REST1_LR.npy``, ``tfMRI_<TASK>_LR.npy``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import SignalSettings
from ..errors import DataError
from ..events import Chunk
from ..signal import SignalChain
from ..sources.fmri import open_fmri

REST_PREFIX = "rfMRI"


@dataclass(frozen=True, slots=True)
class RunFile:
    subject: str
    run: str  #: file stem, e.g. "tfMRI_MOTOR_LR"
    path: Path

    @property
    def is_rest(self) -> bool:
        return self.run.startswith(REST_PREFIX)


@dataclass
class RunSeries:
    """One run through the runtime chain.

    series : float32 (regions, volumes) band-passed signal, the stream's channel order;
    ends : (n_windows,) index one past the last volume of each runtime window;
    calibrating : (n_windows,) bool, windows inside the baseline period; ch_names : the regions.
    """

    file: RunFile
    series: np.ndarray
    ends: np.ndarray
    calibrating: np.ndarray
    ch_names: tuple[str, ...]


def discover_runs(root: str | Path, subjects: Sequence[str] | None = None) -> list[RunFile]:
    """Every ``<subject>/<run>.npy`` under ``root``, sorted; ``subjects`` keeps only those."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"fMRI data folder {root} does not exist; pass --data pointing at <subject>/<run>.npy files.")
    runs = [RunFile(p.parent.name, p.stem, p) for p in sorted(root.glob("*/*.npy"))]
    if subjects is not None:
        unknown = set(subjects) - {r.subject for r in runs}
        if unknown:
            raise DataError(
                f"Subject(s) {', '.join(sorted(unknown))} not found under {root}; "
                f"it holds {', '.join(sorted({r.subject for r in runs}))}."
            )
        runs = [r for r in runs if r.subject in set(subjects)]
    if not runs:
        raise DataError(f"No <subject>/<run>.npy files under {root}; pass the HCP fMRI folder with --data.")
    return runs


def run_labels(runs: Sequence[RunFile]) -> tuple[str, ...]:
    """The distinct run names, rest first, then tasks alphabetically (the classes of the run probe)."""
    names = sorted({r.run for r in runs})
    return tuple(sorted(names, key=lambda n: (not n.startswith(REST_PREFIX), n)))


def read_run(run: RunFile, signal: SignalSettings, tr: float | None = None) -> RunSeries:
    """Filter ``run`` with the runtime's chain; keep the continuous band-passed series and window ends."""
    source = open_fmri(run.path, tr=tr)
    info = source.info
    chain = SignalChain(info, signal)
    data = source.data
    filtered = np.empty(data.shape, dtype=np.float32)
    ends: list[int] = []
    for a in range(data.shape[1]):
        for window in chain.push(Chunk(np.ascontiguousarray(data[:, a : a + 1]), source.timestamps[a : a + 1])):
            end = a + 1
            if not ends:
                filtered[:, :end] = window.data
            else:
                hop = end - ends[-1]
                filtered[:, end - hop : end] = window.data[:, -hop:]
            ends.append(end)
    if not ends:
        raise DataError(
            f"{run.path} ({data.shape[1]} volumes) is shorter than one {signal.window:g} s window; "
            "it cannot be embedded with these settings."
        )
    last = ends[-1]
    t_end = np.asarray(ends) / info.sfreq
    # as BaselineNormalizer reports it: calibrating until a window *before* this one reached the baseline length
    reached = t_end - t_end[0] >= signal.baseline
    calibrating = ~np.concatenate([[False], np.cumsum(reached)[:-1] > 0])
    return RunSeries(run, filtered[:, :last], np.asarray(ends, dtype=np.int64), calibrating, info.ch_names)
