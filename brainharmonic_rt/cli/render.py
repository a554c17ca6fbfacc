"""`render` and `embed`: recordings, sessions and fMRI runs offline, as fast as the CPU allows."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import BrainharmonicError
from .common import (
    LazyOptions,
    add_config,
    add_input_options,
    add_lazy,
    add_music,
    music_overrides,
    open_input,
    settings_from,
)


def add_commands(sub: Any, lazy: LazyOptions) -> None:
    p = sub.add_parser(
        "render",
        help="Render a recording, BIDS path, session folder or fMRI .npy offline (as fast as the CPU allows).",
    )
    p.add_argument("input", nargs="+", metavar="INPUT", help="Input(s); several recordings are played in order.")
    p.add_argument("--out", required=True, metavar="OUT.mid", help="MIDI file to write.")
    p.add_argument("--wav", metavar="OUT.wav", help="Also render audio with FluidSynth.")
    p.add_argument("--events", metavar="OUT.jsonl", help="Also write the notes as JSON lines.")
    p.add_argument("--png", metavar="OUT.png", help="Also draw a piano roll.")
    add_input_options(p)
    add_music(p)
    add_config(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser(
        "embed", help="Write the learned encoder's latents and brain tokens per window of INPUT to an .npz file."
    )
    p.add_argument("input", nargs="+", metavar="INPUT", help="Anything `render` accepts.")
    add_input_options(p)
    add_config(p)
    add_lazy(p, "brainharmonic_rt.evaluation.embed", "add_embed_arguments", lazy)
    p.set_defaults(func=cmd_embed)


def cmd_render(args: argparse.Namespace) -> int:
    from ..pipeline import render
    from ..sinks.midifile import MidiFileSink

    source, recorded, markers = open_input(args)
    labels = getattr(args, "labels", {})
    markers = [(t, labels.get(name, name)) for t, name in markers]
    if recorded is not None:
        base = recorded.model_dump()
        base["music"].update({k: v for k, v in music_overrides(args).items() if v is not None})
        from ..config import Settings

        settings = Settings.model_validate(base)
    else:
        settings = settings_from(args, music=music_overrides(args))
    out = Path(args.out)
    existed = out.exists()
    try:
        result = asyncio.run(render(settings, source, [MidiFileSink(out)]))
    except BrainharmonicError:
        if not existed:  # a refused input leaves no half-made output behind
            out.unlink(missing_ok=True)
        raise
    written = [str(out)]
    if args.events:
        _write_events(Path(args.events), result)
        written.append(args.events)
    if args.wav:
        from ..sinks.synth import render_wav

        render_wav(result.notes, result.instruments, Path(args.wav), soundfont=settings.output.soundfont)
        written.append(args.wav)
    if args.png:
        from ..sinks.pianoroll import save_pianoroll

        save_pianoroll(result.notes, result.instruments, Path(args.png), markers=markers)
        written.append(args.png)
    print(_summary(result, markers))
    print("wrote " + ", ".join(written))
    return 0


def _write_events(path: Path, result: Any) -> None:
    from ..recording import note_record

    with path.open("w") as fh:
        for n in result.notes:
            fh.write(json.dumps({"type": "note", **note_record(n)}) + "\n")


def _summary(result: Any, markers: Sequence[tuple[float, str]]) -> str:
    """A few lines a person can read: what played, and how the music differed between segments."""
    import numpy as np

    lines = [
        f"{result.info.name}: {result.seconds:.1f} s of {result.info.n_channels} channels @ {result.info.sfreq:g} Hz, "
        f"{len(result.states)} windows, {len(result.notes)} notes"
    ]
    for name, inst in result.instruments.items():
        mine = [n for n in result.notes if n.instrument == name]
        lines.append(
            f"  {name:<10} program {inst.program:>3} channel {inst.channel:>2} {inst.role:<9} {len(mine):>5} notes"
        )
    bounds = [*list(markers), (float("inf"), "")]
    for (t0, label), (t1, _) in itertools.pairwise(bounds):
        seg = [n for n in result.notes if t0 <= n.time < t1]
        span = min(t1, result.seconds) - t0
        if seg and span > 0:
            bars = [b for b in getattr(result, "bars", []) if t0 <= b.start < t1]
            plan = ""
            if bars:
                share = {lvl: sum(b.level == lvl for b in bars) / len(bars) for lvl in (-1, 0, 1)}
                plan = (
                    f", tempo {np.median([b.tempo for b in bars]):5.1f} BPM, bars calm/neutral/aroused "
                    f"{share[-1]:.0%}/{share[0]:.0%}/{share[1]:.0%}"
                )
            lines.append(
                f"  [{label}] {len(seg) / span:5.2f} notes/s, mean velocity {np.mean([n.velocity for n in seg]):5.1f}, "
                f"mean pitch {np.mean([n.pitch for n in seg]):5.1f}{plan}"
            )
    stats = getattr(result, "composer_stats", None)
    if stats and result.notes:
        from ..evaluation.music_metrics import from_notes
        from ..evaluation.voice_leading import guard_summary

        lines += ["  " + line for line in guard_summary(from_notes(result.notes, 60.0), stats)]
    return "\n".join(lines)


def cmd_embed(args: argparse.Namespace) -> int:
    from ..evaluation.embed import embed_command

    source, recorded, _ = open_input(args)
    settings = recorded if recorded is not None else settings_from(args)
    return embed_command(args, source, settings)
