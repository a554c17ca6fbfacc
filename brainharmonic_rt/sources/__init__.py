"""Where brain signals come from: live LSL, recordings on disk, fMRI runs, and replays.

Names are imported lazily so that reading a file never loads liblsl.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from .base import Marker, Source


def _quiet_liblsl() -> None:
    """Before liblsl loads: unless the user configured liblsl, log only its fatal errors (its INFO lines at
    every start, and "Stream transmission broke off" at a normal stop, are noise to a performer; stream
    loss and return are said by brainharmonic itself)."""
    own = (Path("lsl_api.cfg"), Path.home() / "lsl_api" / "lsl_api.cfg", Path("/etc/lsl_api/lsl_api.cfg"))
    if "LSLAPICFG" not in os.environ and not any(p.is_file() for p in own):
        os.environ["LSLAPICFG"] = str(Path(__file__).with_name("lsl_api.cfg"))


_quiet_liblsl()

_LAZY = {
    "LSLSource": "lsl",
    "list_streams": "lsl",
    "format_streams": "lsl",
    "ArraySource": "files",
    "BIDSSelector": "files",
    "open_recordings": "files",
    "pick_signal": "files",
    "read_raw": "files",
    "read_fmri": "fmri",
    "Replay": "player",
    "RecordingPlayer": "player",
    "make_player": "player",
}

__all__ = ["Marker", "Source", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
