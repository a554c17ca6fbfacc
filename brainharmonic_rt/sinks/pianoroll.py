"""A piano-roll picture of a session: one colour per instrument, optional labelled markers.

Uses matplotlib's Agg canvas directly (no pyplot global state), so it is safe in
threads and on machines without a display.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..config import InstrumentSettings
from ..errors import SinkError
from ..events import Note
from .midifile import _check_writable


def save_pianoroll(
    notes: Iterable[Note],
    instruments: Mapping[str, InstrumentSettings],
    path_png: str | os.PathLike[str],
    *,
    markers: Sequence[tuple[float, str]] | None = None,
    title: str | None = None,
) -> Path:
    """Draw ``notes`` (time in s vs MIDI pitch) to a PNG; returns its path.

    ``markers`` : (time s, label) pairs drawn as vertical lines, e.g. ``[(0, "rest"), (60, "task")]``.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(path_png)
    _check_writable(out, "piano-roll image")
    notes = list(notes)
    fig = Figure(figsize=(12, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    names = list(instruments) + sorted({n.instrument for n in notes} - set(instruments))
    palette = colormaps["tab10"].colors  # type: ignore[attr-defined]
    for i, name in enumerate(names):
        mine = [n for n in notes if n.instrument == name]
        if not mine:
            continue
        r, g, b = palette[i % len(palette)][:3]
        inst = instruments.get(name)
        label = f"{name} ({inst.role}, program {inst.program})" if inst else name
        ax.barh(
            [n.pitch for n in mine],
            [n.duration for n in mine],
            left=[n.time for n in mine],
            height=0.8,
            color=[(r, g, b, 0.35 + 0.65 * n.velocity / 127) for n in mine],  # louder = more opaque
            label=label,
            linewidth=0,
        )
    end = max((n.time + n.duration for n in notes), default=1.0)
    for t, text in markers or ():
        ax.axvline(t, color="black", linestyle="--", linewidth=1)
        ax.text(t, 1.0, f" {text}", transform=ax.get_xaxis_transform(), va="top", ha="left", fontsize=9)
        end = max(end, t)
    ax.set_xlim(0, end * 1.01 if end > 0 else 1.0)
    if notes:
        lo, hi = min(n.pitch for n in notes), max(n.pitch for n in notes)
        ax.set_ylim(lo - 2, hi + 2)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no notes", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title or f"brainharmonic: {len(notes)} notes")
    fig.tight_layout()
    try:
        fig.savefig(str(out), format="png")
    except OSError as exc:
        raise SinkError(f"Cannot write piano-roll image {out}: {exc.strerror or exc}.") from None
    return out
