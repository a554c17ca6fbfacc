"""Channel names → scalp-region groups, for the headsets and files people actually use."""

from __future__ import annotations

from pathlib import Path

import mne
import pytest

from brainharmonic_rt.errors import ConfigError
from brainharmonic_rt.signal.channels import REGIONS, clean_name, group_channels, is_aux, region_of


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("EEG Fp1", "Fp1"),
        ("Fp1-REF", "Fp1"),
        ("FP1-A1", "Fp1"),
        ("EEG FP1-LE", "Fp1"),
        ("eeg fpz", "Fpz"),
        ("FCZ", "FCz"),
        ("Fc5.", "FC5"),  # PhysioNet eegmmidb pads names with dots
        ("Cz..", "Cz"),
        ("EEG A2-A1", "A2"),
        ("ECG ECG", "ECG"),
        ("TP10", "TP10"),
        ("AFF1h", "AFF1h"),
        ("E17", "E17"),
        ("R001", "R001"),
        ("  O2  ", "O2"),
    ],
)
def test_clean_name(raw: str, clean: str) -> None:
    assert clean_name(raw) == clean


def test_muse_layout() -> None:
    # Muse S/2 over LSL (muselsl): four EEG channels and a "Right AUX".
    groups = group_channels(["TP9", "AF7", "AF8", "TP10", "Right AUX"])
    assert groups == {"frontal": (1, 2), "temporal": (0, 3)}
    assert list(groups) == ["frontal", "temporal"]  # region order, empty regions omitted


def test_openbci_cyton_layout() -> None:
    # OpenBCI Cyton's default 8-electrode montage.
    groups = group_channels(["Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2"])
    assert groups == {"frontal": (0, 1), "central": (2, 3), "parietal": (4, 5), "occipital": (6, 7)}


def test_eegmat_layout(eegmat_dir: Path) -> None:
    raw = mne.io.read_raw_edf(eegmat_dir / "Subject00_1.edf", preload=False, verbose=False)
    names = raw.ch_names
    groups = group_channels(names)
    by_name = {g: [clean_name(names[i]) for i in idx] for g, idx in groups.items()}
    assert by_name == {
        "frontal": ["Fp1", "Fp2", "F3", "F4", "F7", "F8", "Fz"],
        "central": ["C3", "C4", "Cz"],
        "temporal": ["T3", "T4", "T5", "T6"],
        "parietal": ["P3", "P4", "Pz"],
        "occipital": ["O1", "O2"],
    }
    grouped = {i for idx in groups.values() for i in idx}
    assert names.index("EEG A2-A1") not in grouped
    assert names.index("ECG ECG") not in grouped


def test_64_channel_10_10_cap() -> None:
    names = mne.channels.make_standard_montage("biosemi64").ch_names
    groups = group_channels(names)
    assert list(groups) == list(REGIONS)
    assert sorted(i for idx in groups.values() for i in idx) == list(range(64))  # every channel, once
    where = {names[i]: g for g, idx in groups.items() for i in idx}
    assert where["FCz"] == "central" and where["CPz"] == "central"
    assert where["AFz"] == "frontal" and where["Fpz"] == "frontal"
    assert where["TP7"] == "temporal" and where["FT8"] == "temporal" and where["T7"] == "temporal"
    assert where["POz"] == "occipital" and where["Iz"] == "occipital"
    assert where["P9"] == "parietal"


def test_10_05_names_all_recognised() -> None:
    names = mne.channels.make_standard_montage("colin27_1005").ch_names
    unknown = sorted(n for n in names if region_of(n) is None)
    assert unknown == ["A1", "A2", "M1", "M2"]
    assert all(is_aux(n) for n in unknown)


def test_256_unknown_names_fall_back_to_even_groups() -> None:
    names = mne.channels.make_standard_montage("GSN-HydroCel-256").ch_names  # E1..E256
    groups = group_channels(names, n_fallback=4)
    assert list(groups) == ["group1", "group2", "group3", "group4"]
    assert groups["group1"] == tuple(range(64))
    assert groups["group4"] == tuple(range(192, 256))


def test_fmri_regions_fall_back() -> None:
    names = [f"R{k:03d}" for k in range(1, 380)]
    groups = group_channels(names, n_fallback=6)
    assert len(groups) == 6
    sizes = [len(v) for v in groups.values()]
    assert sum(sizes) == 379 and max(sizes) - min(sizes) <= 1
    flat = [i for idx in groups.values() for i in idx]
    assert flat == list(range(379))  # contiguous and in order


def test_fewer_channels_than_fallback_groups() -> None:
    assert group_channels(["ch1", "ch2", "ch3"], n_fallback=4) == {
        "group1": (0,),
        "group2": (1,),
        "group3": (2,),
    }


def test_fallback_when_fewer_than_half_recognised() -> None:
    # 2 of 6 names are 10-20: not enough to trust the names.
    names = ["Fp1", "O2", "X1a", "X2a", "X3a", "X4a"]
    assert list(group_channels(names, n_fallback=2)) == ["group1", "group2"]
    # 3 of 6 (half) is enough; unknown names join no group.
    assert group_channels(["Fp1", "O2", "C3", "X1a", "X2a", "X3a"]) == {
        "frontal": (0,),
        "central": (2,),
        "occipital": (1,),
    }


def test_aux_channels_do_not_count_or_join_fallback_groups() -> None:
    groups = group_channels(["E1", "E2", "E3", "E4", "ECG", "EOG"], n_fallback=2)
    assert groups == {"group1": (0, 1), "group2": (2, 3)}


def test_overrides_accept_raw_and_clean_names() -> None:
    names = ["EEG Fp1", "EEG Fp2", "EEG C3", "EEG O1", "EEG A2-A1"]
    groups = group_channels(names, {"lead": ["fp1", "EEG Fp2"], "bass": ["O1", "C3"]})
    assert groups == {"lead": (0, 1), "bass": (2, 3)}


def test_override_with_unknown_channel_names_it_and_lists_valid_names() -> None:
    names = ["EEG Fp1", "EEG Fp2", "EEG C3"]
    with pytest.raises(ConfigError, match=r"group 'lead'.*channel 'Oz'.*EEG Fp1, EEG Fp2, EEG C3"):
        group_channels(names, {"lead": ["Fp1", "Oz"]})


def test_override_with_empty_group() -> None:
    with pytest.raises(ConfigError, match=r"group 'pad' in \[signal.groups\] lists no channels"):
        group_channels(["Fp1", "Fp2"], {"pad": []})
