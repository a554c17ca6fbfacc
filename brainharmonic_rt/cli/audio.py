"""Command-line glue for the embedded synth and Ableton Link (``run`` and ``demo --live``).

Kept apart from ``cli.py`` so the commands need only a few lines: the options, the settings they
make, the sinks a run plays to, and the context a live run is wrapped in.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--no-audio --audio-driver --soundfont --record-audio --link --link-lead``."""
    from ..control.link import add_link_arguments
    from ..sinks.live_synth import add_audio_arguments

    add_audio_arguments(p)
    add_link_arguments(p)


def add_sections(args: argparse.Namespace, sections: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The flags as [audio], [link] and [output] soundfont settings, added to ``sections``."""
    from ..control.link import link_overrides
    from ..sinks.live_synth import audio_overrides

    sections["audio"] = audio_overrides(args)
    sections["link"] = link_overrides(args)
    sections.setdefault("output", {})["soundfont"] = getattr(args, "soundfont", None)
    return sections


def audio_sinks(args: argparse.Namespace, settings: Settings, *, recording: bool = True) -> list[Any]:
    """[the live synth], started now, when audio is on; [] otherwise.

    Refuses, before anything opens, ``--link`` with ``--follow``/``--clock-in`` and ``--record-audio``
    without a session folder (``recording``). A synth that cannot play (no SoundFont, no audio output) is
    one warning: the run goes on with MIDI only.
    """
    from ..control.link import check_link
    from ..errors import ConfigError
    from ..sinks.live_synth import live_synth

    check_link(settings)
    if settings.audio.record and not recording:
        raise ConfigError("--record-audio keeps the audio in the session folder; add --record DIR.")
    forced = getattr(args, "audio_driver", None) is not None
    synth = live_synth(
        settings.audio, settings.music, settings.output.soundfont, settings.output.midi_port, forced=forced
    )
    return [] if synth is None else [synth]


def midi_optional(settings: Settings, sinks: list[Any]) -> bool:
    """A virtual MIDI port is a bonus while the synth is heard: without a MIDI system, warn and go on."""
    return settings.output.midi_port is None and any(getattr(s, "playing", False) for s in sinks)


def describe(sinks: list[Any]) -> str:
    """Where the music is heard, for the command's first line."""
    for s in sinks:
        driver = getattr(s, "driver", None)
        if driver is not None:
            return f"the speakers ({driver}, {s.synth.soundfont.name})"
    return "no speakers"


@contextlib.asynccontextmanager
async def live_context(pipeline: Any, settings: Settings) -> AsyncIterator[Any]:
    """Around ``pipeline.run()``: the Ableton Link session when ``[link] enabled``, else nothing."""
    if not settings.link.enabled:
        yield None
        return
    from ..control.link import LinkSync

    async with LinkSync(pipeline, settings.link, bpm=settings.music.tempo) as link:
        yield link
