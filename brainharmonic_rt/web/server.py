"""The web surface: one page and a small API, served from the service's own event loop.

``run --web [HOST:]PORT`` enters :class:`WebSurface` around the pipeline. A Starlette app on
uvicorn runs as a task in the running loop (no thread, no second loop) on a socket bound here:

* ``GET /`` the page (``static/``: plain HTML, CSS and JS shipped in the package; no CDN, no build);
* ``GET /api/state`` the full snapshot (:class:`~.state.LiveView`);
* ``WS /ws`` the same, live: a full snapshot first, then frames at ``[web] rate_hz`` (≤ 20 Hz)
  carrying the last two seconds of notes and tokens;
* ``POST /api/cmd`` one command in exactly the MQTT schema, answered with the same
  :class:`~..control.messages.Reply` / :class:`~..control.messages.ErrorReply` (both go through
  :func:`~..control.execute.execute` and the one :class:`~..control.handler.PipelineHandler`).

Safe by default: bound to 127.0.0.1; any other address needs ``[web] token`` (checked by the
settings). With a token every request must carry it (``?token=`` once, which sets an HttpOnly
cookie, or ``Authorization: Bearer``); without one, only loopback ``Host`` names are served (no DNS
rebinding). Browsers' cross-site requests are refused (``Origin`` must be the page's own or listed in
``allowed_origins``; commands must be ``application/json``). ``readonly`` refuses every command.
Commands are rate-limited per client address (token bucket).

Flow control, so a viewer never slows the music: frames are built once per tick and offered to
each client, which holds at most one waiting frame (newer replaces older) and sends it only while
fewer than ``unacked`` frames await the client's ``{"ack": seq}`` (an ack covers every frame up to ``seq``;
the page acknowledges every second frame). A client that acknowledges nothing for ``stall_timeout``
seconds, or whose socket takes that long to accept a frame, is dropped. Frames are not compressed
(permessage-deflate off): compressing each frame once per viewer was the largest cost of many viewers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Generator, Mapping
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import pydantic_core

from ..config import WebSettings, is_loopback
from ..control.execute import CommandHandler, encode_reply, execute, rejection
from ..control.messages import CommandError, ErrorReply
from ..errors import ConfigError
from .state import LiveView, _montage_positions

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.websockets import WebSocket

    from ..pipeline import LivePipeline

log = logging.getLogger(__name__)

COOKIE = "bh_token"
STOPPING = "the service is stopping"
#: Frames are never closer together than this (the page's live rate is at most 20 Hz).
MIN_FRAME_INTERVAL = 0.05
#: Largest websocket message a client may send (acknowledgements are tiny).
MAX_CLIENT_MESSAGE = 256
#: Most bytes of a command body read at all; up to this a too-big command is refused exactly as over MQTT.
MAX_BODY = 1 << 20
#: Seconds a command may take to apply before it is abandoned (as over MQTT).
HANDLER_TIMEOUT = 5.0


def static_dir() -> Path:
    """The page's files, shipped as package data."""
    return Path(str(resources.files("brainharmonic_rt.web") / "static"))


class _QuietServer:
    """Factory of a uvicorn server that leaves signal handling to the service (it owns SIGINT/SIGTERM)."""

    @staticmethod
    def make(config: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None, None, None]:
                yield

        return Server(config)


class RateLimit:
    """Token bucket per key: ``rate`` per second sustained, ``burst`` at once; a bounded number of keys."""

    def __init__(self, rate: float, burst: int, max_keys: int = 1024) -> None:
        self.rate, self.burst, self.max_keys = rate, float(burst), max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._buckets.pop(next(iter(self._buckets)))  # forget the oldest client
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


class Viewer:
    """One websocket client: one waiting frame at most, a bounded number unacknowledged."""

    def __init__(self, websocket: WebSocket, settings: WebSettings) -> None:
        self.ws = websocket
        self.settings = settings
        self.pending: tuple[int, str] | None = None
        self.in_flight: deque[int] = deque()  # seqs sent, not yet acknowledged
        self.progress = time.monotonic()  # last acknowledgement (or connection)
        self.wake = asyncio.Event()
        self.dropped = asyncio.Event()
        self.why = ""
        self.code = 1008
        self.skipped = 0  #: frames replaced before they could be sent (a slow client)
        self.sent = 0
        self.timings: deque[float] | None = None  #: where to note each send's duration (ms)

    def offer(self, seq: int, frame: str) -> None:
        if self.pending is not None:
            self.skipped += 1
        self.pending = (seq, frame)
        self.wake.set()

    def ack(self, seq: int) -> None:
        while self.in_flight and self.in_flight[0] <= seq:
            self.in_flight.popleft()
        self.progress = time.monotonic()
        self.wake.set()

    def stalled(self, now: float) -> bool:
        """Frames wait for this client and it has acknowledged nothing for ``stall_timeout`` s."""
        waiting = self.in_flight or self.pending is not None
        return bool(waiting) and now - self.progress > self.settings.stall_timeout

    def drop(self, why: str, code: int = 1008) -> None:
        """Close this client's connection (1008 policy violation: too slow or misbehaving; 1001 going away)."""
        if not self.dropped.is_set():
            self.why, self.code = why, code
            self.dropped.set()

    async def serve(self) -> None:
        """Send and receive until the client leaves or is dropped."""
        tasks = {
            asyncio.create_task(self._send(), name="web-viewer-send"),
            asyncio.create_task(self._receive(), name="web-viewer-receive"),
            asyncio.create_task(self.dropped.wait(), name="web-viewer-drop"),
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.dropped.is_set():
            with contextlib.suppress(Exception):  # a stuck socket may not even take the close frame
                await asyncio.wait_for(self.ws.close(code=self.code, reason=self.why[:120]), 0.5)

    async def _send(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending is not None and len(self.in_flight) < self.settings.unacked:
                seq, frame = self.pending
                self.pending = None
                self.in_flight.append(seq)
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(self.settings.stall_timeout):  # no task per send, unlike wait_for
                        await self.ws.send_text(frame)
                except TimeoutError:
                    self.drop(f"its connection took over {self.settings.stall_timeout:g} s to take a frame")
                    return
                self.sent += 1
                if self.timings is not None:
                    self.timings.append((time.perf_counter() - started) * 1e3)

    async def _receive(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None or len(text) > MAX_CLIENT_MESSAGE:
                self.drop("it sent something other than a short acknowledgement")
                return
            seq = _ack_of(text)
            if seq is None:
                self.drop('it sent something other than {"ack": seq}')
                return
            self.ack(seq)


class WebSurface:
    """Serves the page and the API for ``pipeline`` while entered (an async context manager).

    Parameters
    ----------
    pipeline : the running pipeline (listeners are added while entered).
    settings : ``[web]``.
    handler : the command handler to go through; pass the MQTT plane's (``LiveControl.handler``) when
        both run, so both surfaces share one owner of live edits. None: one is made here.
    config_file, overrides : what ``reload_config`` reads again (for a handler made here).
    max_payload : the largest command in bytes (``[control] max_payload``, shared with MQTT).
    """

    def __init__(
        self,
        pipeline: LivePipeline,
        settings: WebSettings,
        *,
        handler: CommandHandler | None = None,
        config_file: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        max_payload: int | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.handler = handler
        self._own_handler: Any = None
        self._config_file, self._overrides = config_file, overrides
        self.max_payload = max_payload if max_payload is not None else pipeline.settings.control.max_payload
        self.view = LiveView(pipeline, settings)
        self.viewers: set[Viewer] = set()
        self.limit = RateLimit(settings.commands_per_second, settings.command_burst)
        self._token = None if settings.token is None else settings.token.get_secret_value().encode()
        self._sock: socket.socket | None = None
        self._server: Any = None
        self._serve_task: asyncio.Task[None] | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._poke: asyncio.Event | None = None
        self.build_ms: deque[float] = deque(maxlen=1000)  #: event-loop time to build each frame (ms)
        self.send_ms: deque[float] = deque(maxlen=5000)  #: event-loop time of each frame sent to a viewer (ms)
        self.counters = {"frames": 0, "viewers_total": 0, "viewers_dropped": 0, "commands_ok": 0, "refused": 0}

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._serve_task is not None:
            raise RuntimeError("A WebSurface can be entered only once.")
        if self.handler is None:
            from ..control.handler import PipelineHandler

            own = PipelineHandler(self.pipeline, config_file=self._config_file, overrides=self._overrides)
            self.handler = self._own_handler = own
        self._sock = self._bind()
        await asyncio.to_thread(_montage_positions)  # warm the layout (MNE), never on the loop mid-run
        import uvicorn

        config = uvicorn.Config(
            self._app(),
            lifespan="off",
            log_config=None,
            access_log=False,
            ws="websockets-sansio",
            ws_per_message_deflate=False,  # compressing every frame for every viewer would cost the loop the most
            ws_max_size=4 * MAX_CLIENT_MESSAGE,
            ws_ping_interval=10.0,
            ws_ping_timeout=10.0,
            timeout_graceful_shutdown=1,
            limit_concurrency=self.settings.max_clients + 32,
            server_header=False,
            proxy_headers=False,
        )
        logging.getLogger("uvicorn").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
        self._server = _QuietServer.make(config)
        self._serve_task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="web-server")
        deadline = time.monotonic() + 10.0
        while not self._server.started:
            if self._serve_task.done() or time.monotonic() > deadline:
                await self._stop_server()
                raise ConfigError(f"The web page could not start on {self.url}; see the log above.")
            await asyncio.sleep(0.01)
        self.view.attach()
        self._poke = asyncio.Event()
        self._tick_task = asyncio.create_task(self._ticks(), name="web-ticks")
        log.info("web page on %s%s", self.url, " (read-only)" if self.settings.readonly else "")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.view.detach()
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        for v in list(self.viewers):
            v.drop(STOPPING, 1001)
        await self._stop_server()
        if self._own_handler is not None:
            await self._own_handler.aclose()

    async def _stop_server(self) -> None:
        task, self._serve_task = self._serve_task, None
        if self._server is not None:
            self._server.should_exit = True
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=3.0)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._sock is not None:
            self._sock.close()

    def _bind(self) -> socket.socket:
        host, port = self.settings.host, self.settings.port
        try:
            family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        except socket.gaierror as exc:
            raise ConfigError(f"web.host {host!r} is not an address of this machine ({exc}); use 127.0.0.1.") from None
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"The web page cannot listen on {host}:{port} ({exc.strerror or exc}); another program may use that "
                "port: pick another with --web PORT (or [web] port)."
            ) from None
        sock.setblocking(False)
        return sock

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        return int(self._sock.getsockname()[1]) if self._sock is not None else self.settings.port

    @property
    def url(self) -> str:
        host = self.settings.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}/"

    # ------------------------------------------------------------------ live frames

    async def _ticks(self) -> None:
        """Build one frame per tick and offer it to every viewer; drop the stalled ones."""
        assert self._poke is not None
        period = 1.0 / self.settings.rate_hz
        last = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), max(0.0, last + period - time.monotonic()))
            self._poke.clear()
            wait = last + MIN_FRAME_INTERVAL - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            last = time.monotonic()
            try:
                started = time.perf_counter()
                self.view.tick()
                if not self.viewers:
                    continue
                snap = self.view.snapshot(full=False, readonly=self.settings.readonly, extra=self.stats())
                frame = pydantic_core.to_json(snap, inf_nan_mode="null").decode()
                self.build_ms.append((time.perf_counter() - started) * 1e3)
            except Exception:  # a view must never take the service down
                log.exception("Building the web state failed; trying again next tick.")
                continue
            self.counters["frames"] += 1
            now = time.monotonic()
            for viewer in list(self.viewers):
                if viewer.stalled(now):
                    viewer.drop(f"it acknowledged nothing for {self.settings.stall_timeout:g} s")
                    continue
                viewer.offer(snap["seq"], frame)
                await asyncio.sleep(0)  # one viewer's send per loop turn: the pipeline gets in between

    def poke(self) -> None:
        """Send a frame soon (after a command), not at the next regular tick."""
        if self._poke is not None:
            self._poke.set()

    def stats(self, *, timings: bool = False) -> dict[str, Any]:
        """Counters; with ``timings`` also the event-loop time the page costs per frame built and per frame
        sent (p50/p99/max ms: sorting thousands of figures, so only for ``/api/state``, not for every frame)."""
        out: dict[str, Any] = {
            **self.counters,
            "viewers": len(self.viewers),
            "skipped": sum(v.skipped for v in self.viewers),
            "readonly": self.settings.readonly,
        }
        if timings:
            out |= {"build_ms": _percentiles(self.build_ms), "send_ms": _percentiles(self.send_ms)}
        return out

    # ------------------------------------------------------------------ security

    def _token_of(self, conn: Request | WebSocket) -> bytes | None:
        auth = conn.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip().encode()
        for value in (conn.query_params.get("token"), conn.cookies.get(COOKIE)):
            if value:
                return value.encode()
        return None

    def _authorised(self, conn: Request | WebSocket) -> bool:
        if self._token is None:
            return True
        given = self._token_of(conn)
        return given is not None and hmac.compare_digest(given, self._token)

    def _host_ok(self, conn: Request | WebSocket) -> bool:
        """Without a token only loopback names may be in Host (a DNS-rebinding page cannot reach us)."""
        if self._token is not None:
            return True
        host = conn.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]")
        return is_loopback(name) or name == self.settings.host

    def _origin_ok(self, conn: Request | WebSocket) -> bool:
        origin = conn.headers.get("origin")
        if origin is None:  # not a browser (scripts, tests, TouchDesigner)
            return True
        host = conn.headers.get("host", "")
        own = {f"http://{host}", f"https://{host}"}
        return origin in own or origin in self.settings.allowed_origins

    def _refusal(self, conn: Request | WebSocket) -> tuple[int, str] | None:
        if not self._host_ok(conn):
            return 400, (
                f"Host {conn.headers.get('host', '')!r} is not this machine; open the page as http://127.0.0.1:"
                f"{self.port}/ (or set [web] token to serve other names)."
            )
        if not self._authorised(conn):
            return 401, (
                "This page needs its token; open it once as /?token=YOUR_TOKEN (or send Authorization: Bearer "
                "YOUR_TOKEN); the token is [web] token or BRAINHARMONIC_WEB__TOKEN where the service runs."
            )
        if not self._origin_ok(conn):
            return 403, (
                f"Requests from {conn.headers.get('origin')!r} are not allowed; open the page from the service "
                "itself, or list that origin in [web] allowed_origins."
            )
        return None

    # ------------------------------------------------------------------ the app

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Mount, Route, WebSocketRoute
        from starlette.staticfiles import StaticFiles

        return Starlette(
            routes=[
                Route("/", self._page, methods=["GET"]),
                Route("/api/state", self._state, methods=["GET"]),
                Route("/api/cmd", self._cmd, methods=["POST"]),
                WebSocketRoute("/ws", self._ws),
                Mount("/static", app=StaticFiles(directory=static_dir()), name="static"),
            ]
        )

    async def _page(self, request: Request) -> Response:
        from starlette.responses import FileResponse, HTMLResponse, RedirectResponse

        refused = self._refusal(request)
        if refused is not None:
            status, text = refused
            return HTMLResponse(_refusal_page(text), status_code=status, headers=_HEADERS)
        if self._token is not None and request.query_params.get("token"):
            # Keep the token out of the address bar and history: a cookie carries it from now on.
            response = RedirectResponse("/", status_code=303, headers=_HEADERS)
            response.set_cookie(COOKIE, request.query_params["token"], httponly=True, samesite="strict")
            return response
        return FileResponse(static_dir() / "index.html", headers=_HEADERS)

    async def _state(self, request: Request) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            return _refused(*refused)
        self.view.tick()
        snap = self.view.snapshot(full=True, readonly=self.settings.readonly, extra=self.stats(timings=True))
        return _json(snap, 200)

    async def _cmd(self, request: Request) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            self.counters["refused"] += 1
            return _refused(*refused)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            self.counters["refused"] += 1
            return _error(415, f"must be sent as application/json (got {kind or 'no content type'!r})", "payload")
        if self.settings.readonly:
            self.counters["refused"] += 1
            return _error(403, "cannot be applied: this page is read-only (the service runs with --web-readonly)", None)
        client = request.client.host if request.client is not None else "?"
        if not self.limit.allow(client):
            self.counters["refused"] += 1
            return _error(
                429,
                f"was not applied: more than {self.settings.commands_per_second:g} commands per second from "
                f"{client}; wait a moment and send it again",
                None,
            )
        body = await _read_at_most(request.stream(), MAX_BODY + 1)
        if len(body) > MAX_BODY:
            self.counters["refused"] += 1
            return _error(413, f"is over {MAX_BODY} bytes, far over the limit of {self.max_payload} bytes", "payload")
        assert self.handler is not None
        reply = await execute(self.handler, body, max_bytes=self.max_payload, timeout=HANDLER_TIMEOUT)
        if isinstance(reply, ErrorReply):
            log.info("Rejected command from the web page: %s", reply.message)
            self.counters["refused"] += 1
            return _json_bytes(encode_reply(reply), 400)
        self.counters["commands_ok"] += 1
        self.poke()
        return _json_bytes(encode_reply(reply), 200)

    async def _ws(self, websocket: WebSocket) -> None:
        refused = self._refusal(websocket)
        if refused is None and len(self.viewers) >= self.settings.max_clients:
            refused = (503, f"already {self.settings.max_clients} viewers ([web] max_clients)")
        if refused is not None:
            log.info("Refused a websocket viewer: %s", refused[1])
            await websocket.close(code=1008)  # before accepting: the client sees HTTP 403
            return
        await websocket.accept()
        viewer = Viewer(websocket, self.settings)
        viewer.timings = self.send_ms
        self.viewers.add(viewer)
        self.counters["viewers_total"] += 1
        try:
            self.view.tick()
            snap = self.view.snapshot(full=True, readonly=self.settings.readonly, extra=self.stats())
            viewer.offer(snap["seq"], pydantic_core.to_json(snap, inf_nan_mode="null").decode())
            await viewer.serve()
        finally:
            self.viewers.discard(viewer)
            if viewer.dropped.is_set() and viewer.why != STOPPING:
                self.counters["viewers_dropped"] += 1
                log.info("Dropped a web viewer: %s.", viewer.why)


_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


def _ack_of(text: str) -> int | None:
    """The frame number of ``{"ack": N}`` (a thousand of these a second with 50 viewers: kept cheap)."""
    head, sep, tail = text.partition(":")
    if not sep or head.strip().removeprefix("{").strip() != '"ack"':
        return None
    number = tail.strip().removesuffix("}").strip()
    return int(number) if number.isdigit() else None


def _percentiles(values: deque[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)  # noqa: E731
    return {"p50": pick(0.5), "p99": pick(0.99), "max": round(ordered[-1], 4)}


def _json_bytes(data: bytes, status: int) -> Response:
    from starlette.responses import Response

    return Response(data, status_code=status, media_type="application/json", headers=_HEADERS)


def _json(obj: Any, status: int) -> Response:
    return _json_bytes(pydantic_core.to_json(obj, inf_nan_mode="null"), status)


def _error(status: int, reason: str, field: str | None = None) -> Response:
    """A refused command in the shape of an MQTT error reply."""
    return _json_bytes(encode_reply(rejection(None, None, CommandError(field, reason))), status)


def _refused(status: int, text: str) -> Response:
    """A request refused before it was read (host, token, origin), in the shape of an error reply."""
    return _json_bytes(encode_reply(ErrorReply(id=None, cmd=None, field=None, reason=text, message=text)), status)


async def _read_at_most(stream: AsyncIterator[bytes], limit: int) -> bytes:
    """The request body, but never more than ``limit`` bytes of it (a huge body is cut, then refused)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in stream:
        parts.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(parts)[:limit]


def _refusal_page(text: str) -> str:
    import html

    return (
        '<!doctype html><meta charset="utf-8"><title>brainharmonic</title>'
        '<body style="background:#0b0e14;color:#e6e6e6;font:20px system-ui;padding:2em">'
        f"<p>{html.escape(text)}</p>"
    )
