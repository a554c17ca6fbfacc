"""The classic brain: band powers per group, robust baseline z-scores, real EEG and fMRI rates."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import mne
import numpy as np
import pytest

from brainharmonic_rt.brain import BandPower, BaselineNormalizer, ClassicBrain
from brainharmonic_rt.config import BandSettings, SignalSettings
from brainharmonic_rt.datasets import eegmat_subject_files
from brainharmonic_rt.errors import ConfigError
from brainharmonic_rt.events import BrainState, Chunk, SignalInfo, Window
from brainharmonic_rt.signal import SignalChain

BANDS = BandSettings().as_dict()  # theta 4-8, alpha 8-13, beta 13-30 Hz
FS = 500.0


def _sines(freqs: list[float], seconds: float, sfreq: float = FS, amp: float = 1.0) -> np.ndarray:
    t = np.arange(round(seconds * sfreq)) / sfreq
    return np.vstack([amp * np.sin(2 * np.pi * f * t + 0.3) for f in freqs])


@pytest.mark.parametrize(("freq", "band"), [(6.0, "theta"), (10.0, "alpha"), (11.3, "alpha"), (21.0, "beta")])
def test_sine_power_lands_in_its_band(freq: float, band: str) -> None:
    amp = 3.0
    bp = BandPower(FS, 1000, BANDS)
    power = dict(zip(bp.names, bp.compute(_sines([freq], 2.0, amp=amp))[0], strict=True))
    assert max(power, key=power.__getitem__) == band
    assert power[band] == pytest.approx(amp**2 / 2, rel=0.02)  # a sine of amplitude A has power A²/2
    assert sum(power.values()) - power[band] < 0.01 * power[band]


def test_band_power_per_channel_and_dc_is_ignored() -> None:
    x = _sines([6.0, 10.0, 21.0], 2.0) + 50.0  # large offsets, as from an unfiltered amplifier
    power = BandPower(FS, 1000, BANDS).compute(x)
    assert power.shape == (3, 3)
    assert list(power.argmax(axis=1)) == [0, 1, 2]


def test_band_without_a_frequency_bin_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"Band alpha \(8.1-8.3 Hz\) holds no frequency bin of a 2 s window"):
        BandPower(FS, 1000, {"alpha": (8.1, 8.3)})


# -- ClassicBrain ------------------------------------------------------------------------------------

NAMES = ("EEG Fp1", "EEG Fp2", "EEG F3", "EEG C3", "EEG C4", "EEG O1", "EEG O2", "EEG A2-A1")


def _brain(**signal: Any) -> tuple[SignalInfo, ClassicBrain]:
    info = SignalInfo("test", FS, NAMES)
    return info, ClassicBrain(info, SignalSettings(**signal), BandSettings())


def _window(data: np.ndarray, t_end: float, bad: tuple[tuple[int, str], ...] = (), index: int = 0) -> Window:
    return Window(index=index, data=data, t_end=t_end, stamp=100.0 + t_end, bad=bad)


def test_group_power_averages_good_channels_only() -> None:
    _, brain = _brain()
    assert brain.groups == {"frontal": (0, 1, 2), "central": (3, 4), "occipital": (5, 6)}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1000))
    x[5:7] += _sines([10.0, 10.0], 2.0, amp=4.0)  # occipital alpha
    x[0] *= 1e3  # Fp1 is junk: reported bad, so it must not count
    state = brain.process(_window(x, 2.0, bad=((0, "railing"),)))
    frontal, occipital = state.group("frontal"), state.group("occipital")
    assert frontal.n_good == 2 and occipital.n_good == 2
    # The brain skips samples after the causal low-pass (decimation_step); same band powers, cheaper FFT.
    expected = np.log10(BandPower(FS, 1000, BANDS, step=brain._step).compute(x[1:3]).mean(axis=0))
    assert [frontal.power[b] for b in ("theta", "alpha", "beta")] == pytest.approx(list(expected))
    assert occipital.power["alpha"] > frontal.power["alpha"] + 0.5
    assert state.bad == (("EEG Fp1", "railing"),)
    assert (state.index, state.t_end, state.stamp) == (0, 2.0, 102.0)


def test_group_with_no_good_channel_is_neutral_flagged_and_finite() -> None:
    _, brain = _brain()
    x = np.random.default_rng(1).standard_normal((8, 1000))
    state = brain.process(_window(x, 2.0, bad=((5, "flat"), (6, "nan"))))
    occ = state.group("occipital")
    assert occ.n_good == 0 and not occ.ok
    assert occ.power == {"theta": 0.0, "alpha": 0.0, "beta": 0.0}, "no good power yet: a defined 0, never NaN"
    assert occ.z == {"theta": 0.0, "alpha": 0.0, "beta": 0.0}
    assert brain.stats()["bad"] == {"EEG O1": "flat", "EEG O2": "nan"}
    good = brain.process(_window(x, 2.25)).group("occipital")
    held = brain.process(_window(x, 2.5, bad=((5, "flat"), (6, "flat")))).group("occipital")
    assert good.ok and not held.ok
    assert held.power == good.power, "a group without signal holds its last good power"
    assert state.signal_ok and set(state.z_mean) == {"theta", "alpha", "beta"}


def test_calibrating_flag_and_z_scores() -> None:
    _, brain = _brain(baseline=5.0, hop=0.25)
    rng = np.random.default_rng(2)
    states: list[BrainState] = []
    for k in range(40):  # 2 s windows every 0.25 s: t_end 2.0 .. 11.75
        x = rng.standard_normal((8, 1000))
        if k >= 30:
            x[3:5] *= 4.0  # central channels get much louder after calibration
        states.append(brain.process(_window(x, 2.0 + 0.25 * k, index=k)))
    calibrating = [s.calibrating for s in states]
    assert calibrating == [True] * 21 + [False] * 19  # baseline ends at the window 5 s after the first
    assert brain.stats()["baseline"]["calibrating"] is False
    central = [s.group("central").z["beta"] for s in states]
    frontal = [s.group("frontal").z["beta"] for s in states]
    assert min(central[30:]) == 4.0  # clipped at z_clip
    assert max(abs(z) for z in frontal[21:]) < 4.0


def test_brain_rejects_bands_above_nyquist_with_a_suggestion_that_works() -> None:
    sfreq = 1 / 0.72
    info = SignalInfo("hcp", sfreq, tuple(f"R{k:03d}" for k in range(1, 380)), stype="fMRI")
    with pytest.raises(ConfigError, match=r"Band theta \(4-8 Hz\).*Nyquist.*set \[bands\] for this rate") as err:
        ClassicBrain(info, SignalSettings(window=60.0, hop=0.72), BandSettings())
    msg = str(err.value)
    bands = {k: (float(a), float(b)) for k, a, b in re.findall(r"(\w+) = \[([\d.]+), ([\d.]+)\]", msg)}
    window = float(re.search(r"window >= ([\d.]+) s", msg).group(1))  # type: ignore[union-attr]
    brain = ClassicBrain(info, SignalSettings(window=window, hop=0.72), BandSettings(**bands))
    assert list(brain.groups) == ["group1", "group2", "group3", "group4"]


# -- BaselineNormalizer ------------------------------------------------------------------------------


def test_frozen_baseline_keeps_a_sustained_change() -> None:
    rng = np.random.default_rng(3)
    norm = BaselineNormalizer(baseline_s=10.0, adapt_s=0.0, z_clip=10.0)
    for k in range(41):
        norm.update(0.25 * k, rng.normal(5.0, 2.0, size=3))
    assert not norm.calibrating
    z = np.mean([norm.update(10.25 + 0.25 * k, rng.normal(11.0, 2.0, size=3)) for k in range(400)], axis=0)
    assert z == pytest.approx([3.0, 3.0, 3.0], abs=0.6)


def test_adapting_baseline_follows_slowly() -> None:
    rng = np.random.default_rng(4)
    norm = BaselineNormalizer(baseline_s=10.0, adapt_s=20.0, z_clip=10.0)
    for k in range(41):
        norm.update(0.25 * k, rng.normal(0.0, 1.0, size=2))
    t = 10.0
    zs = []
    for _ in range(480):  # 120 s at the new level
        t += 0.25
        zs.append(norm.update(t, rng.normal(3.0, 1.0, size=2)).mean())
    early, late = np.mean(zs[:8]), np.mean(zs[-40:])
    assert early > 2.0  # the change is heard at once...
    assert abs(late) < 1.0  # ...and fades after several time constants
    assert np.mean(zs[72:88]) > 0.5  # still audible ~20 s in


def test_constant_features_do_not_divide_by_zero() -> None:
    norm = BaselineNormalizer(baseline_s=1.0, adapt_s=0.0, z_clip=4.0)
    for k in range(10):
        z = norm.update(0.25 * k, np.array([2.0, 2.0]))
        assert np.array_equal(z, [0.0, 0.0])
    assert np.array_equal(norm.update(3.0, np.array([2.5, 1.0])), [4.0, -4.0])


def test_nan_features_score_zero_and_do_not_disturb_the_baseline() -> None:
    rng = np.random.default_rng(5)
    norm = BaselineNormalizer(baseline_s=2.0, adapt_s=5.0, z_clip=4.0)
    for k in range(20):
        x = rng.normal(0.0, 1.0, size=2)
        if k % 3 == 0:
            x[1] = np.nan
        z = norm.update(0.25 * k, x)
        assert np.isfinite(z).all()
    assert norm.center is not None and np.isfinite(norm.center).all()


# -- Real recordings ---------------------------------------------------------------------------------


def _trim_padding(x: np.ndarray) -> np.ndarray:
    """Drop the constant tail EDF records are padded with (about 0.9 s in eegmat)."""
    moving = np.flatnonzero((np.diff(x, axis=1) != 0).any(axis=0))
    return x[:, : moving[-1] + 1]


def _run_session(eegmat: Path, subject: int, baseline: float) -> tuple[list[BrainState], float]:
    download = not os.environ.get("BRAINHARMONIC_NO_DOWNLOAD")
    rest_file, task_file = eegmat_subject_files(eegmat, subject, download=download, progress=False)
    rest = mne.io.read_raw_edf(rest_file, preload=True, verbose=False)
    task = mne.io.read_raw_edf(task_file, preload=True, verbose=False)
    x1, x2 = _trim_padding(rest.get_data()), _trim_padding(task.get_data())
    x = np.concatenate([x1, x2], axis=1)
    info = SignalInfo(f"eegmat{subject:02d}", rest.info["sfreq"], tuple(rest.ch_names))
    signal = SignalSettings(baseline=baseline)
    chain, brain = SignalChain(info, signal), ClassicBrain(info, signal, BandSettings())
    stamps = 5000.0 + np.arange(x.shape[1]) / info.sfreq
    states = []
    for a in range(0, x.shape[1], 64):
        for w in chain.push(Chunk(x[:, a : a + 64], stamps[a : a + 64])):
            states.append(brain.process(w))
    return states, x1.shape[1] / info.sfreq


def _welch_t(z: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean difference z[b] - z[a] along axis 0 and its Welch t statistic."""
    delta = z[b].mean(axis=0) - z[a].mean(axis=0)
    se = np.sqrt(z[b].var(axis=0, ddof=1) / b.sum() + z[a].var(axis=0, ddof=1) / a.sum())
    return delta, delta / se


def test_rest_and_task_differ_on_eegmat(eegmat_dir: Path) -> None:
    """Mental arithmetic vs rest, first five subjects: band z-scores shift for a majority.

    Per subject, each (group, band) z-score is compared between rest (after calibration)
    and task with a Welch t over non-overlapping windows (every 8th at 2 s / 0.25 s); a
    subject differs when some feature has |t| > 3. The direction is printed, not assumed.
    """
    bands = ("theta", "alpha", "beta")
    differs, report = 0, []
    for subject in range(5):
        states, t_switch = _run_session(eegmat_dir, subject, baseline=30.0)
        states = states[::8]
        z = np.array([[[g.z[b] for b in bands] for g in s.groups] for s in states])  # (windows, groups, bands)
        t = np.array([s.t_end for s in states])
        rest = np.array([not s.calibrating for s in states]) & (t < t_switch)
        task = t >= t_switch + 4.0  # windows entirely in the task recording, filters settled
        assert rest.sum() > 50 and task.sum() > 20
        _, tstat = _welch_t(z, rest, task)
        differs += bool(np.abs(tstat).max() > 3.0)
        mean_delta, mean_t = _welch_t(z.mean(axis=1), rest, task)
        report.append(
            f"S{subject:02d} max|t| {np.abs(tstat).max():4.1f}; all groups: "
            + ", ".join(f"{b} {d:+.2f} (t {ts:+.1f})" for b, d, ts in zip(bands, mean_delta, mean_t, strict=True))
        )
    print("\ntask - rest, z:\n" + "\n".join(report))
    assert differs >= 3, report


def test_fmri_rate_with_slow_bands(eegmat_dir: Path) -> None:
    fmri = eegmat_dir.parents[1] / "fmri"
    runs = sorted(fmri.glob("*/rfMRI_REST1_LR.npy"))
    if not runs:
        pytest.skip(f"no HCP fMRI runs under {fmri}")
    data = np.load(runs[0]).T.astype(np.float64)  # (379 regions, 1200 volumes)
    sfreq = 1 / 0.72
    info = SignalInfo("hcp", sfreq, tuple(f"R{k:03d}" for k in range(1, data.shape[0] + 1)), stype="fMRI")
    signal = SignalSettings(window=90.0, hop=0.72, bandpass=(0.008, 0.3), notch=0.0, baseline=120.0)
    bands = BandSettings(theta=(0.035, 0.088), alpha=(0.088, 0.22), beta=(0.22, 0.56))
    chain, brain = SignalChain(info, signal), ClassicBrain(info, signal, bands)
    stamps = np.arange(data.shape[1]) * 0.72
    states = []
    for a in range(0, data.shape[1], 10):
        for w in chain.push(Chunk(data[:, a : a + 10], stamps[a : a + 10])):
            states.append(brain.process(w))
    assert len(states) == data.shape[1] - chain.buffer.n_window + 1
    assert states[0].calibrating and not states[-1].calibrating
    assert all(np.isfinite(g.power[b]) for s in states for g in s.groups for b in g.power)
    assert len({round(s.z_mean["alpha"], 3) for s in states}) > 100  # the scores move


def test_decimated_band_power_matches_full_rate_on_low_passed_signal() -> None:
    """Skipping samples after the 40 Hz low-pass changes band powers by well under 1 %."""
    from scipy.signal import butter, sosfilt

    from brainharmonic_rt.brain.bandpower import decimation_step

    fs, n = 1000.0, 2000
    rng = np.random.default_rng(1)
    x = sosfilt(butter(8, [1.0, 40.0], btype="bandpass", fs=fs, output="sos"), rng.standard_normal((4, 8 * n)))[:, -n:]
    step = decimation_step(fs, (1.0, 40.0), BANDS)
    assert step == 8
    full = BandPower(fs, n, BANDS).compute(x)
    fast = BandPower(fs, n, BANDS, step=step).compute(x)
    assert np.allclose(np.log10(fast), np.log10(full), atol=0.02)
    assert decimation_step(fs, None, BANDS) == 1
