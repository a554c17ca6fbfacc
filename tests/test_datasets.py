"""Finding the eegmat data: lookup order, cache, checksums and the download path (never the network).

Downloads are exercised against a local mirror (a ``file://`` URL to the real eegmat
folder and its publisher's SHA256SUMS.txt), so the same code path runs offline.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from brainharmonic_rt import datasets
from brainharmonic_rt.datasets import (
    eegmat_subject_files,
    fetch,
    find_eegmat,
    parse_sums,
    sha256,
    verify,
)
from brainharmonic_rt.errors import DataError


def fake_eegmat(folder: Path, subjects: tuple[int, ...] = (0,)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s in subjects:
        for k in (1, 2):
            (folder / f"Subject{s:02d}_{k}.edf").write_bytes(b"0")
    return folder


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No env var, a cwd and a repo root without shared data beside them, an empty cache."""
    monkeypatch.delenv("BRAINHARMONIC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cwd" / "here").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd" / "here")
    monkeypatch.setattr(datasets, "_REPO_ROOT", tmp_path / "repo" / "main")
    return tmp_path


# -- lookup order ------------------------------------------------------------------------
def test_explicit_path_wins(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = fake_eegmat(isolated / "mine")
    monkeypatch.setenv("BRAINHARMONIC_DATA", str(fake_eegmat(isolated / "env")))
    assert find_eegmat(explicit) == explicit
    data_root = isolated / "data"
    nested = fake_eegmat(data_root / "eeg" / "eegmat")
    assert find_eegmat(str(data_root)) == nested


def test_explicit_path_without_eegmat_is_an_error(isolated: Path) -> None:
    (isolated / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty holds no eegmat recordings .*--data"):
        find_eegmat(isolated / "empty")


def test_environment_variable(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_eegmat(isolated / "shared" / "data" / "eeg" / "eegmat")  # beside cwd's parent: must lose
    env_root = isolated / "envdata"
    nested = fake_eegmat(env_root / "eeg" / "eegmat")
    monkeypatch.setenv("BRAINHARMONIC_DATA", str(env_root))
    assert find_eegmat() == nested
    monkeypatch.setenv("BRAINHARMONIC_DATA", str(nested))
    assert find_eegmat() == nested
    monkeypatch.setenv("BRAINHARMONIC_DATA", str(isolated / "nowhere"))
    with pytest.raises(DataError, match=r"\$BRAINHARMONIC_DATA=.*nowhere holds no eegmat"):
        find_eegmat()


def test_sibling_of_current_directory(isolated: Path) -> None:
    beside_cwd = fake_eegmat(isolated / "cwd" / "shared" / "data" / "eeg" / "eegmat")
    fake_eegmat(isolated / "repo" / "shared" / "data" / "eeg" / "eegmat")  # repo sibling comes after
    assert find_eegmat() == beside_cwd


def test_sibling_of_repository(isolated: Path) -> None:
    beside_repo = fake_eegmat(isolated / "repo" / "shared" / "data" / "eeg" / "eegmat")
    fake_eegmat(isolated / "cache" / "brainharmonic" / "eegmat")  # cache comes after
    assert find_eegmat() == beside_repo


def test_cache_is_used_without_download(isolated: Path) -> None:
    cached = fake_eegmat(isolated / "cache" / "brainharmonic" / "eegmat")
    assert find_eegmat(download=False) == cached


def test_nothing_found_says_where_and_how(isolated: Path) -> None:
    with pytest.raises(DataError) as err:
        find_eegmat(download=False)
    msg = str(err.value)
    assert str(isolated / "cwd" / "shared" / "data" / "eeg" / "eegmat") in msg
    assert str(isolated / "repo" / "shared" / "data" / "eeg" / "eegmat") in msg
    assert str(isolated / "cache" / "brainharmonic" / "eegmat") in msg
    assert "--data PATH" in msg and "BRAINHARMONIC_DATA" in msg


def test_real_data_is_found_and_matches_publisher_checksums(eegmat_dir: Path) -> None:
    assert (eegmat_dir / "Subject00_1.edf").is_file()
    verify(eegmat_dir / "Subject00_1.edf", eegmat_dir / "SHA256SUMS.txt")  # raises on mismatch


# -- checksums -----------------------------------------------------------------------------
def test_parse_sums_and_verify(tmp_path: Path) -> None:
    f = tmp_path / "Subject05_1.edf"
    f.write_bytes(b"brain waves")
    sums = tmp_path / "SHA256SUMS.txt"
    sums.write_text(f"{'0' * 64} other.edf\n{sha256(f)} *Subject05_1.edf\nnot a line\n")
    assert parse_sums(sums.read_text()) == {"other.edf": "0" * 64, "Subject05_1.edf": sha256(f)}
    verify(f, sums)
    f.write_bytes(b"brain wavez")
    with pytest.raises(DataError, match=r"Subject05_1\.edf failed its SHA-256 check .* was deleted"):
        verify(f, sums)
    assert not f.exists()
    (tmp_path / "unlisted.edf").write_bytes(b"x")
    with pytest.raises(DataError, match=r"lists no checksum for unlisted\.edf"):
        verify(tmp_path / "unlisted.edf", sums)


# -- downloading (from a local mirror) -----------------------------------------------------------
def test_subject_files_fetched_from_mirror(eegmat_dir: Path, isolated: Path) -> None:
    mirror = eegmat_dir.as_uri() + "/"
    root = fake_eegmat(isolated / "partial", subjects=(0,))  # a writable copy without subject 3
    with pytest.raises(DataError, match=r"Subject03_1.edf is not in .*partial"):
        eegmat_subject_files(root, 3)
    rest, task = eegmat_subject_files(root, 3, download=True, progress=False, base_url=mirror)
    assert (rest, task) == (root / "Subject03_1.edf", root / "Subject03_2.edf")
    assert rest.read_bytes() == (eegmat_dir / "Subject03_1.edf").read_bytes()
    assert not list(root.glob("*.part"))
    # Present now: no download needed.
    assert eegmat_subject_files(root, 3, base_url="file:///nowhere/") == (rest, task)


def test_find_eegmat_downloads_subject00_into_cache(
    eegmat_dir: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRAINHARMONIC_EEGMAT_URL", eegmat_dir.as_uri())  # a mirror, no trailing slash
    found = find_eegmat(download=True, progress=False)
    assert found == isolated / "cache" / "brainharmonic" / "eegmat"
    assert sorted(p.name for p in found.iterdir()) == ["SHA256SUMS.txt", "Subject00_1.edf", "Subject00_2.edf"]
    assert find_eegmat(download=False) == found  # and found again from the cache


def test_corrupt_download_is_deleted(eegmat_dir: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "Subject00_1.edf").write_bytes(b"not the real file")
    (mirror / "SHA256SUMS.txt").write_text((eegmat_dir / "SHA256SUMS.txt").read_text())
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=r"Subject00_1\.edf failed its SHA-256 check"):
        fetch("Subject00_1.edf", dest, base_url=mirror.as_uri() + "/", progress=False)
    assert not (dest / "Subject00_1.edf").exists() and not list(dest.glob("*.part"))


def test_unreachable_mirror(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"Could not download file:///nonexistent-bh/SHA256SUMS.txt .*--data PATH"):
        fetch("Subject00_1.edf", tmp_path, base_url="file:///nonexistent-bh/", progress=False)
    assert not list(tmp_path.iterdir())


def test_subject_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="subjects 0 to 35, not 36"):
        eegmat_subject_files(tmp_path, 36)
