"""Model cards (Markdown) whose sections are written by the commands that measured them.

A section lives between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; ``train encoder``
writes "training", ``eval encoder --card`` writes "metrics". Rewriting a section leaves the
rest of the card (hand-written notes included) untouched.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(path: Path | str, name: str, text: str, *, title: str = "# Model card") -> None:
    """Replace (or append) section ``name`` of the card at ``path`` with ``text``."""
    path = Path(path)
    start, end = _markers(name)
    block = f"{start}\n{text.rstrip()}\n{end}"
    try:
        old = path.read_text(encoding="utf-8") if path.exists() else f"{title}\n"
    except OSError as exc:
        raise DataError(f"Could not read model card {path} ({exc}); check the path and permissions.") from None
    if start in old and end in old:
        head, rest = old.split(start, 1)
        _, tail = rest.split(end, 1)
        new = head + block + tail
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"Could not write model card {path} ({exc}); check the path and permissions.") from None


def read_section(path: Path | str, name: str) -> str | None:
    """Text of section ``name`` of the card at ``path``, or None when absent."""
    path = Path(path)
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    start, end = _markers(name)
    if start not in text or end not in text:
        return None
    return text.split(start, 1)[1].split(end, 1)[0].strip()
