"""The MQTT control plane: commands in, telemetry out, never in the way of the music.

One background task owns the broker connection (aiomqtt 2.x). While connected it runs a
receiver (commands → handler → reply or error, one at a time, in arrival order) and a sender
(telemetry queues → broker). When the broker is absent or lost it retries with exponential
backoff and jitter; meanwhile :meth:`ControlPlane.publish` keeps accepting telemetry into
bounded per-kind queues (oldest dropped, the latest always kept), so nothing the pipeline does
ever waits on the network.

Topics (``<root>`` = ``brainharmonic/<instance>``):

=============================  =====  ====  ======  ============================================
topic                          dir    QoS   retain  payload (``control.messages``)
=============================  =====  ====  ======  ============================================
``<root>/cmd``                 in     1     no      one ``Command`` (JSON object, ``cmd`` picks)
``<root>/reply``               out    1     no      ``Reply`` (ok, id, cmd, result)
``<root>/error``               out    1     no      ``ErrorReply`` (id, cmd, field, reason)
``<root>/status``              out    1     yes     ``Status``; last will ``offline``
``<root>/telemetry/brain``     out    0     no      ``BrainTelemetry``
``<root>/telemetry/music``     out    0     no      ``MusicTelemetry``
``<root>/telemetry/health``    out    0     no      ``HealthTelemetry``
``<root>/sync/beat``           out    0     no      ``SyncBeat`` (leaders and followers)
``brainharmonic/+/sync/beat``  in     0     no      ``SyncBeat`` of the others (followers only)
=============================  =====  ====  ======  ============================================

The ``sync/beat`` payload goes through the same bounded, rate-limited path as telemetry (kind
``"sync"``); extra subscriptions (``subscriptions=``) deliver raw payloads to a callback.

Retained commands are refused, always: the connection speaks MQTT 5 and subscribes to ``cmd`` with
*retain as published*, so a command stored on the broker carries its retain flag whether it was
published before the service connected or while it was online (MQTT 3.1.1 clears the flag on live
delivery, which let a retained command through). The refusal says how to clear the stored copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiomqtt
import pydantic_core
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import BaseModel

from .. import __version__
from ..config import ControlSettings
from ..errors import ConfigError
from .execute import CommandHandler, encode, encode_reply, execute, rejection
from .messages import CommandError, ErrorReply, Status, peek_id

log = logging.getLogger(__name__)

TOPIC_ROOT = "brainharmonic"
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: Most distinct telemetry kinds; bounds the memory held while offline to this × offline_buffer.
MAX_KINDS = 16
#: Most commands waiting in aiomqtt's incoming queue; a flood beyond this is discarded by aiomqtt.
MAX_QUEUED_COMMANDS = 256
#: The publish() kind whose messages go to ``<root>/sync/beat`` instead of ``<root>/telemetry/<kind>``.
SYNC_KIND = "sync"
#: Called with (topic, payload, time.monotonic() at arrival) for a message on an extra subscription.
MessageCallback = Callable[[str, bytes, float], None]


@dataclass(frozen=True)
class Topics:
    """The topic names of one instance."""

    root: str

    @classmethod
    def for_instance(cls, instance: str) -> Topics:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", instance):
            raise ConfigError(
                f"Control instance name {instance!r} is not usable in MQTT topics; "
                "use 1-64 letters, digits, '_' or '-'."
            )
        return cls(f"{TOPIC_ROOT}/{instance}")

    @property
    def cmd(self) -> str:
        return f"{self.root}/cmd"

    @property
    def reply(self) -> str:
        return f"{self.root}/reply"

    @property
    def error(self) -> str:
        return f"{self.root}/error"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    def telemetry(self, kind: str) -> str:
        return f"{self.root}/telemetry/{kind}"

    @property
    def sync_beat(self) -> str:
        return f"{self.root}/sync/beat"

    @staticmethod
    def all_sync_beats() -> str:
        """Filter matching every instance's beat clock."""
        return f"{TOPIC_ROOT}/+/sync/beat"

    def publish_topic(self, kind: str) -> str:
        """Where ``ControlPlane.publish(kind, ...)`` sends: sync beats or telemetry."""
        return self.sync_beat if kind == SYNC_KIND else self.telemetry(kind)


@dataclass
class _Counters:
    connects: int = 0
    connect_failures: int = 0
    published: int = 0
    dropped: int = 0
    coalesced: int = 0
    unencodable: int = 0
    commands_ok: int = 0
    commands_rejected: int = 0
    last_error: str | None = None
    connected_since: float | None = None
    queued: dict[str, deque[tuple[int, bytes]]] = field(default_factory=dict)


class ControlPlane:
    """MQTT commands in, telemetry out; an async context manager that never blocks the music.

    Entering starts a background task and returns at once, connected or not; use
    :meth:`wait_connected` where a connection matters. Leaving publishes a retained
    ``offline`` status (when connected) and disconnects cleanly.
    """

    def __init__(
        self,
        settings: ControlSettings,
        handler: CommandHandler,
        *,
        handler_timeout: float = 5.0,
        subscriptions: Mapping[str, MessageCallback] | None = None,
    ) -> None:
        self.settings = settings
        self._subscriptions = dict(subscriptions or {})
        self.topics = Topics.for_instance(settings.instance)
        self._handler = handler
        self._handler_timeout = handler_timeout
        self._tls = _tls_params(settings)
        self._interval = 1.0 / settings.telemetry_rate_hz
        self._n = _Counters()
        self._pending: dict[str, bytes] = {}  # latest payload per kind not yet admitted (rate limit)
        self._next_ok: dict[str, float] = {}  # monotonic time from which a kind may be admitted
        self._seq = 0
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._online: asyncio.Event | None = None
        self._warned_kind: str | None = None
        self._last_logged: str | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._task is not None:
            raise RuntimeError("ControlPlane is already running; enter it once.")
        self._wake, self._stop, self._online = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"mqtt-control-{self.settings.instance}"
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        if task is None or self._stop is None:
            return
        self._stop.set()
        done, _ = await asyncio.wait({task}, timeout=3.0)
        if not done:  # stuck in a connect or a graceful disconnect: give up on politeness
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif not task.cancelled() and task.exception() is not None:
            log.error("MQTT control plane ended with an error: %s", task.exception())

    async def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a broker connection; True if connected."""
        if self._online is None:
            raise RuntimeError("Enter the ControlPlane (async with) before waiting for it.")
        try:
            await asyncio.wait_for(self._online.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def connected(self) -> bool:
        return self._online is not None and self._online.is_set()

    def stats(self) -> dict[str, Any]:
        """Counters for health telemetry and tests (a fresh dict each call)."""
        n = self._n
        return {
            "connected": self.connected,
            "connects": n.connects,
            "reconnects": max(0, n.connects - 1),
            "connect_failures": n.connect_failures,
            "last_error": n.last_error,
            "published": n.published,
            "buffered": sum(len(q) for q in n.queued.values()),
            "dropped": n.dropped,
            "coalesced": n.coalesced,
            "unencodable": n.unencodable,
            "commands_ok": n.commands_ok,
            "commands_rejected": n.commands_rejected,
        }

    # ------------------------------------------------------------------ telemetry in

    def publish(self, kind: str, payload: BaseModel | Mapping[str, Any]) -> None:
        """Queue telemetry for ``<root>/telemetry/<kind>``; returns at once, never raises on network state.

        At most ``telemetry_rate_hz`` messages per second per kind go out: a payload arriving
        sooner replaces the one waiting (counted as coalesced), so the latest state always wins.
        While offline each kind keeps its ``offline_buffer`` newest messages (older ones are
        dropped and counted). Call from the event loop thread. Raises ``ValueError`` only for a
        kind that is not a short lowercase name or is one kind too many (a programming error).
        """
        if kind not in self._next_ok:
            if not _KIND.fullmatch(kind):
                raise ValueError(f"Telemetry kind {kind!r} must be a short lowercase name like 'brain'.")
            if len(self._next_ok) >= MAX_KINDS:
                raise ValueError(f"Telemetry kind {kind!r} is one too many; at most {MAX_KINDS} kinds.")
            self._next_ok[kind] = 0.0
            self._n.queued[kind] = deque(maxlen=self.settings.offline_buffer)
        try:
            data = encode(payload)
        except (TypeError, ValueError, pydantic_core.PydanticSerializationError) as exc:
            self._n.unencodable += 1
            if self._warned_kind != kind:
                self._warned_kind = kind
                log.warning("Telemetry %r could not be encoded as JSON and was dropped: %s", kind, exc)
            return
        if kind in self._pending:
            self._n.coalesced += 1
        self._pending[kind] = data
        self._admit(time.monotonic())
        if self._wake is not None:
            self._wake.set()

    def _admit(self, now: float) -> float | None:
        """Move pending payloads whose rate slot has come into the queues; return the next slot time."""
        soonest: float | None = None
        for kind in list(self._pending):
            due = self._next_ok[kind]
            if now >= due:
                q = self._n.queued[kind]
                if len(q) == q.maxlen:
                    self._n.dropped += 1
                self._seq += 1
                q.append((self._seq, self._pending.pop(kind)))
                self._next_ok[kind] = now + self._interval
            elif soonest is None or due < soonest:
                soonest = due
        return soonest

    def _pop_oldest(self) -> tuple[str, int, bytes] | None:
        best: tuple[str, int, bytes] | None = None
        for kind, q in self._n.queued.items():
            if q and (best is None or q[0][0] < best[1]):
                best = (kind, *q[0])
        if best is not None:
            self._n.queued[best[0]].popleft()
        return best

    # ------------------------------------------------------------------ connection

    async def _supervise(self) -> None:
        assert self._stop is not None and self._online is not None
        delay = self.settings.reconnect_min
        while not self._stop.is_set():
            was_connected = self._n.connects
            try:
                await self._session()
                return
            except aiomqtt.MqttError as exc:
                self._note_failure(exc)
            except Exception as exc:  # a bug here must not end control for good: log and retry
                log.exception("MQTT control plane failed unexpectedly; retrying.")
                self._n.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self._online.clear()
                self._n.connected_since = None
            if self._n.connects != was_connected:
                delay = self.settings.reconnect_min  # the link was up: come back quickly
            pause = delay * random.uniform(0.8, 1.2)
            try:
                await asyncio.wait_for(self._stop.wait(), pause)
                return
            except TimeoutError:
                delay = min(delay * 2, self.settings.reconnect_max)

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        offline = Status(state="offline", instance=s.instance, version=__version__, reason="lost")
        return aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password.get_secret_value() if s.password is not None else None,
            identifier=f"{TOPIC_ROOT}-{s.instance}",
            protocol=aiomqtt.ProtocolVersion.V5,  # for retain-as-published on the command topic
            will=aiomqtt.Will(self.topics.status, offline.model_dump_json().encode(), qos=1, retain=True),
            keepalive=s.keepalive,
            timeout=5.0,
            tls_params=self._tls,
            max_queued_incoming_messages=MAX_QUEUED_COMMANDS,
            max_queued_outgoing_messages=MAX_QUEUED_COMMANDS,
            # A reply right after a PUBACK must not wait for a delayed TCP ACK (Nagle: +40 ms).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _session(self) -> None:
        """One connection: subscribe, announce, serve until the link drops (raise) or stop (return)."""
        assert self._stop is not None and self._online is not None
        s = self.settings
        async with self._client() as client:
            self._n.connects += 1
            self._n.connected_since = time.monotonic()
            await client.subscribe(self.topics.cmd, options=SubscribeOptions(qos=1, retainAsPublished=True))
            for topic_filter in self._subscriptions:
                await client.subscribe(topic_filter, qos=0)
            online = Status(state="online", instance=s.instance, version=__version__)
            await client.publish(self.topics.status, online.model_dump_json().encode(), qos=1, retain=True)
            if self._n.connects > 1:
                log.info("MQTT control plane reconnected to %s:%d.", s.host, s.port)
            self._last_logged = None
            self._online.set()
            tasks = {
                asyncio.create_task(self._receive(client), name="mqtt-receive"),
                asyncio.create_task(self._send(client), name="mqtt-send"),
            }
            stop = asyncio.create_task(self._stop.wait(), name="mqtt-stop")
            try:
                await asyncio.wait({*tasks, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (*tasks, stop):
                    t.cancel()
                await asyncio.gather(*tasks, stop, return_exceptions=True)
            if stop.done() and not stop.cancelled():
                self._online.clear()
                bye = Status(state="offline", instance=s.instance, version=__version__, reason="stopped")
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.publish(
                        self.topics.status, bye.model_dump_json().encode(), qos=1, retain=True, timeout=1.0
                    )
                return
            for t in tasks:
                failure = None if t.cancelled() else t.exception()
                if failure is not None:
                    raise failure
            raise aiomqtt.MqttError("the connection ended without an error")

    def _note_failure(self, exc: aiomqtt.MqttError) -> None:
        s = self.settings
        where = f"MQTT broker {s.host}:{s.port}"
        if isinstance(exc, MqttConnectError):
            who = f"user {s.username!r}" if s.username is not None else "an anonymous client (no control.username)"
            text = (
                f"{where} refused the login of {who} ({exc}); check control.username and "
                "control.password (BRAINHARMONIC_CONTROL__PASSWORD)."
            )
        elif self._n.connected_since is None:
            text = f"{where} is not reachable ({exc}); is mosquitto running there? Retrying in the background."
        else:
            text = f"Lost the connection to {where} ({exc}); reconnecting in the background."
        self._n.last_error = text
        if self._n.connected_since is None:
            self._n.connect_failures += 1
        if text != self._last_logged:
            log.warning(text)
            self._last_logged = text
        else:
            log.debug(text)

    # ------------------------------------------------------------------ while connected

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            arrived = time.monotonic()
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            if self._subscriptions and not message.topic.matches(self.topics.cmd):
                self._dispatch(message.topic, payload, arrived)
                continue
            if message.retain:
                # Stored on the broker: it would be replayed at every restart, so it is never acted on.
                if payload:  # an empty retained payload is how a stored command is cleared: nothing to say
                    cid, kind = peek_id(payload, self.settings.max_payload)
                    clear = f"mosquitto_pub -h {self.settings.host} -p {self.settings.port} -t {self.topics.cmd} -r -n"
                    reason = (
                        "was published with retain, so the broker stores it and would replay it on every restart; "
                        f"send commands without retain, and clear the stored one with `{clear}` "
                        "(an empty retained message)"
                    )
                    await self._reject(client, cid, kind, CommandError("payload", reason))
                continue
            await self._handle(client, payload)

    def _dispatch(self, topic: aiomqtt.Topic, payload: bytes, arrived: float) -> None:
        if len(payload) > self.settings.max_payload:
            return
        for topic_filter, callback in self._subscriptions.items():
            if topic.matches(topic_filter):
                try:
                    callback(topic.value, payload, arrived)
                except Exception:  # a bug in a callback must not end the control plane
                    log.exception("Handling a message on %s failed.", topic.value)

    async def _handle(self, client: aiomqtt.Client, payload: bytes) -> None:
        reply = await execute(
            self._handler, payload, max_bytes=self.settings.max_payload, timeout=self._handler_timeout
        )
        if isinstance(reply, ErrorReply):
            self._n.commands_rejected += 1
            log.info("Rejected command: %s", reply.message)
            await client.publish(self.topics.error, encode_reply(reply), qos=1)
            return
        self._n.commands_ok += 1
        await client.publish(self.topics.reply, encode_reply(reply), qos=1)

    async def _reject(self, client: aiomqtt.Client, cid: str | None, kind: str | None, exc: CommandError) -> None:
        self._n.commands_rejected += 1
        log.info("Rejected command: %s", exc)
        await client.publish(self.topics.error, encode_reply(rejection(cid, kind, exc)), qos=1)

    async def _send(self, client: aiomqtt.Client) -> None:
        assert self._wake is not None
        while True:
            soonest = self._admit(time.monotonic())
            while (item := self._pop_oldest()) is not None:
                kind, seq, data = item
                try:
                    await client.publish(self.topics.publish_topic(kind), data, qos=0)
                except aiomqtt.MqttError:
                    q = self._n.queued[kind]
                    if len(q) < (q.maxlen or 1):
                        q.appendleft((seq, data))  # keep it for the next connection
                    raise
                self._n.published += 1
            self._wake.clear()
            timeout = None if soonest is None else max(0.0, soonest - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)


def _tls_params(settings: ControlSettings) -> aiomqtt.TLSParameters | None:
    if settings.tls_ca is None:
        return None
    for name in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(settings, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"control.{name} = {path} does not exist; give the path of a PEM file or remove it.")
    return aiomqtt.TLSParameters(
        ca_certs=str(settings.tls_ca),
        certfile=None if settings.tls_cert is None else str(settings.tls_cert),
        keyfile=None if settings.tls_key is None else str(settings.tls_key),
        cert_reqs=ssl.CERT_REQUIRED,
    )
