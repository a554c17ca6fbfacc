"""Real parts for the web page's tests: a live pipeline (LSL → JACK) with its surfaces, HTTP and websocket
clients that speak to it over loopback, and the system's headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainharmonic_rt.cli.surfaces import live_surfaces
from brainharmonic_rt.config import Settings, load_settings
from brainharmonic_rt.pipeline import LivePipeline
from brainharmonic_rt.sinks.rtmidi_port import RtMidiSink
from brainharmonic_rt.sources.lsl import LSLSource

from .lslutil import SyntheticOutlet
from .midiutil import MidiReader, note_ons

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def settings(source_id: str, port: str | None, **sections: Any) -> Settings:
    """A fast-calibrating live run; ``web`` on an ephemeral loopback port unless told otherwise."""
    web = {"enabled": True, "port": 0, **sections.pop("web", {})}
    return load_settings(
        None,
        stream={"source_id": source_id, "timeout": 10.0, "lost_after": 1.0},
        signal={"window": 1.0, "hop": 0.25, "baseline": 2.0, **sections.pop("signal", {})},
        music={"tempo": 120.0, "seed": 5, "lookahead": 0.35, **sections.pop("music", {})},
        harmony={"adaptive_tempo": False},
        output={"virtual_port": port},
        web=web,
        **sections,
    )


@dataclass
class Live:
    pipe: LivePipeline
    surfaces: dict[str, Any]
    reader: MidiReader | None
    task: asyncio.Task[Any]

    @property
    def web(self) -> Any:
        return self.surfaces["web"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web.port}"


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.05)
    return result


@contextlib.asynccontextmanager
async def live(
    s: Settings, *, synthetic: bool = True, n_channels: int = 8, midi: bool = True, notes: int = 4
) -> AsyncIterator[Live]:
    """Run ``s`` with its surfaces until the block ends: an LSL source (a synthetic outlet unless the caller
    serves the stream), a JACK port when ``midi``."""
    port = s.output.virtual_port
    with contextlib.ExitStack() as stack:
        if synthetic:
            stack.enter_context(SyntheticOutlet(s.stream.source_id or "", n_channels=n_channels, sfreq=250.0))
        sinks = [RtMidiSink(None, virtual_name=port)] if midi and port else []
        pipe = LivePipeline(s, LSLSource(s.stream), sinks)
        async with live_surfaces(pipe, announce=lambda _: None) as surfaces:
            task = asyncio.create_task(pipe.run())
            reader = await asyncio.to_thread(MidiReader, port) if sinks and port else None
            try:
                if reader is not None:
                    await until(lambda: len(note_ons(reader.snapshot())) >= notes, 30, "the first notes")
                else:
                    await until(lambda: pipe.stats.windows >= 8, 30, "the first windows")
                yield Live(pipe, surfaces, reader, task)
                assert not task.done(), f"the run must go on ({task.exception() if task.done() else ''})"
            finally:
                pipe.stop("test over")
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 15)
                if reader is not None:
                    reader.close()


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request (blocking: call through asyncio.to_thread); (status, headers, body), errors included."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


async def ahttp(method: str, url: str, body: bytes | None = None, **headers: str) -> tuple[int, dict[str, str], Any]:
    """:func:`http` off the event loop, with a JSON body decoded."""
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    status, hdrs, data = await asyncio.to_thread(http, method, url, body, h)
    try:
        return status, hdrs, json.loads(data)
    except ValueError:
        return status, hdrs, data


async def command(url: str, cmd: dict[str, Any] | bytes, **headers: str) -> tuple[int, dict[str, Any]]:
    body = cmd if isinstance(cmd, bytes) else json.dumps(cmd).encode()
    status, _, reply = await ahttp("POST", f"{url}/api/cmd", body, content_type="application/json", **headers)
    return status, reply


@contextlib.contextmanager
def chromium(user_data: Path, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """The system's headless Chromium under selenium (fresh profile, no network beyond loopback)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={user_data}",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
