"""Everything that watches or steers a live run, entered together around ``pipeline.run()``.

The MQTT plane (``[control]``), the web page (``[web]``) and OSC out (``[osc] targets``) are
independent surfaces over one pipeline; when MQTT and the page both run they share one command
handler (:class:`~.control.handler.PipelineHandler`), the one owner of live edits. OSC in
(``[osc] listen``) is a source, chosen by :func:`osc_source`.

The command-line options live here too (:func:`add_surface_arguments`, :func:`surface_overrides`),
so a subcommand gains them with two lines.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import Settings
    from ..pipeline import LivePipeline
    from ..sources.osc import OscSource


def add_surface_arguments(p: argparse.ArgumentParser) -> None:
    """``--web [HOST:]PORT``, ``--web-readonly``, ``--osc HOST:PORT`` (repeatable), ``--osc-in [HOST:]PORT``."""
    g = p.add_argument_group("web page and OSC (see [web] and [osc] in the config)")
    g.add_argument(
        "--web",
        metavar="[HOST:]PORT",
        help="Serve the live page and its API here (HOST defaults to 127.0.0.1; any other address needs "
        "BRAINHARMONIC_WEB__TOKEN).",
    )
    g.add_argument("--web-readonly", action="store_true", default=None, help="The page shows, without controls.")
    g.add_argument(
        "--osc",
        metavar="HOST:PORT",
        action="append",
        help="Send brain, notes and beats as OSC to this UDP address (repeat for several).",
    )
    g.add_argument(
        "--osc-in",
        metavar="[HOST:]PORT",
        help="Read EEG from Muse / Mind Monitor /muse/eeg OSC messages on this UDP port (instead of LSL).",
    )


def surface_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The [web] and [osc] command-line layer of ``args`` (None = not given)."""
    web: dict[str, Any] = {"readonly": getattr(args, "web_readonly", None)}
    text = getattr(args, "web", None)
    if text:
        try:
            from ..config import split_host_port

            host, port = split_host_port(text, default_host="127.0.0.1")
        except ValueError as exc:
            raise ConfigError(f"--web {exc}.") from None
        web |= {"enabled": True, "host": host, "port": port}
    osc: dict[str, Any] = {"targets": getattr(args, "osc", None), "listen": getattr(args, "osc_in", None)}
    return {"web": web, "osc": osc}


def osc_source(settings: Settings) -> OscSource | None:
    """The OSC-in source when ``[osc] listen`` is set, else None."""
    if settings.osc.listen is None:
        return None
    from ..sources.osc import OscSource

    return OscSource(settings.osc, settings.stream)


@contextlib.asynccontextmanager
async def live_surfaces(
    pipeline: LivePipeline,
    *,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    announce: Any = None,
) -> AsyncIterator[dict[str, Any]]:
    """Run the surfaces the settings ask for around the body (``async with live_surfaces(p): await p.run()``).

    Yields the entered surfaces by name (``mqtt``, ``web``, ``osc``). ``announce`` prints the page's address.
    """
    settings = pipeline.settings
    entered: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        if settings.control.enabled:
            from ..control.live import LiveControl

            entered["mqtt"] = await stack.enter_async_context(
                LiveControl(pipeline, config_file=config_file, overrides=overrides)
            )
        if settings.web.enabled:
            from ..web.server import WebSurface

            mqtt = entered.get("mqtt")
            web = WebSurface(
                pipeline,
                settings.web,
                handler=mqtt.handler if mqtt is not None else None,
                config_file=config_file,
                overrides=overrides,
            )
            entered["web"] = await stack.enter_async_context(web)
            line = f"web page: {web.url}{' (read-only)' if settings.web.readonly else ''}"
            (announce or _say)(line)
        if settings.osc.targets:
            from ..control.osc import OscOut

            entered["osc"] = await stack.enter_async_context(OscOut(pipeline, settings.osc))
        yield entered


def _say(line: str) -> None:
    print(line, flush=True)  # a supervisor or a test reads it while the service runs
