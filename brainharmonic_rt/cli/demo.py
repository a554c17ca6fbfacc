"""`demo`: one command that plays a real EEG recording through everything (and, with --live, to a port)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BrainharmonicError
from . import audio
from .common import LazyOptions, add_config, add_lazy, add_midi_clock, positive, settings_from
from .live import live_source
from .render import cmd_render
from .surfaces import add_surface_arguments, live_surfaces, surface_overrides

if TYPE_CHECKING:
    from ..config import Settings


def add_commands(sub: Any, lazy: LazyOptions) -> None:
    p = sub.add_parser(
        "demo",
        help="Zero-configuration demo: a real EEG recording (rest, then mental arithmetic) to demo.mid/.wav/.png.",
        description="Renders one PhysioNet eegmat subject (rest then task) through the whole pipeline and writes "
        "demo.mid, demo.wav, demo.png and demo.jsonl. Data lookup: --data, $BRAINHARMONIC_DATA, "
        "../shared/data/eeg/eegmat, else download from PhysioNet (checksummed).",
    )
    p.add_argument("--data", help="Folder holding the eegmat EDF files.")
    p.add_argument("--subject", type=int, default=0, help="eegmat subject number 0-35 (default 0).")
    p.add_argument("--out", default="demo-out", help="Output folder (default ./demo-out).")
    p.add_argument("--seconds", type=positive, help="Only this many seconds of the recording.")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--live",
        action="store_true",
        help="Also replay it live through LSL to a MIDI port (virtual if none exists).",
    )
    p.add_argument("--midi-port", metavar="NAME", help="MIDI output port for the live playback.")
    p.add_argument(
        "--board",
        metavar="NAME",
        help="With --live: play a BrainFlow board live instead of the replayed recording (synthetic: no hardware).",
    )
    add_midi_clock(p)
    add_lazy(p, "brainharmonic_rt.cli.audio", "add_arguments", lazy)  # imports the synth and Link
    add_surface_arguments(p)
    add_config(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..datasets import eegmat_subject_files, find_eegmat

    root = find_eegmat(args.data, download=True)
    rest, task = eegmat_subject_files(root, args.subject, download=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(
        input=[str(rest), str(task)],
        out=str(out / "demo.mid"),
        wav=str(out / "demo.wav"),
        png=str(out / "demo.png"),
        events=str(out / "demo.jsonl"),
        seed=args.seed,
        mode=None,
        tempo=None,
        config=args.config,
        seconds=args.seconds,
        start=0.0,
        subject=None,
        tr=None,
    )
    print(f"demo: subject {args.subject:02d} of PhysioNet eegmat (rest, then mental arithmetic) from {root}")
    ns.labels = {rest.stem: "rest", task.stem: "mental arithmetic"}
    rc = cmd_render(ns)
    return rc or _demo_live(args, rest, task)


def _demo_live(args: argparse.Namespace, rest: Path, task: Path) -> int:
    """Replay the same recording as a real LSL stream into the live pipeline, playing to a MIDI port.

    Runs only with --live or when a MIDI output port already exists (a synth or DAW); in real time.
    """
    import uuid

    from ..midiports import list_ports
    from ..pipeline import LivePipeline
    from ..sinks.rtmidi_port import RtMidiSink
    from ..sources.lsl import LSLSource
    from ..sources.player import Replay

    sid = f"brainharmonic-demo-{uuid.uuid4().hex[:8]}"
    sections: dict[str, dict[str, Any]] = {
        "stream": {"source_id": sid, "timeout": 15.0},
        "music": {"seed": args.seed},
        "output": {
            "midi_port": args.midi_port,
            "virtual_port": "brainharmonic-demo",
            "midi_clock": args.midi_clock,
            "clock_in": args.clock_in,
        },
        **surface_overrides(args),
    }
    settings = settings_from(args, **audio.add_sections(args, sections))
    sinks = audio.audio_sinks(args, settings) if args.live else []  # heard through the speakers
    port = args.midi_port
    if port is None and not audio.midi_optional(settings, sinks):  # not heard: an existing synth or DAW?
        try:
            outputs = [p for ports in list_ports().get("outputs", {}).values() for p in ports]
        except BrainharmonicError:
            outputs = []
        port = outputs[0] if outputs else None
    if not args.live and port is None:
        print("demo: no MIDI output port found, so no live playback (pass --live to hear it through the speakers).")
        return 0
    settings.output.midi_port = port
    optional = audio.midi_optional(settings, sinks)
    sinks.append(
        RtMidiSink(
            port=port,
            virtual_name=None if port else "brainharmonic-demo",
            api=settings.output.midi_api,
            optional=optional,
        )
    )
    out = Path(args.out)
    heard = audio.describe(sinks)
    if getattr(args, "board", None):
        return _demo_board(args, settings, sinks, out, port, heard)

    async def main() -> LivePipeline:
        replay = Replay([rest, task], name="brainharmonic-demo", source_id=sid, seconds=args.seconds)
        async with replay:
            pipe = LivePipeline(
                settings,
                LSLSource(settings.stream),
                sinks,
                record_root=out / "sessions",
                duration=replay.duration,
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, pipe.stop, signal.Signals(sig).name)
            where = f"MIDI port {port!r}" if port else "virtual MIDI port 'brainharmonic-demo'"
            print(f"demo: live playback through LSL to {heard} and {where} for {replay.duration:.0f} s (Ctrl-C stops)")
            async with audio.live_context(pipe, settings), live_surfaces(pipe):
                await pipe.run()
            return pipe

    pipe = asyncio.run(main())
    folder = pipe.recorder.folder if pipe.recorder else "-"
    print(f"demo: live run stopped ({pipe.stats.stopped_by}); session recorded in {folder}")
    return 0


def _demo_board(
    args: argparse.Namespace, settings: Settings, sinks: list[Any], out: Path, port: str | None, heard: str
) -> int:
    """``demo --live --board NAME``: a BrainFlow board (``synthetic`` needs no hardware) played live."""
    from ..config import Settings
    from ..pipeline import LivePipeline

    settings = Settings.model_validate(settings.model_dump() | {"board": {"name": args.board}})
    pipe = LivePipeline(settings, live_source(settings), sinks, record_root=out / "sessions", duration=args.seconds)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, pipe.stop, signal.Signals(sig).name)
        where = f"MIDI port {port!r}" if port else "virtual MIDI port 'brainharmonic-demo'"
        length = f"for {args.seconds:g} s" if args.seconds else "until Ctrl-C"
        print(f"demo: BrainFlow board '{args.board}' live to {heard} and {where} {length}")
        async with audio.live_context(pipe, settings), live_surfaces(pipe):
            await pipe.run()

    asyncio.run(main())
    folder = pipe.recorder.folder if pipe.recorder else "-"
    print(f"demo: live run stopped ({pipe.stats.stopped_by}); session recorded in {folder}")
    return 0
