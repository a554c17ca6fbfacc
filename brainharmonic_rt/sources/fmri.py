"""Parcellated fMRI region time series (``.npy``, volumes × regions) as an offline source.

The HCP runs in ``shared/data/fmri`` hold 379 regions (360 Glasser cortical
parcels + 19 subcortical) sampled every TR = 0.72 s; each volume becomes one
sample of a 1/TR Hz signal with channels "R001".."R379".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ..events import SignalInfo
from .files import ArraySource

HCP_TR = 0.72  # s


def read_fmri(path: str | Path, tr: float = HCP_TR, *, chunk_size: int = 1) -> ArraySource:
    """Read a region time-series file into an :class:`ArraySource`.

    Parameters
    ----------
    path : path to a ``.npy`` file holding a float array of shape (n_volumes, n_regions).
    tr : repetition time in seconds (the sample period).
    chunk_size : volumes per chunk.

    The source's data has shape (n_regions, n_volumes), ``stype`` "fMRI" and
    ``sfreq`` 1/TR; one marker at 0 s names the run (the file stem).
    """
    path = Path(path).expanduser()
    if not (0 < tr <= 60 and np.isfinite(tr)):
        raise DataError(f"TR {tr!r} s for {path} is not a positive number of seconds; pass e.g. --tr 0.72.")
    if not path.is_file():
        raise DataError(f"fMRI file {path} does not exist; check the path (e.g. .../fmri/<subject>/<run>.npy).")
    if path.suffix.lower() != ".npy":
        raise DataError(f"fMRI file {path} is not a .npy file; save the region time series with numpy.save.")
    with path.open("rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY":
        raise DataError(
            f"fMRI file {path} is not a NumPy .npy file (no NumPy header: text, CSV or another format renamed?); "
            "save the region time series with numpy.save."
        )
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" not in str(exc):
            raise DataError(f"Could not read {path} as a NumPy array ({exc}); re-create it with numpy.save.") from None
        raise DataError(
            f"fMRI file {path} holds Python objects, not numbers; save a float array (volumes × regions) "
            "with numpy.save."
        ) from None
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160]
        raise DataError(
            f"Could not read {path} as a NumPy array ({detail}); the file may be truncated: re-create it."
        ) from None
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise DataError(
            f"fMRI file {path} holds an array of shape {arr.shape}; "
            "it must be 2-D (volumes × regions), e.g. (1200, 379)."
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"fMRI file {path} holds {arr.dtype} values; it must hold real numbers (float).")
    n_volumes, n_regions = arr.shape
    if n_volumes < 2:
        raise DataError(f"fMRI file {path} holds only {n_volumes} volume; a run needs at least 2 volumes.")
    bad = ~np.isfinite(arr)
    if bad.any():
        vol, reg = np.argwhere(bad)[0]
        raise DataError(
            f"fMRI file {path} has {int(bad.sum())} non-finite values "
            f"(first at volume {vol + 1}, region {reg + 1}, both counted from 1); "
            "clean or interpolate them before playing the run."
        )
    info = SignalInfo(
        name=path.stem,
        sfreq=1.0 / tr,
        ch_names=tuple(f"R{i + 1:03d}" for i in range(n_regions)),
        stype="fMRI",
        source_id=f"file:{path.parent.name}/{path.stem}",
        units="a.u.",
    )
    return ArraySource(info, arr.T.astype(np.float64), chunk_size=chunk_size, markers=[(0.0, path.stem)])
