"""The README's module table names every module of the package, in the row of its room."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rows() -> dict[str, str]:
    """First cell (e.g. ``sources/`` or ``config.py``) → the row, from the table under "## Architecture"."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Architecture") :]
    section = section[: section.index("\n## ", 5)]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `([^`]+)`", line)
        if m:
            rows[m.group(1)] = line
    return rows


def test_every_module_is_in_the_readme_table() -> None:
    rows = _rows()
    missing = []
    for path in sorted((ROOT / "brainharmonic_rt").rglob("*.py")):
        rel = path.relative_to(ROOT / "brainharmonic_rt")
        if rel.name in ("__init__.py", "__main__.py"):
            continue
        if len(rel.parts) == 1:
            ok = any(key.split()[0] == rel.name for key in rows)
        else:
            row = rows.get(f"{rel.parts[0]}/", "")
            ok = (
                f"`{rel.name}`" in row
                or (rel.name.startswith("generator_") and "`generator_*.py`" in row)
                or (rel.name.startswith("ensemble_") and "`ensemble_*.py`" in row)
            )
        if not ok:
            missing.append(str(rel))
    assert not missing, f"modules the README's table does not name: {missing}"
