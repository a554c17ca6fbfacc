"""`run`, `replay`, `streams`, `ports`, `config`: playing live, serving recordings as streams, looking around."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from . import audio
from .common import (
    LazyOptions,
    add_channel_options,
    add_config,
    add_lazy,
    add_midi_clock,
    add_music,
    channel_map,
    control_overrides,
    music_overrides,
    positive,
    settings_from,
)
from .surfaces import add_surface_arguments, live_surfaces, osc_source, surface_overrides

if TYPE_CHECKING:
    from ..config import Settings


def add_commands(sub: Any, lazy: LazyOptions) -> None:
    p = sub.add_parser(
        "run",
        help="Play a live LSL stream (a headset, or `brainharmonic replay`) or a BrainFlow board (--board) to a MIDI "
        "port, recording the session.",
    )
    p.add_argument("--stream", metavar="NAME", help="LSL stream name.")
    p.add_argument("--type", help="LSL stream type (e.g. EEG).")
    p.add_argument("--source-id", help="LSL source_id.")
    p.add_argument("--timeout", type=positive, help="Seconds to wait for the stream (default 10).")
    port = p.add_mutually_exclusive_group()
    port.add_argument("--midi-port", metavar="NAME", help="Existing MIDI output port (name or unique part of it).")
    port.add_argument("--virtual-port", metavar="NAME", help="Open a virtual MIDI port with this name (default).")
    port.add_argument("--no-midi", action="store_true", help="Do not open a MIDI port.")
    p.add_argument("--record", metavar="DIR", help="Write a session folder under DIR.")
    p.add_argument("--mid", metavar="OUT.mid", help="Also write the notes to a MIDI file.")
    p.add_argument("--duration", type=positive, metavar="S", help="Stop after S seconds.")
    p.add_argument(
        "--channels",
        metavar='"1=Fz,2=C3,..."',
        help="Name and pick channels (1-based index = name; unnamed channels are dropped).",
    )
    add_lazy(p, "brainharmonic_rt.sources.brainflow", "add_board_arguments", lazy)
    add_midi_clock(p)
    add_lazy(p, "brainharmonic_rt.cli.audio", "add_arguments", lazy)  # imports the synth and Link
    add_surface_arguments(p)
    mqtt = p.add_argument_group("MQTT control (see [control] in the config)")
    mqtt.add_argument("--mqtt", metavar="HOST[:PORT]", help="Connect to this MQTT broker for commands and telemetry.")
    mqtt.add_argument("--instance", metavar="NAME", help="Instance name; topics live under brainharmonic/NAME/.")
    mqtt.add_argument("--lead", action="store_true", help="Publish this instance's beat clock for followers.")
    mqtt.add_argument("--follow", metavar="NAME", help="Follow the beat clock of instance NAME.")
    add_music(p)
    add_config(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "replay", help="Serve a recording (EDF/BDF/FIF/BrainVision/EEGLAB/XDF/BIDS) as a live LSL stream."
    )
    p.add_argument("path", metavar="PATH", help="Recording file, or BIDS root with --subject/--task ...")
    p.add_argument("--name", default="brainharmonic-replay", help="LSL stream name.")
    p.add_argument("--source-id", help="LSL source_id (default: derived from the name).")
    p.add_argument("--loop", action="store_true", help="Start again at the end, forever.")
    add_channel_options(p)
    add_config(p)
    bids = p.add_argument_group("BIDS selection")
    bids.add_argument("--subject")
    bids.add_argument("--session")
    bids.add_argument("--task")
    bids.add_argument("--run")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("streams", help="List the LSL streams visible from here.")
    p.add_argument("--timeout", type=positive, default=2.0, help="Seconds to look (default 2).")
    p.set_defaults(func=cmd_streams)

    p = sub.add_parser("ports", help="List MIDI ports.")
    p.set_defaults(func=cmd_ports)

    p = sub.add_parser("config", help="Show the resolved settings as TOML.")
    p.add_argument("--show", action="store_true", help="Print the resolved settings (default action).")
    add_config(p)
    p.set_defaults(func=cmd_config)


def live_source(settings: Settings) -> Any:
    """The live source the settings name: OSC in ([osc] listen), a BrainFlow board ([board] name) or an LSL
    stream, seen through ``[signal] channels`` when given."""
    from ..sources.channel_map import MappedSource, maybe_map

    source: Any = osc_source(settings)
    if source is None and settings.board.name is not None:
        from ..sources.brainflow import BrainFlowSource, describe

        describe(settings.board)  # a bad board name or missing parameter fails here, in one sentence
        source = BrainFlowSource(settings.board, settings.stream)
    elif source is None:
        from ..sources.lsl import LSLSource

        source = LSLSource(settings.stream)
    mapping = maybe_map(settings.signal.channels)
    return source if mapping is None else MappedSource(source, mapping)


def cmd_run(args: argparse.Namespace) -> int:
    from ..pipeline import LivePipeline
    from ..sinks.midifile import MidiFileSink
    from ..sources.brainflow import board_overrides

    sections: dict[str, dict[str, Any]] = {
        "stream": {"name": args.stream, "type": args.type, "source_id": args.source_id, "timeout": args.timeout},
        "board": board_overrides(args),
        "signal": {"channels": args.channels},
        "music": music_overrides(args),
        "output": {
            "midi_port": args.midi_port,
            "virtual_port": args.virtual_port,
            "midi_clock": args.midi_clock,
            "clock_in": args.clock_in,
        },
        "record": {"dir": args.record},
        "control": control_overrides(args),
        **surface_overrides(args),
    }
    settings = settings_from(args, **audio.add_sections(args, sections))
    selected = settings.stream.name or settings.stream.type or settings.stream.source_id
    if settings.board.name is None and settings.osc.listen is None and not selected:
        raise ConfigError(
            "No stream selected; pass --stream NAME (or --type / --source-id; `brainharmonic streams` lists them), "
            "--board NAME for a BrainFlow headset (--board synthetic needs no hardware) or --osc-in PORT for a Muse "
            "through Mind Monitor."
        )
    sinks: list[Any] = audio.audio_sinks(args, settings, recording=settings.record.dir is not None)
    if not args.no_midi:
        from ..sinks.rtmidi_port import RtMidiSink

        sinks.append(
            RtMidiSink(
                port=settings.output.midi_port,
                virtual_name=settings.output.virtual_port,
                api=settings.output.midi_api,
                optional=audio.midi_optional(settings, sinks),
            )
        )
    if args.mid:
        sinks.append(MidiFileSink(Path(args.mid)))
    pipeline = LivePipeline(
        settings,
        live_source(settings),
        sinks,
        record_root=settings.record.dir,
        duration=args.duration,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, pipeline.stop, signal.Signals(sig).name)
        overrides = {k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in sections.items()}
        config_file = Path(args.config) if args.config else None
        async with (
            audio.live_context(pipeline, settings),  # Ableton Link (--link)
            live_surfaces(pipeline, config_file=config_file, overrides={k: v for k, v in overrides.items() if v}),
        ):
            await pipeline.run()

    asyncio.run(main())
    snap = pipeline.snapshot()
    lat = snap.get("latency", {})
    print(
        f"stopped ({pipeline.stats.stopped_by or 'done'}): {snap['windows']} windows, {snap['notes']} notes, "
        f"{snap['stream_losses']} stream losses, {snap['reconnects']} reconnects"
        + (f", processing latency p50 {lat['p50_ms']:.2f} ms p99 {lat['p99_ms']:.2f} ms" if lat else "")
    )
    if pipeline.recorder is not None:
        print(f"session recorded in {pipeline.recorder.folder}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from ..sources.files import BIDSSelector
    from ..sources.player import Replay

    bids = None
    if args.subject is not None:
        bids = BIDSSelector(
            root=Path(args.path), subject=args.subject, session=args.session, task=args.task, run=args.run
        )
    replay = Replay(
        Path(args.path),
        name=args.name,
        source_id=args.source_id,
        loop=args.loop,
        bids=bids,
        channels=channel_map(args),
        xdf_stream=args.xdf_stream,
    )
    replay.start()
    loop_note = ", looping" if args.loop else ""
    print(
        f"replay: serving {args.path} as LSL stream '{args.name}' (source_id {replay.source_id}, "
        f"{len(replay.ch_names)} ch @ {replay.sfreq:g} Hz, {replay.duration:.1f} s per pass{loop_note}); Ctrl-C stops",
        flush=True,
    )
    replay.serve_forever()
    return 0


def cmd_streams(args: argparse.Namespace) -> int:
    from ..sources.lsl import format_streams, list_streams

    print(format_streams(list_streams(timeout=args.timeout)))
    return 0


def cmd_ports(args: argparse.Namespace) -> int:
    from ..midiports import format_ports, list_ports

    print(format_ports(list_ports()))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from ..config import load_settings, settings_to_toml

    settings = load_settings(args.config)
    print(settings_to_toml(settings))
    return 0
