"""Find (or fetch) the PhysioNet eegmat recordings the demo and the tests play.

Lookup order: an explicit path, then ``$BRAINHARMONIC_DATA``, then the
``shared/data/eeg/eegmat`` folder beside the current directory or beside the
repository, then the user cache. Only with ``download=True`` are files fetched
from PhysioNet, each checked against the publisher's SHA256SUMS.txt.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from .errors import DataError

EEGMAT_URL = "https://physionet.org/files/eegmat/1.0.0/"
SUMS_FILE = "SHA256SUMS.txt"
N_SUBJECTS = 36  # Subject00 .. Subject35 on PhysioNet
ENV_VAR = "BRAINHARMONIC_DATA"
MIRROR_VAR = "BRAINHARMONIC_EEGMAT_URL"  # a mirror of the PhysioNet folder (any urllib URL)
_REPO_ROOT = Path(__file__).resolve().parents[1]
_TIMEOUT = 30.0  # s per network read


def cache_dir() -> Path:
    """Where downloads go: ``$XDG_CACHE_HOME/brainharmonic/eegmat`` (default ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "brainharmonic" / "eegmat"


def _is_eegmat(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("Subject[0-9][0-9]_[12].edf"))


def _eegmat_in(folder: Path) -> Path | None:
    """``folder`` itself if it holds eegmat files, else ``folder/eeg/eegmat`` if that does."""
    for candidate in (folder, folder / "eeg" / "eegmat", folder / "eegmat"):
        if _is_eegmat(candidate):
            return candidate
    return None


def find_eegmat(data: Path | str | None = None, *, download: bool = False, progress: bool = True) -> Path:
    """The eegmat folder (holding SubjectNN_1.edf / SubjectNN_2.edf).

    An explicit ``data`` or ``$BRAINHARMONIC_DATA`` that does not hold eegmat is an
    error (it was asked for). With ``download=True`` and nothing found, Subject00's
    two files are fetched into :func:`cache_dir`; other subjects are fetched by
    :func:`eegmat_subject_files` when needed.
    """
    if data is not None:
        folder = Path(data).expanduser()
        found = _eegmat_in(folder)
        if found is None:
            raise DataError(
                f"{folder} holds no eegmat recordings (SubjectNN_1.edf); pass --data pointing at the "
                "eegmat folder or at a data folder containing eeg/eegmat."
            )
        return found
    env = os.environ.get(ENV_VAR)
    if env:
        found = _eegmat_in(Path(env).expanduser())
        if found is None:
            raise DataError(
                f"${ENV_VAR}={env} holds no eegmat recordings (SubjectNN_1.edf); point it at the eegmat "
                "folder or at a data folder containing eeg/eegmat, or unset it."
            )
        return found
    looked = []
    for base in (Path.cwd().parent, _REPO_ROOT.parent):
        candidate = base / "shared" / "data" / "eeg" / "eegmat"
        looked.append(str(candidate))
        if _is_eegmat(candidate):
            return candidate
    cache = cache_dir()
    looked.append(str(cache))
    if _is_eegmat(cache):
        return cache
    if download:
        eegmat_subject_files(cache, 0, download=True, progress=progress)
        return cache
    raise DataError(
        f"No eegmat EEG recordings found (looked in {', '.join(looked)}); pass --data PATH, set "
        f"{ENV_VAR}=PATH, or allow the download from PhysioNet ({EEGMAT_URL})."
    )


def eegmat_subject_files(
    root: Path | str,
    subject: int = 0,
    *,
    download: bool = False,
    progress: bool = True,
    base_url: str | None = None,
) -> tuple[Path, Path]:
    """(rest, task) recordings of one subject: ``SubjectNN_1.edf``, ``SubjectNN_2.edf``.

    Files missing from ``root`` are taken from the cache, or downloaded (into
    ``root`` if writable, else the cache; checked against SHA256SUMS.txt) when
    ``download`` is True, from ``base_url`` (default: ``$BRAINHARMONIC_EEGMAT_URL``,
    else PhysioNet).
    """
    if not (isinstance(subject, int) and 0 <= subject < N_SUBJECTS):
        raise DataError(f"eegmat has subjects 0 to {N_SUBJECTS - 1}, not {subject!r}; pick one in that range.")
    root = Path(root).expanduser()
    names = (f"Subject{subject:02d}_1.edf", f"Subject{subject:02d}_2.edf")
    out: list[Path] = []
    for fname in names:
        for folder in (root, cache_dir()):
            if (folder / fname).is_file():
                out.append(folder / fname)
                break
        else:
            if not download:
                raise DataError(
                    f"{fname} is not in {root}; pass --data pointing at a full eegmat copy "
                    "or allow the download from PhysioNet."
                )
            target = root if root == cache_dir() or os.access(root, os.W_OK) else cache_dir()
            out.append(fetch(fname, target, base_url=base_url, progress=progress))
    return out[0], out[1]


def parse_sums(text: str) -> dict[str, str]:
    """``{file name: sha256 hex}`` from a ``sha256sum`` style listing."""
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split()
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, sums_file: Path) -> None:
    """Check ``path`` against ``sums_file``; a mismatch deletes ``path`` and raises DataError."""
    sums = parse_sums(sums_file.read_text(encoding="utf-8", errors="replace"))
    expected = sums.get(path.name)
    if expected is None:
        raise DataError(f"{sums_file} lists no checksum for {path.name}; re-download {SUMS_FILE}.")
    actual = sha256(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise DataError(
            f"{path.name} failed its SHA-256 check (got {actual[:12]}…, expected {expected[:12]}…) and was "
            "deleted; download it again (a transfer was probably cut short)."
        )


def _base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get(MIRROR_VAR) or EEGMAT_URL
    return url if url.endswith("/") else url + "/"


def fetch(fname: str, folder: Path, *, base_url: str | None = None, progress: bool = True) -> Path:
    """Download ``fname`` (and SHA256SUMS.txt if absent) into ``folder`` and verify it.

    ``base_url`` defaults to ``$BRAINHARMONIC_EEGMAT_URL``, else PhysioNet.
    """
    base_url = _base_url(base_url)
    folder.mkdir(parents=True, exist_ok=True)
    sums = folder / SUMS_FILE
    if not sums.is_file():
        _download(base_url + SUMS_FILE, sums, progress=False)
    target = folder / fname
    _download(base_url + fname, target, progress=progress)
    verify(target, sums)
    return target


def _download(url: str, dest: Path, *, progress: bool) -> None:
    """Stream ``url`` to ``dest`` through a ``.part`` file (never leaves half a file behind)."""
    from tqdm import tqdm

    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as resp, part.open("wb") as fh:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress, leave=False) as bar:
                while block := resp.read(1 << 16):
                    fh.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise DataError(
            f"Could not download {url} ({reason}); check the network, or download eegmat yourself and pass --data PATH."
        ) from None
    shutil.move(part, dest)
