"""Channel names → scalp regions → channel groups (one group drives one instrument).

Why regions: neighbouring electrodes carry similar signals, so a region is a natural
"voice". Grouping rules, decided once here:

* **frontal**   Fp, AF, F (and 10-5 AFF, FFC, AFp)
* **central**   FC, C, CP (and FCC, CCP): the sensorimotor strip sits either side of C
* **temporal**  everything with a T row: FT, T, TP (and FTT, TTP), incl. old T3/T4/T5/T6
* **parietal**  P (and CPP, PPO)
* **occipital** PO, O, I (and POO, OI)

Midline ``z`` electrodes join the row they sit on (Fz frontal, Cz central, ...).
Reference and auxiliary channels (A1, A2, M1, M2, ECG, EOG, EMG, ...) join no group.
fMRI regions named by their HCP-MMP1 labels ("L_V1", ...) are grouped by brain network
(:mod:`brainharmonic_rt.networks`). Unrecognised layouts (E1..E256, fMRI regions R001..)
fall back to even contiguous groups.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from ..networks import network_groups

REGIONS: tuple[str, ...] = ("frontal", "central", "temporal", "parietal", "occipital")

# 10-20 / 10-10 / 10-5 row prefixes → region (upper case, "h" half-positions allowed).
_ROW_REGION: dict[str, str] = {
    "FP": "frontal",
    "AFP": "frontal",
    "AF": "frontal",
    "AFF": "frontal",
    "F": "frontal",
    "FFC": "frontal",
    "FC": "central",
    "FCC": "central",
    "C": "central",
    "CCP": "central",
    "CP": "central",
    "FT": "temporal",
    "FFT": "temporal",
    "FTT": "temporal",
    "T": "temporal",
    "TTP": "temporal",
    "TP": "temporal",
    "TPP": "temporal",
    "CPP": "parietal",
    "P": "parietal",
    "PPO": "parietal",
    "PO": "occipital",
    "POO": "occipital",
    "O": "occipital",
    "OI": "occipital",
    "I": "occipital",
}
# Electrodes that are references, fiducials or other body signals: never in a group.
_AUX_ROWS = {"A", "M", "N"}
_AUX_WORDS = {
    "ECG", "EKG", "EOG", "HEOG", "VEOG", "EMG", "RESP", "GSR", "PPG", "TRIG", "TRIGGER", "STI", "STATUS",
    "AUX", "REF", "NZ", "LPA", "RPA", "ACC", "X", "Y", "Z",
}  # fmt: skip
_TYPE_PREFIX = re.compile(r"^(EEG|ECG|EKG|EOG|EMG|MEG|POL|SEEG)[\s:_-]+", re.IGNORECASE)
_ELECTRODE = re.compile(r"^([A-Za-z]{1,3}?)(\d+|[zZ])([hH]?)$")


def clean_name(name: str) -> str:
    """Strip type prefixes and reference suffixes and case-normalise a 10-10 name.

    ``"EEG Fp1"``, ``"Fp1-REF"``, ``"FP1-A1"``, ``"EEG FP1-LE"`` → ``"Fp1"``; ``"EEG A2-A1"`` → ``"A2"``;
    ``"ECG ECG"`` → ``"ECG"``. A bipolar name ``"Fp1-F7"`` keeps its first electrode.
    Names that are not electrode names come back stripped but otherwise unchanged.
    """
    s = name.strip().rstrip(".")  # PhysioNet EDFs pad names with dots ("Fc5.", "Cz..")
    stripped = _TYPE_PREFIX.sub("", s)
    if stripped:
        s = stripped
    if "-" in s.strip("-"):
        s = s.strip("-").split("-", 1)[0].strip()
    m = _ELECTRODE.match(s)
    if m is None:
        return s
    row, pos, half = m.groups()
    row_u = row.upper()
    if row_u not in _ROW_REGION and row_u not in _AUX_ROWS:
        return s
    row_out = "Fp" if row_u == "FP" else ("AFp" if row_u == "AFP" else row_u)
    return f"{row_out}{pos.lower() if pos in 'zZ' else pos}{half.lower()}"


def region_of(name: str) -> str | None:
    """Scalp region of a channel name (raw or clean), or ``None`` for aux/unknown channels."""
    m = _ELECTRODE.match(clean_name(name))
    if m is None:
        return None
    return _ROW_REGION.get(m.group(1).upper())


def is_aux(name: str) -> bool:
    """True for reference, fiducial and non-EEG channels (A1, M2, ECG, EOG, ...)."""
    clean = clean_name(name)
    m = _ELECTRODE.match(clean)
    if m is not None and m.group(1).upper() in _AUX_ROWS:
        return True
    words = re.split(r"[\s_:.-]+", clean.upper())
    return any(w.rstrip("0123456789") in _AUX_WORDS for w in words if w)


def group_channels(
    ch_names: Sequence[str],
    overrides: Mapping[str, Sequence[str]] | None = None,
    n_fallback: int = 4,
) -> dict[str, tuple[int, ...]]:
    """Group channel indices by scalp region.

    Parameters
    ----------
    ch_names : channel names as the stream reports them.
    overrides : group name → channel names (raw or clean), from ``[signal.groups]``;
        when given (non-empty) these are the groups, in this order.
    n_fallback : number of even contiguous groups ("group1".."groupN") used when fewer
        than half of the non-auxiliary channels have 10-20/10-10 names and fewer than half
        are HCP-MMP1 region labels (those are grouped by network).

    Returns
    -------
    dict of group name → ascending channel indices; groups without channels are omitted.
    """
    if overrides:
        return _apply_overrides(ch_names, overrides)
    regions = [region_of(n) for n in ch_names]
    candidates = [i for i, n in enumerate(ch_names) if not is_aux(n)]
    recognised = sum(r is not None for r in regions)
    if candidates and 2 * recognised >= len(candidates):
        groups: dict[str, tuple[int, ...]] = {}
        for region in REGIONS:
            idx = tuple(i for i, r in enumerate(regions) if r == region)
            if idx:
                groups[region] = idx
        return groups
    by_network = network_groups(ch_names)
    if by_network:
        return by_network
    pool = candidates or list(range(len(ch_names)))
    n = max(1, min(n_fallback, len(pool)))
    return {
        f"group{k + 1}": tuple(int(i) for i in part)
        for k, part in enumerate(np.array_split(np.asarray(pool, dtype=int), n))
        if len(part)
    }


def _apply_overrides(ch_names: Sequence[str], overrides: Mapping[str, Sequence[str]]) -> dict[str, tuple[int, ...]]:
    exact = {n: i for i, n in enumerate(ch_names)}
    by_clean: dict[str, int] = {}
    for k, n in enumerate(ch_names):
        by_clean.setdefault(clean_name(n).casefold(), k)
    groups: dict[str, tuple[int, ...]] = {}
    for group, names in overrides.items():
        if not names:
            raise ConfigError(
                f"Channel group '{group}' in [signal.groups] lists no channels; give it at least one "
                "channel name or remove it."
            )
        idx: list[int] = []
        for name in names:
            i: int | None = exact.get(name)
            if i is None:
                i = by_clean.get(clean_name(name).casefold())
            if i is None:
                raise ConfigError(
                    f"Channel group '{group}' in [signal.groups] names channel '{name}', which the stream "
                    f"does not have; use one of: {_list_names(ch_names)}."
                )
            if i not in idx:
                idx.append(i)
        groups[group] = tuple(sorted(idx))
    return groups


def _list_names(ch_names: Sequence[str], limit: int = 40) -> str:
    shown = ", ".join(ch_names[:limit])
    return shown if len(ch_names) <= limit else f"{shown}, ... ({len(ch_names)} channels in all)"


def fallback_notice(stream: str, ch_names: Sequence[str], groups: Mapping[str, Sequence[int]]) -> str | None:
    """One sentence when ``groups`` are the even-split fallback (generic labels), else None."""
    if not groups or not all(re.fullmatch(r"group\d+", g) for g in groups):
        return None
    shown = ", ".join(ch_names[:4]) + (", ..." if len(ch_names) > 4 else "")
    return (
        f"Stream '{stream}' has only generic channel labels ({shown}), so its channels play as "
        f"{len(groups)} even groups ({', '.join(groups)}) instead of scalp regions; name them with "
        '--channels "1=Fz,2=C3,..." (or [signal] channels).'
    )
