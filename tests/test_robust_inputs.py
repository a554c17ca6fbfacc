"""Inputs that must be refused (or named) in one sentence: robustness issue, faults 6, 7 and 8.

Each case runs the real `brainharmonic` command in a subprocess, as a person would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import mne
import numpy as np
import pytest

BIN = [sys.executable, "-m", "brainharmonic_rt.cli"]


def bh(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BIN, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def _one_sentence(r: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines, "a refusal must say something"
    return r.stderr


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
def test_run_duration_must_be_a_positive_finite_number(value: str) -> None:
    r = bh("run", "--source-id", "x", "--no-midi", f"--duration={value}")
    assert r.returncode == 2
    assert "--duration" in _one_sentence(r)


def test_tempo_nan_is_not_a_finite_number_rather_than_out_of_range() -> None:
    r = bh("config", "--show", env={"BRAINHARMONIC_MUSIC__TEMPO": "nan"})
    assert r.returncode == 2
    err = _one_sentence(r)
    assert "finite number" in err and "300" not in err


def test_environment_variable_naming_an_unknown_section_is_refused() -> None:
    r = bh("config", "--show", env={"BRAINHARMONIC_MUSC__TEMPO": "120"})
    assert r.returncode == 2
    err = _one_sentence(r)
    assert "BRAINHARMONIC_MUSC__TEMPO" in err and "'musc'" in err and "music" in err


def test_bandpass_none_can_be_written_in_toml_and_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[signal]\nbandpass = "none"\n')
    for r in (
        bh("config", "--show", "--config", str(cfg)),
        bh("config", "--show", env={"BRAINHARMONIC_SIGNAL__BANDPASS": "none"}),
    ):
        assert r.returncode == 0, r.stderr
        assert "# bandpass = (not set)" in r.stdout


def test_a_folder_passed_to_config_is_called_a_folder(tmp_path: Path) -> None:
    r = bh("config", "--show", "--config", str(tmp_path))
    assert r.returncode == 2
    assert "is a folder, not a file" in _one_sentence(r)


def test_run_without_a_stream_selection_is_a_setting_error() -> None:
    r = bh("run", "--no-midi")
    assert r.returncode == 2
    assert "No stream selected" in _one_sentence(r)


def _save_fif(path: Path, data: np.ndarray, sfreq: float = 250.0) -> Path:
    names = ["Fp1", "Fp2", "C3", "C4", "O1", "O2", "T7", "T8"][: data.shape[0]]
    raw = mne.io.RawArray(data, mne.create_info(names, sfreq, "eeg"), verbose="error")
    raw.save(path, overwrite=True, verbose="error")
    return path


@pytest.mark.parametrize("fill", [0.0, np.nan])
def test_render_of_a_recording_without_any_signal_exits_3_with_a_sentence(tmp_path: Path, fill: float) -> None:
    """Fault 6: an all-NaN or all-zero recording rendered 227 ordinary notes with rc 0."""
    fif = _save_fif(tmp_path / "dead_raw.fif", np.full((8, 250 * 30), fill))
    r = bh("render", str(fif), "--out", str(tmp_path / "x.mid"))
    assert r.returncode == 3
    assert "no usable signal" in _one_sentence(r)
    assert not (tmp_path / "x.mid").exists() or (tmp_path / "x.mid").stat().st_size < 200


def test_truncated_edf_is_named_and_the_rest_rendered(eegmat_dir: Path, tmp_path: Path) -> None:
    edf = tmp_path / "cut.edf"
    edf.write_bytes((eegmat_dir / "Subject00_1.edf").read_bytes()[:2_000_000])
    r = bh("render", str(edf), "--out", str(tmp_path / "cut.mid"))
    assert r.returncode == 0, r.stderr
    assert "truncated: its header promises 182.0 s but the file holds 94.0 s" in r.stderr


def test_fmri_input_needs_its_tr(tmp_path: Path) -> None:
    np.save(tmp_path / "run.npy", np.random.default_rng(0).standard_normal((400, 20)).astype(np.float32))
    r = bh("render", str(tmp_path / "run.npy"), "--out", str(tmp_path / "x.mid"))
    assert r.returncode == 2
    assert "--tr" in _one_sentence(r)


def test_fmri_input_shorter_than_a_window_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "short.npy", np.random.default_rng(0).standard_normal((5, 20)).astype(np.float32))
    r = bh("render", str(tmp_path / "short.npy"), "--out", str(tmp_path / "x.mid"), "--tr", "0.72")
    assert r.returncode == 3
    assert "shorter than one" in _one_sentence(r)


def test_a_text_file_named_npy_is_not_told_to_load_unsafely(tmp_path: Path) -> None:
    (tmp_path / "table.npy").write_text("1,2,3\n4,5,6\n")
    r = bh("render", str(tmp_path / "table.npy"), "--out", str(tmp_path / "x.mid"), "--tr", "0.72")
    assert r.returncode == 3
    err = _one_sentence(r)
    assert "not a NumPy .npy file" in err and "allow_pickle" not in err


def test_nan_positions_count_volumes_and_regions_alike(tmp_path: Path) -> None:
    x = np.zeros((50, 4), np.float32)
    x[2, 1] = np.nan  # the 3rd volume, the 2nd region
    np.save(tmp_path / "holes.npy", x)
    r = bh("render", str(tmp_path / "holes.npy"), "--out", str(tmp_path / "x.mid"), "--tr", "0.72")
    assert r.returncode == 3
    assert "volume 3, region 2, both counted from 1" in _one_sentence(r)


def test_replay_says_when_it_starts_serving_and_a_normal_run_prints_no_liblsl_noise(
    eegmat_dir: Path, tmp_path: Path
) -> None:
    """Fault 8: `replay` printed nothing when it started serving, and liblsl's own log lines (INFO at every
    start, "Stream transmission broke off" at a normal stop) reached the console. The user's own liblsl
    configuration is respected, so this runs without the tests' LSLAPICFG and with an empty HOME."""
    env = {k: v for k, v in os.environ.items() if k != "LSLAPICFG"} | {"HOME": str(tmp_path)}
    name = f"bh-says-hello-{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen(
        [*BIN, "replay", str(eegmat_dir / "Subject00_2.edf"), "--name", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving" in line and name in line and "19 ch @ 500 Hz" in line
        run = subprocess.run(
            [*BIN, "run", "--stream", name, "--no-midi", "--duration", "3"],
            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert "stopped (duration 3 s reached)" in run.stdout
        assert run.stderr.strip() == "", run.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert "INFO|" not in err and "transmission" not in err, err
