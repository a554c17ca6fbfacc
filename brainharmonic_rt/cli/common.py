"""What every command family shares: settings from flags, argument types, input opening.

Nothing heavy is imported here (the parser must build in a blink): readers, models and MNE come
in inside the functions that need them.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, DataError

if TYPE_CHECKING:
    from ..config import Settings

#: (module, function) of options defined next to the code that uses them, by the parser they belong to:
#: imported only when that command is the one being run (see ``cli.build_parser``).
LazyOptions = dict[argparse.ArgumentParser, list[tuple[str, str]]]


def settings_from(args: argparse.Namespace, **sections: dict[str, Any]) -> Settings:
    overrides = {k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in sections.items()}
    overrides = {k: v for k, v in overrides.items() if v}
    from ..config import load_settings

    return load_settings(getattr(args, "config", None), **overrides)


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML settings file (see `brainharmonic config --show`).")


def add_music(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, help="Seed for every random choice (same seed and input => same notes).")
    p.add_argument("--mode", choices=["classic", "learned"], help="Brain-to-music mode (default: classic).")
    p.add_argument("--tempo", type=positive, help="Beats per minute.")


def music_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"seed": args.seed, "mode": args.mode, "tempo": args.tempo}


def add_midi_clock(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--midi-clock",
        action="store_true",
        default=None,
        help="Send MIDI clock (24 per beat, Start/Stop) on the MIDI port so a DAW or synth follows the tempo.",
    )
    p.add_argument("--clock-in", metavar="PORT", help="Follow the tempo of the MIDI clock on this input port.")


def control_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``run --mqtt HOST[:PORT] --instance NAME --lead --follow NAME`` as [control] settings."""
    out: dict[str, Any] = {"instance": args.instance, "follow": args.follow, "lead": True if args.lead else None}
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":") if args.mqtt.count(":") == 1 else (args.mqtt, "", "")
        if not host or (port and not port.isdigit()):
            raise ConfigError(f"--mqtt {args.mqtt!r} is not HOST or HOST:PORT; write e.g. --mqtt 127.0.0.1:1883.")
        out |= {"enabled": True, "host": host, "port": int(port) if port else None}
    return out


def open_input(args: argparse.Namespace) -> tuple[Any, Settings | None, list[tuple[float, str]]]:
    """An offline source for INPUT (recording files, BIDS, session folder or fMRI).

    Returns (source, settings that come with the input (a session's, or fMRI's) or None, markers).
    """
    from ..recording import is_session, read_session
    from ..sources.files import ArraySource, BIDSSelector, open_recordings

    paths = [Path(p) for p in args.input]
    first = paths[0]
    if len(paths) == 1 and is_session(first):
        sess = read_session(first)
        times = sess.times - sess.times[0] if sess.times.size else sess.times
        source = ArraySource(sess.info, sess.data.astype("float64"), times)
        recorded = None
        if sess.config_toml and getattr(args, "config", None) is None:
            from ..config import load_settings

            recorded = load_settings(first / "config.toml")
        return limit(source, args), recorded, []
    from ..sources.fmri import fmri_kind
    from . import fmri

    if fmri_kind(first) is not None:
        return fmri.open_fmri_input(args, first, limit)
    fmri.check_not_fmri(args)
    bids = None
    if getattr(args, "subject", None) is not None:
        bids = BIDSSelector(root=first, subject=args.subject, session=args.session, task=args.task, run=args.run)
    source = open_recordings(
        paths,
        bids=bids,
        seconds=args.seconds,
        start=args.start,
        channels=channel_map(args),
        xdf_stream=getattr(args, "xdf_stream", None),
    )
    return source, None, list(getattr(source, "markers", []))


def channel_map(args: argparse.Namespace) -> Any:
    """``--channels`` or ``[signal] channels`` (from --config / the environment) as a ChannelMap, or None."""
    from ..sources.channel_map import maybe_map

    text = getattr(args, "channels", None)
    if text is None and hasattr(args, "config"):
        text = settings_from(args).signal.channels
    return maybe_map(text)


def limit(source: Any, args: argparse.Namespace) -> Any:
    from ..sources.files import ArraySource

    if args.seconds is None and not args.start:
        return source
    sf = source.info.sfreq
    a = round(args.start * sf)
    b = source.data.shape[1] if args.seconds is None else a + round(args.seconds * sf)
    if a >= source.data.shape[1]:
        raise DataError(f"--start {args.start} s is past the end of the input ({source.data.shape[1] / sf:.1f} s).")
    return ArraySource(source.info, source.data[:, a:b], source.timestamps[a:b] - source.timestamps[a])


def finite_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive(text: str) -> float:
    """argparse type: a finite number of seconds (or BPM) above 0."""
    value = finite_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0 (got {text})")
    return value


def not_negative(text: str) -> float:
    """argparse type: a finite number of seconds, 0 or more."""
    value = finite_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {text})")
    return value


def add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=positive, help="Use at most this many seconds of input.")
    p.add_argument("--start", type=not_negative, default=0.0, help="Skip this many seconds at the start of the input.")
    from .fmri import add_fmri_input_arguments

    add_fmri_input_arguments(p)
    add_channel_options(p)
    bids = p.add_argument_group("BIDS selection (INPUT is a BIDS root)")
    bids.add_argument("--subject", help="BIDS subject label.")
    bids.add_argument("--session", help="BIDS session label.")
    bids.add_argument("--task", help="BIDS task label.")
    bids.add_argument("--run", help="BIDS run label.")


def add_channel_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--channels",
        metavar='"1=Fz,2=C3,..."',
        help="Name and pick channels (1-based index = name; unnamed channels are dropped); "
        "also [signal] channels in the config.",
    )
    p.add_argument(
        "--xdf-stream", metavar="NAME", help="XDF input: the EEG stream by name or type (default: the one typed EEG)."
    )


def add_lazy(p: argparse.ArgumentParser, module: str, func: str, lazy: LazyOptions) -> None:
    """Options defined next to the code that uses them: added only when ``p``'s command runs."""
    lazy.setdefault(p, []).append((module, func))
