"""The `brainharmonic` command: one module per command family, parsed here.

Every failure a person can act on is a :class:`BrainharmonicError`; ``main`` prints it as
one line (``brainharmonic: error: ...``) and exits with the error's code, never a traceback.
Nothing heavy is imported to build the parser: options defined next to the code that uses them
(models, boards, evaluation) are added only for the command being run, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import BrainharmonicError
from . import demo, live, models, render
from .common import LazyOptions

#: Commands whose second word picks a model (``train encoder``): the lazy options hang on that subparser.
_TWO_WORDS = ("train", "export", "eval")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The whole parser; the lazily defined options of the command named in ``argv`` are added too."""
    parser = argparse.ArgumentParser(
        prog="brainharmonic",
        description="Turn live brain signals (EEG over LSL, recordings, fMRI) into music in real time.",
    )
    parser.add_argument("--version", action="version", version=f"brainharmonic-rt {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="More log output (-vv for debug).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    lazy: LazyOptions = {}
    for family in (demo, live, render, models):
        family.add_commands(sub, lazy)
    words = [a for a in argv if not a.startswith("-")][:2]
    for p, options in lazy.items():
        prog = p.prog.split()[1:]  # "brainharmonic train encoder" → ["train", "encoder"]
        if prog == words[: len(prog)] and (prog[0] not in _TWO_WORDS or len(prog) == 2):
            for module, func in options:
                getattr(importlib.import_module(module), func)(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "func", None) is models.cmd_train_generator:
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
