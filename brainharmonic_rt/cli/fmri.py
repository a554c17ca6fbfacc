"""The fMRI side of the command line: options and opening an fMRI input for `render` and `embed`.

fMRI inputs are region time series (``.npy``), CIFTI ``.ptseries.nii`` or 4D NIfTI (``--atlas`` or
``--regions``); ``--labels`` groups their regions by network for any parcellation. They come with
their own settings (``presets/fmri.toml``: slow BOLD bands, 100 s windows), or ``--config``'s.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .common import positive

if TYPE_CHECKING:
    from ..config import Settings

_FMRI_ONLY = (("atlas", "--atlas"), ("regions", "--regions"), ("region_labels", "--labels"))


def add_fmri_input_arguments(p: argparse.ArgumentParser) -> None:
    """--tr, --atlas, --regions, --labels (on `render` and `embed`)."""
    g = p.add_argument_group("fMRI input (.npy region series, CIFTI .ptseries.nii, 4D NIfTI .nii/.nii.gz)")
    g.add_argument(
        "--tr",
        type=positive,
        help="Repetition time (s): required for a .npy region series; NIfTI/CIFTI default to the file header's.",
    )
    g.add_argument("--atlas", metavar="LABELS.nii.gz", help="4D NIfTI: a 3D label image; each label is one region.")
    g.add_argument(
        "--regions", type=int, metavar="N", help="4D NIfTI: parcellate the brain voxels into N regions (Ward)."
    )
    g.add_argument(
        "--labels",
        dest="region_labels",
        metavar="FILE",
        help="CSV/TSV of region,network (region = name or 1-based column): the networks become the instruments.",
    )


def check_not_fmri(args: argparse.Namespace) -> None:
    """ConfigError when fMRI-only options were given for another kind of input."""
    for attr, flag in _FMRI_ONLY:
        if getattr(args, attr, None) is not None:
            raise ConfigError(
                f"{flag} applies to fMRI inputs (.npy, .ptseries.nii, .nii/.nii.gz) only; leave it out for "
                f"{Path(args.input[0]).name}."
            )


def open_fmri_input(
    args: argparse.Namespace, path: Path, limit: Callable[[Any, argparse.Namespace], Any]
) -> tuple[Any, Settings, list[tuple[float, str]]]:
    """(source cropped by --start/--seconds, settings, markers) for an fMRI input."""
    from ..networks import read_labels_file
    from ..sources.fmri import FMRI_PRESET, fmri_kind, open_fmri

    if fmri_kind(path) == "npy" and args.tr is None:
        raise ConfigError(f"fMRI input {path} needs its repetition time: pass --tr SECONDS (0.72 for the HCP runs).")
    source = open_fmri(path, tr=args.tr, atlas=getattr(args, "atlas", None), regions=getattr(args, "regions", None))
    overrides: dict[str, Any] = {}
    labels = getattr(args, "region_labels", None)
    if labels is not None:
        overrides["signal"] = {"groups": read_labels_file(labels, source.info.ch_names)}
    # BOLD is slow: EEG bands do not fit a 1.4 Hz signal, so fMRI gets its own defaults unless --config is given.
    from ..config import load_settings

    settings = load_settings(getattr(args, "config", None) or FMRI_PRESET, **overrides)
    return limit(source, args), settings, []
