"""Print the configuration reference (Markdown) from the pydantic models, for the README.

.venv/bin/python scripts/config_reference.py
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from brainharmonic_rt.config import Settings


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(see below)"
        return f"`{value}`"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return f"`{value}`" if not hasattr(value, "get_secret_value") else "unset"


def main() -> None:
    for name, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        print(f"**[{name}]** — {(model.__doc__ or '').strip().splitlines()[0]}\n")
        print("| key | default | meaning |\n|---|---|---|")
        for key, sub in model.model_fields.items():
            desc = (sub.description or "").replace("|", "\\|")
            print(f"| `{key}` | {_default(sub)} | {desc} |")
        print()
    from brainharmonic_rt.config import InstrumentSettings

    print("**[music.instruments.GROUP]** — one table per channel group (e.g. `[music.instruments.frontal]`)\n")
    print("| key | default | meaning |\n|---|---|---|")
    for key, sub in InstrumentSettings.model_fields.items():
        print(f"| `{key}` | {_default(sub)} | {sub.description or ''} |")
    print()


if __name__ == "__main__":
    main()
