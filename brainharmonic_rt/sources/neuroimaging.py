"""4D NIfTI and CIFTI ``.ptseries.nii`` → region time series (volumes, regions) with names and TR.

Needs the ``[fmri]`` extra (nibabel; nilearn for NIfTI), imported lazily so the rest of the
runtime works without them. Three ways in:

* CIFTI parcellated time series (``.ptseries.nii``, e.g. HCP's ``*_Atlas.ptseries.nii``): the parcel
  names and the TR come from the file (nibabel), so HCP-MMP1 parcels ("L_V1_ROI") group by network;
* 4D NIfTI + ``atlas`` (a 3D integer label image): nilearn's ``NiftiLabelsMasker`` averages the
  voxels of each label (regions named ``R<label>``, e.g. "R007", in label order);
* 4D NIfTI + ``n_regions``: a data-driven parcellation of the brain voxels (nilearn ``Parcellations``,
  Ward clustering: no atlas, no download); regions named "P001".. in the order nilearn returns them.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

MIN_VOXELS_PER_REGION = 2


def _need(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(
            f"Reading {what} needs the Python package '{module.split('.')[0]}', which is not installed; "
            "install the fMRI extra: pip install 'brainharmonic-rt[fmri]'."
        ) from None


def _load(path: Path, what: str) -> Any:
    nib = _need("nibabel", what)
    try:
        return nib.load(str(path))
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160]
        raise DataError(f"Could not read {path} as {what} ({detail}); check that the file is complete.") from None


def read_cifti_ptseries(path: Path) -> tuple[np.ndarray, tuple[str, ...], float | None]:
    """A CIFTI-2 parcellated dense time series → (data (volumes, parcels), parcel names, TR in s or None)."""
    nib = _need("nibabel", "CIFTI files")
    img = _load(path, "a CIFTI-2 .ptseries.nii file")
    if not isinstance(img, nib.Cifti2Image):
        raise DataError(f"{path} is not a CIFTI-2 file; a .ptseries.nii must be written as CIFTI-2 (wb_command).")
    axes = [img.header.get_axis(i) for i in range(img.ndim)]
    if len(axes) != 2 or not isinstance(axes[0], nib.cifti2.SeriesAxis):
        raise DataError(f"{path} is not a time series along its first axis; use a .ptseries.nii file.")
    if not isinstance(axes[1], nib.cifti2.ParcelsAxis):
        raise DataError(
            f"{path} holds {type(axes[1]).__name__} columns, not parcels; parcellate it first "
            "(wb_command -cifti-parcellate) or pass a .ptseries.nii."
        )
    series = axes[0]
    tr: float | None = None
    if series.unit == "SECOND" and series.step > 0:
        tr = float(series.step)
    data = np.asarray(img.get_fdata(dtype=np.float64))
    return data, tuple(str(n) for n in axes[1].name), tr


def _nifti_tr(img: Any) -> float | None:
    """The TR in seconds from a NIfTI header (pixdim[4] with its time unit), or None when not set."""
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not zooms[3] > 0:
        return None
    unit = img.header.get_xyzt_units()[1]
    scale = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}.get(unit)
    return None if scale is None else round(float(zooms[3]) * scale, 6)


def read_nifti(
    path: Path, *, atlas: str | Path | None, n_regions: int | None
) -> tuple[np.ndarray, tuple[str, ...], float | None]:
    """A 4D NIfTI → (data (volumes, regions), region names, TR in s or None), by atlas or data-driven."""
    if (atlas is None) == (n_regions is None):
        raise DataError(
            f"{path} is a volume image: pass --atlas LABELS.nii.gz (a label image) or --regions N "
            "(a data-driven parcellation) to turn it into region time series, not both."
        )
    img = _load(path, "a NIfTI image")
    if img.ndim != 4 or img.shape[3] < 2:
        raise DataError(
            f"{path} has shape {img.shape}; fMRI input must be a 4D NIfTI (x, y, z, volumes) with >= 2 volumes."
        )
    tr = _nifti_tr(img)
    maskers = _need("nilearn.maskers", "NIfTI files")
    if atlas is not None:
        atlas_path = Path(atlas).expanduser()
        if not atlas_path.is_file():
            raise DataError(f"Atlas {atlas_path} does not exist; pass a 3D label image with --atlas.")
        labels_img = _load(atlas_path, "a NIfTI label image")
        values = np.unique(np.asarray(labels_img.dataobj))
        values = values[values != 0]
        if labels_img.ndim != 3 or values.size == 0 or not np.allclose(values, np.round(values)):
            raise DataError(
                f"Atlas {atlas_path} (shape {labels_img.shape}) is not a 3D image of integer labels "
                "(0 = background); pass a label atlas, e.g. one written with nibabel or nilearn.datasets."
            )
        masker = maskers.NiftiLabelsMasker(labels_img=labels_img, standardize=False, resampling_target="data")
        data = _quiet(masker.fit_transform, img)
        kept = [int(v) for v in getattr(masker, "region_ids_", {}).values() if v != "background"]
        kept = kept if len(kept) == data.shape[1] else [int(v) for v in values]
        return np.asarray(data, np.float64), tuple(f"R{v:03d}" for v in kept), tr
    assert n_regions is not None
    regions_mod = _need("nilearn.regions", "NIfTI files")
    series = np.asarray(img.dataobj, dtype=np.float32)
    brain = series.std(axis=3) > 0
    if n_regions < 2 or brain.sum() < MIN_VOXELS_PER_REGION * n_regions:
        raise DataError(
            f"--regions {n_regions} cannot be made from {int(brain.sum())} voxels that carry signal in {path}; "
            f"choose 2 to {max(2, int(brain.sum()) // MIN_VOXELS_PER_REGION)} regions."
        )
    nib = _need("nibabel", "NIfTI files")
    mask = nib.Nifti1Image(brain.astype(np.uint8), img.affine)
    parcels = regions_mod.Parcellations(
        method="ward", n_parcels=n_regions, mask=mask, smoothing_fwhm=None, standardize=False, verbose=0
    )
    _quiet(parcels.fit, img)
    data = np.asarray(_quiet(parcels.transform, img), np.float64)
    data = data.reshape(series.shape[3], -1)
    return data, tuple(f"P{i + 1:03d}" for i in range(data.shape[1])), tr


def _quiet(func: Any, *args: Any) -> Any:
    """Call a nilearn function without its informational warnings (resampling notes, report hints)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(*args)
