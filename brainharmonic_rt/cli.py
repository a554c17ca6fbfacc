"""The `brainharmonic` command.

Every failure a person can act on is a :class:`BrainharmonicError`; ``main`` prints it as
one line (``brainharmonic: error: ...``) and exits with the error's code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import Settings, load_settings, settings_to_toml
from .errors import BrainharmonicError, ConfigError, DataError
from .surfaces import add_surface_arguments, live_surfaces, osc_source, surface_overrides

log = logging.getLogger("brainharmonic")


# ----------------------------------------------------------------------------- settings from flags


def _settings(args: argparse.Namespace, **sections: dict[str, Any]) -> Settings:
    overrides = {k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in sections.items()}
    overrides = {k: v for k, v in overrides.items() if v}
    return load_settings(getattr(args, "config", None), **overrides)


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML settings file (see `brainharmonic config --show`).")


def _add_music(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, help="Seed for every random choice (same seed and input => same notes).")
    p.add_argument("--mode", choices=["classic", "learned"], help="Brain-to-music mode (default: classic).")
    p.add_argument("--tempo", type=float, help="Beats per minute.")


def _music_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"seed": args.seed, "mode": args.mode, "tempo": args.tempo}


def _add_midi_clock(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--midi-clock",
        action="store_true",
        default=None,
        help="Send MIDI clock (24 per beat, Start/Stop) on the MIDI port so a DAW or synth follows the tempo.",
    )
    p.add_argument("--clock-in", metavar="PORT", help="Follow the tempo of the MIDI clock on this input port.")


def _control_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``run --mqtt HOST[:PORT] --instance NAME --lead --follow NAME`` as [control] settings."""
    out: dict[str, Any] = {"instance": args.instance, "follow": args.follow, "lead": True if args.lead else None}
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":") if args.mqtt.count(":") == 1 else (args.mqtt, "", "")
        if not host or (port and not port.isdigit()):
            raise ConfigError(f"--mqtt {args.mqtt!r} is not HOST or HOST:PORT; write e.g. --mqtt 127.0.0.1:1883.")
        out |= {"enabled": True, "host": host, "port": int(port) if port else None}
    return out


# ----------------------------------------------------------------------------- inputs


def _open_input(args: argparse.Namespace) -> tuple[Any, Settings | None, list[tuple[float, str]]]:
    """An offline source for INPUT (recording files, BIDS, session folder or fMRI .npy).

    Returns (source, settings recorded with a session or None, markers).
    """
    from .recording import is_session, read_session
    from .sources.files import ArraySource, BIDSSelector, open_recordings

    paths = [Path(p) for p in args.input]
    first = paths[0]
    if len(paths) == 1 and is_session(first):
        sess = read_session(first)
        times = sess.times - sess.times[0] if sess.times.size else sess.times
        source = ArraySource(sess.info, sess.data.astype("float64"), times)
        recorded = None
        if sess.config_toml and getattr(args, "config", None) is None:
            recorded = load_settings(first / "config.toml")
        return _limit(source, args), recorded, []
    if first.suffix.lower() == ".npy":
        from .sources.fmri import read_fmri

        preset = None
        if getattr(args, "config", None) is None:
            # BOLD is slow: EEG bands do not fit a 1.4 Hz signal, so fMRI gets its own defaults.
            preset = load_settings(Path(__file__).parent / "presets" / "fmri.toml")
        return _limit(read_fmri(first, tr=args.tr), args), preset, []
    bids = None
    if getattr(args, "subject", None) is not None:
        bids = BIDSSelector(root=first, subject=args.subject, session=args.session, task=args.task, run=args.run)
    source = open_recordings(
        paths,
        bids=bids,
        seconds=args.seconds,
        start=args.start,
        channels=_channel_map(args),
        xdf_stream=getattr(args, "xdf_stream", None),
    )
    return source, None, list(getattr(source, "markers", []))


def _channel_map(args: argparse.Namespace) -> Any:
    """``--channels`` or ``[signal] channels`` (from --config / the environment) as a ChannelMap, or None."""
    from .sources.channel_map import maybe_map

    text = getattr(args, "channels", None)
    if text is None and hasattr(args, "config"):
        text = _settings(args).signal.channels
    return maybe_map(text)


def _limit(source: Any, args: argparse.Namespace) -> Any:
    from .sources.files import ArraySource

    if args.seconds is None and not args.start:
        return source
    sf = source.info.sfreq
    a = round(args.start * sf)
    b = source.data.shape[1] if args.seconds is None else a + round(args.seconds * sf)
    if a >= source.data.shape[1]:
        raise DataError(f"--start {args.start} s is past the end of the input ({source.data.shape[1] / sf:.1f} s).")
    return ArraySource(source.info, source.data[:, a:b], source.timestamps[a:b] - source.timestamps[a])


# ----------------------------------------------------------------------------- commands


def cmd_render(args: argparse.Namespace) -> int:
    from .pipeline import render
    from .sinks.midifile import MidiFileSink

    source, recorded, markers = _open_input(args)
    labels = getattr(args, "labels", {})
    markers = [(t, labels.get(name, name)) for t, name in markers]
    if recorded is not None:
        base = recorded.model_dump()
        base["music"].update({k: v for k, v in _music_overrides(args).items() if v is not None})
        settings = Settings.model_validate(base)
    else:
        settings = _settings(args, music=_music_overrides(args))
    out = Path(args.out)
    result = asyncio.run(render(settings, source, [MidiFileSink(out)]))
    written = [str(out)]
    if args.events:
        _write_events(Path(args.events), result)
        written.append(args.events)
    if args.wav:
        from .sinks.synth import render_wav

        render_wav(result.notes, result.instruments, Path(args.wav), soundfont=settings.output.soundfont)
        written.append(args.wav)
    if args.png:
        from .sinks.pianoroll import save_pianoroll

        save_pianoroll(result.notes, result.instruments, Path(args.png), markers=markers)
        written.append(args.png)
    print(_summary(result, markers))
    print("wrote " + ", ".join(written))
    return 0


def _write_events(path: Path, result: Any) -> None:
    from .recording import note_record

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
            f"  {name:<10} program {inst.program:>3} ch {inst.channel + 1:>2} {inst.role:<9} {len(mine):>5} notes"
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
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    from .datasets import eegmat_subject_files, find_eegmat

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
        tr=0.72,
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

    from .pipeline import LivePipeline
    from .sinks.rtmidi_port import RtMidiSink, list_ports
    from .sources.lsl import LSLSource
    from .sources.player import Replay

    try:
        outputs = [p for ports in list_ports().get("outputs", {}).values() for p in ports]
    except BrainharmonicError:
        outputs = []
    port = args.midi_port or (outputs[0] if outputs else None)
    if not args.live and port is None:
        print("demo: no MIDI output port found, so no live playback (pass --live to open a virtual MIDI port).")
        return 0
    sid = f"brainharmonic-demo-{uuid.uuid4().hex[:8]}"
    settings = _settings(
        args,
        stream={"source_id": sid, "timeout": 15.0},
        music={"seed": args.seed},
        output={
            "midi_port": port,
            "virtual_port": "brainharmonic-demo",
            "midi_clock": args.midi_clock,
            "clock_in": args.clock_in,
        },
        **surface_overrides(args),
    )
    sink = RtMidiSink(port=port, virtual_name=None if port else "brainharmonic-demo", api=settings.output.midi_api)
    out = Path(args.out)
    if getattr(args, "board", None):
        return _demo_board(args, settings, sink, out, port)

    async def main() -> LivePipeline:
        replay = Replay([rest, task], name="brainharmonic-demo", source_id=sid, seconds=args.seconds)
        async with replay:
            pipe = LivePipeline(
                settings,
                LSLSource(settings.stream),
                [sink],
                record_root=out / "sessions",
                duration=replay.duration,
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, pipe.stop, signal.Signals(sig).name)
            where = f"MIDI port {port!r}" if port else "virtual MIDI port 'brainharmonic-demo'"
            print(f"demo: live playback through LSL to {where} for {replay.duration:.0f} s (Ctrl-C stops)")
            async with live_surfaces(pipe):
                await pipe.run()
            return pipe

    pipe = asyncio.run(main())
    folder = pipe.recorder.folder if pipe.recorder else "-"
    print(f"demo: live run stopped ({pipe.stats.stopped_by}); session recorded in {folder}")
    return 0


def _live_source(settings: Settings) -> Any:
    """The live source the settings name: OSC in ([osc] listen), a BrainFlow board ([board] name) or an LSL
    stream, seen through ``[signal] channels`` when given."""
    from .sources.channel_map import MappedSource, maybe_map

    source: Any = osc_source(settings)
    if source is None and settings.board.name is not None:
        from .sources.brainflow import BrainFlowSource, describe

        describe(settings.board)  # a bad board name or missing parameter fails here, in one sentence
        source = BrainFlowSource(settings.board, settings.stream)
    elif source is None:
        from .sources.lsl import LSLSource

        source = LSLSource(settings.stream)
    mapping = maybe_map(settings.signal.channels)
    return source if mapping is None else MappedSource(source, mapping)


def _demo_board(args: argparse.Namespace, settings: Settings, sink: Any, out: Path, port: str | None) -> int:
    """``demo --live --board NAME``: a BrainFlow board (``synthetic`` needs no hardware) played live."""
    from .pipeline import LivePipeline

    settings = Settings.model_validate(settings.model_dump() | {"board": {"name": args.board}})
    pipe = LivePipeline(settings, _live_source(settings), [sink], record_root=out / "sessions", duration=args.seconds)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, pipe.stop, signal.Signals(sig).name)
        where = f"MIDI port {port!r}" if port else "virtual MIDI port 'brainharmonic-demo'"
        length = f"for {args.seconds:g} s" if args.seconds else "until Ctrl-C"
        print(f"demo: BrainFlow board '{args.board}' live to {where} {length}")
        async with live_surfaces(pipe):
            await pipe.run()

    asyncio.run(main())
    folder = pipe.recorder.folder if pipe.recorder else "-"
    print(f"demo: live run stopped ({pipe.stats.stopped_by}); session recorded in {folder}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import LivePipeline
    from .sinks.midifile import MidiFileSink
    from .sources.brainflow import board_overrides

    sections: dict[str, dict[str, Any]] = {
        "stream": {"name": args.stream, "type": args.type, "source_id": args.source_id, "timeout": args.timeout},
        "board": board_overrides(args),
        "signal": {"channels": args.channels},
        "music": _music_overrides(args),
        "output": {
            "midi_port": args.midi_port,
            "virtual_port": args.virtual_port,
            "midi_clock": args.midi_clock,
            "clock_in": args.clock_in,
        },
        "record": {"dir": args.record},
        "control": _control_overrides(args),
        **surface_overrides(args),
    }
    settings = _settings(args, **sections)
    selected = settings.stream.name or settings.stream.type or settings.stream.source_id
    if settings.board.name is None and settings.osc.listen is None and not selected:
        raise BrainharmonicError(
            "No stream selected; pass --stream NAME (or --type / --source-id; `brainharmonic streams` lists them), "
            "--board NAME for a BrainFlow headset (--board synthetic needs no hardware) or --osc-in PORT for a Muse "
            "through Mind Monitor."
        )
    sinks: list[Any] = []
    if not args.no_midi:
        from .sinks.rtmidi_port import RtMidiSink

        sinks.append(
            RtMidiSink(
                port=settings.output.midi_port,
                virtual_name=settings.output.virtual_port,
                api=settings.output.midi_api,
            )
        )
    if args.mid:
        sinks.append(MidiFileSink(Path(args.mid)))
    pipeline = LivePipeline(
        settings,
        _live_source(settings),
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
        async with live_surfaces(
            pipeline, config_file=config_file, overrides={k: v for k, v in overrides.items() if v}
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
    from .sources.files import BIDSSelector
    from .sources.player import Replay

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
        channels=_channel_map(args),
        xdf_stream=args.xdf_stream,
    )
    replay.serve_forever()
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from .brain.embed import embed_command

    source, recorded, _ = _open_input(args)
    settings = recorded if recorded is not None else _settings(args)
    return embed_command(args, source, settings)


def cmd_train_encoder(args: argparse.Namespace) -> int:
    from .training.cli_train import train_encoder

    return train_encoder(args)


def cmd_export_encoder(args: argparse.Namespace) -> int:
    from .training.cli_train import export_encoder

    return export_encoder(args)


def cmd_eval_encoder(args: argparse.Namespace) -> int:
    from .brain.evaluate import eval_encoder

    return eval_encoder(args)


def cmd_generate(args: argparse.Namespace) -> int:
    from .music.commands import generate

    return generate(args)


def cmd_eval_music(args: argparse.Namespace) -> int:
    from .music.commands import eval_music

    return eval_music(args)


def cmd_train_generator(args: argparse.Namespace) -> int:
    # Its options live in a module that imports torch, so they are parsed only when this command runs.
    from .training.generator_train import add_train_generator_args, train_generator

    parser = argparse.ArgumentParser(prog="brainharmonic train generator")
    add_train_generator_args(parser)
    return train_generator(parser.parse_args(args.rest))


def cmd_fit_latent_map(args: argparse.Namespace) -> int:
    from .music.commands import fit_latent_map

    return fit_latent_map(args)


def cmd_streams(args: argparse.Namespace) -> int:
    from .sources.lsl import format_streams, list_streams

    print(format_streams(list_streams(timeout=args.timeout)))
    return 0


def cmd_ports(args: argparse.Namespace) -> int:
    from .sinks.rtmidi_port import format_ports, list_ports

    print(format_ports(list_ports()))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    print(settings_to_toml(settings))
    return 0


# ----------------------------------------------------------------------------- parser


def _add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, help="Use at most this many seconds of input.")
    p.add_argument("--start", type=float, default=0.0, help="Skip this many seconds at the start of the input.")
    p.add_argument("--tr", type=float, default=0.72, help="Repetition time (s) of an fMRI .npy input.")
    _add_channel_options(p)
    bids = p.add_argument_group("BIDS selection (INPUT is a BIDS root)")
    bids.add_argument("--subject", help="BIDS subject label.")
    bids.add_argument("--session", help="BIDS session label.")
    bids.add_argument("--task", help="BIDS task label.")
    bids.add_argument("--run", help="BIDS run label.")


def _add_channel_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--channels",
        metavar='"1=Fz,2=C3,..."',
        help="Name and pick channels (1-based index = name; unnamed channels are dropped); "
        "also [signal] channels in the config.",
    )
    p.add_argument(
        "--xdf-stream", metavar="NAME", help="XDF input: the EEG stream by name or type (default: the one typed EEG)."
    )


def _add_lazy(p: argparse.ArgumentParser, module: str, func: str) -> None:
    """Options defined next to the code that uses them (imported lazily: no torch at CLI start)."""
    import importlib

    getattr(importlib.import_module(module), func)(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainharmonic",
        description="Turn live brain signals (EEG over LSL, recordings, fMRI) into music in real time.",
    )
    parser.add_argument("--version", action="version", version=f"brainharmonic-rt {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="More log output (-vv for debug).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
    p.add_argument("--seconds", type=float, help="Only this many seconds of the recording.")
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
    _add_midi_clock(p)
    add_surface_arguments(p)
    _add_config(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "run",
        help="Play a live LSL stream (a headset, or `brainharmonic replay`) or a BrainFlow board (--board) to a MIDI "
        "port, recording the session.",
    )
    p.add_argument("--stream", metavar="NAME", help="LSL stream name.")
    p.add_argument("--type", help="LSL stream type (e.g. EEG).")
    p.add_argument("--source-id", help="LSL source_id.")
    p.add_argument("--timeout", type=float, help="Seconds to wait for the stream (default 10).")
    port = p.add_mutually_exclusive_group()
    port.add_argument("--midi-port", metavar="NAME", help="Existing MIDI output port (name or unique part of it).")
    port.add_argument("--virtual-port", metavar="NAME", help="Open a virtual MIDI port with this name (default).")
    port.add_argument("--no-midi", action="store_true", help="Do not open a MIDI port.")
    p.add_argument("--record", metavar="DIR", help="Write a session folder under DIR.")
    p.add_argument("--mid", metavar="OUT.mid", help="Also write the notes to a MIDI file.")
    p.add_argument("--duration", type=float, metavar="S", help="Stop after S seconds.")
    p.add_argument(
        "--channels",
        metavar='"1=Fz,2=C3,..."',
        help="Name and pick channels (1-based index = name; unnamed channels are dropped).",
    )
    _add_lazy(p, "brainharmonic_rt.sources.brainflow", "add_board_arguments")
    _add_midi_clock(p)
    mqtt = p.add_argument_group("MQTT control (see [control] in the config)")
    mqtt.add_argument("--mqtt", metavar="HOST[:PORT]", help="Connect to this MQTT broker for commands and telemetry.")
    mqtt.add_argument("--instance", metavar="NAME", help="Instance name; topics live under brainharmonic/NAME/.")
    mqtt.add_argument("--lead", action="store_true", help="Publish this instance's beat clock for followers.")
    mqtt.add_argument("--follow", metavar="NAME", help="Follow the beat clock of instance NAME.")
    add_surface_arguments(p)
    _add_music(p)
    _add_config(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "replay", help="Serve a recording (EDF/BDF/FIF/BrainVision/EEGLAB/XDF/BIDS) as a live LSL stream."
    )
    p.add_argument("path", metavar="PATH", help="Recording file, or BIDS root with --subject/--task ...")
    p.add_argument("--name", default="brainharmonic-replay", help="LSL stream name.")
    p.add_argument("--source-id", help="LSL source_id (default: derived from the name).")
    p.add_argument("--loop", action="store_true", help="Start again at the end, forever.")
    _add_channel_options(p)
    _add_config(p)
    bids = p.add_argument_group("BIDS selection")
    bids.add_argument("--subject")
    bids.add_argument("--session")
    bids.add_argument("--task")
    bids.add_argument("--run")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "render",
        help="Render a recording, BIDS path, session folder or fMRI .npy offline (as fast as the CPU allows).",
    )
    p.add_argument("input", nargs="+", metavar="INPUT", help="Input(s); several recordings are played in order.")
    p.add_argument("--out", required=True, metavar="OUT.mid", help="MIDI file to write.")
    p.add_argument("--wav", metavar="OUT.wav", help="Also render audio with FluidSynth.")
    p.add_argument("--events", metavar="OUT.jsonl", help="Also write the notes as JSON lines.")
    p.add_argument("--png", metavar="OUT.png", help="Also draw a piano roll.")
    _add_input_options(p)
    _add_music(p)
    _add_config(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser(
        "embed", help="Write the learned encoder's latents and brain tokens per window of INPUT to an .npz file."
    )
    p.add_argument("input", nargs="+", metavar="INPUT", help="Anything `render` accepts.")
    _add_input_options(p)
    _add_config(p)
    _add_lazy(p, "brainharmonic_rt.brain.embed", "add_embed_arguments")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("train", help="Train a model (needs the [train] extra: torch).")
    train = p.add_subparsers(dest="what", metavar="MODEL", required=True)
    q = train.add_parser("encoder", help="Self-supervised EEG encoder → ONNX + model card.")
    _add_lazy(q, "brainharmonic_rt.training.cli_train", "add_train_arguments")
    _add_config(q)
    q.set_defaults(func=cmd_train_encoder)

    q = train.add_parser(
        "generator",
        help="Conditioned note generator (bar VAE + decoder) on a MIDI corpus → ONNX "
        "(`brainharmonic train generator --help` lists its options).",
        add_help=False,
    )
    q.set_defaults(func=cmd_train_generator, rest=[])
    q = train.add_parser(
        "latent-map", help="Fit the brain → music latent map (session-centred, variance-rank alignment)."
    )
    _add_lazy(q, "brainharmonic_rt.music.commands", "add_fit_latent_map_args")
    q.set_defaults(func=cmd_fit_latent_map)

    p = sub.add_parser("generate", help="Generate music from the learned generator to a MIDI file.")
    _add_lazy(p, "brainharmonic_rt.music.commands", "add_generate_args")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", help="Export a trained checkpoint to ONNX (needs the [train] extra).")
    export = p.add_subparsers(dest="what", metavar="MODEL", required=True)
    q = export.add_parser("encoder", help="Encoder checkpoint (.pt) → ONNX with metadata and a parity check.")
    _add_lazy(q, "brainharmonic_rt.training.cli_train", "add_export_arguments")
    q.set_defaults(func=cmd_export_encoder)

    p = sub.add_parser("eval", help="Print a model's metrics.")
    ev = p.add_subparsers(dest="what", metavar="MODEL", required=True)
    q = ev.add_parser(
        "encoder", help="Leave-subjects-out metrics of the encoder on eegmat (probe, codebook, distances)."
    )
    _add_lazy(q, "brainharmonic_rt.brain.evaluate", "add_eval_arguments")
    _add_config(q)
    q.set_defaults(func=cmd_eval_encoder)
    q = ev.add_parser("music", help="Music metrics (pitch-class entropy, scale/groove consistency, ...) of MIDI files.")
    _add_lazy(q, "brainharmonic_rt.music.commands", "add_eval_music_args")
    q.set_defaults(func=cmd_eval_music)

    p = sub.add_parser("streams", help="List the LSL streams visible from here.")
    p.add_argument("--timeout", type=float, default=2.0, help="Seconds to look (default 2).")
    p.set_defaults(func=cmd_streams)

    p = sub.add_parser("ports", help="List MIDI ports.")
    p.set_defaults(func=cmd_ports)

    p = sub.add_parser("config", help="Show the resolved settings as TOML.")
    p.add_argument("--show", action="store_true", help="Print the resolved settings (default action).")
    _add_config(p)
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "func", None) is cmd_train_generator:
        args.rest = [*extra, *args.rest]  # its own parser reads them (see cmd_train_generator)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose + 1, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("mne", "mne_lsl", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    try:
        return int(args.func(args) or 0)
    except BrainharmonicError as exc:
        print(f"brainharmonic: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("brainharmonic: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
