"""The web API as a black box: real HTTP and websocket clients against a live run (LSL → pipeline → JACK).

Covers the snapshot, the live frames and their rate, commands answered exactly as over MQTT (same
payloads through a real mosquitto and through ``POST /api/cmd``), the guards (Host, Origin, content
type, size, rate limit, client limit), the token and read-only modes, and a viewer that stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
import uuid
from typing import Any

import aiomqtt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from brainharmonic_rt.config import load_settings
from brainharmonic_rt.control.mqtt import Topics
from brainharmonic_rt.errors import ConfigError
from brainharmonic_rt.web.server import static_dir

from .broker import MosquittoBroker
from .webutil import ahttp, command, live, settings, until

pytestmark = pytest.mark.usefixtures("jack_server")


def _port() -> str:
    return f"bh-web-{uuid.uuid4().hex[:6]}"


def _ws_url(url: str, path: str = "/ws") -> str:
    return url.replace("http://", "ws://") + path


async def _frames(ws: Any, n: int, *, ack: bool = True) -> list[tuple[float, dict[str, Any]]]:
    out = []
    for _ in range(n):
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        out.append((time.monotonic(), frame))
        if ack:
            await ws.send(json.dumps({"ack": frame["seq"]}))
    return out


# --------------------------------------------------------------------------------------------- the state


async def test_page_state_and_live_frames(source_id: str) -> None:
    s = settings(source_id, _port(), web={"rate_hz": 10.0})
    async with live(s) as rig:
        status, headers, html = await ahttp("GET", rig.url + "/")
        assert status == 200 and b"/static/app.js" in html
        assert "default-src 'self'" in headers["content-security-policy"]
        for name in ("app.js", "style.css"):
            status, _, body = await ahttp("GET", f"{rig.url}/static/{name}")
            assert status == 200 and len(body) > 1000
        for f in static_dir().iterdir():  # offline: nothing is fetched from elsewhere
            text = f.read_text()
            assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), f.name
            assert not re.search(r"url\(\s*['\"]?(https?:)?//|@import|fetch\(\s*['\"]https?:", text), f.name

        status, _, st = await ahttp("GET", rig.url + "/api/state")
        assert status == 200 and st["full"] and st["running"] and not st["readonly"]
        groups = st["brain"]["groups"]
        assert set(groups) == set(st["instruments"]) and groups
        for g in groups.values():
            assert set(g["z"]) == {"theta", "alpha", "beta"} and g["n_good"] >= 1
            assert all(z is None or -4.0 <= z <= 4.0 for z in g["z"].values())
        assert isinstance(st["brain"]["bad"], list)
        m = st["music"]
        assert m["key"] in st["choices"]["keys"] and m["scale"] in st["choices"]["scales"]
        assert m["tempo"] == 120.0 and m["chord"] and m["level"] in (-1, 0, 1) and -1 <= m["arousal"] <= 1
        for inst in st["instruments"].values():
            assert {"program", "channel", "low", "high", "role", "muted", "silent", "sounding"} <= set(inst)
        assert st["notes"] and all(len(row) == 6 and row[1] in st["instruments"] for row in st["notes"])

        async def ahead() -> bool:
            _, _, again = await ahttp("GET", rig.url + "/api/state")
            return any(row[4] > again["t"] for row in again["notes"])

        for _ in range(60):
            if await ahead():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the notes composed ahead are never shown")
        health = st["health"]
        assert health["connected"] and health["latency_ms"]["processing_p99"] is not None
        calibration = st["calibration"]
        assert 0 < calibration["progress"] <= 1 and calibration["baseline_s"] == 2.0
        assert (calibration["progress"] == 1.0) == (not calibration["calibrating"])
        names = [c["name"] for c in st["layout"]["channels"]]
        assert names == list(rig.pipe.source.info.ch_names)
        assert all(-0.7 < c["x"] < 0.7 and -0.7 < c["y"] < 0.7 for c in st["layout"]["channels"])

        async with connect(_ws_url(rig.url)) as ws:
            frames = await _frames(ws, 12)
        first = frames[0][1]
        assert first["full"] and "layout" in first
        live_frames = [f for _, f in frames[1:]]
        assert not any(f["full"] for f in live_frames)
        gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(live_frames)]  # when the service built them
        assert min(gaps) >= 0.049, f"never above 20 frames per second: {gaps}"
        assert 0.08 < sum(gaps) / len(gaps) < 0.2, f"about 10 per second: {gaps}"
        ts = [f["t"] for f in live_frames]
        assert ts == sorted(ts) and ts[-1] > ts[0]
        assert len({f["brain"]["index"] for f in live_frames}) >= 2, "the brain state moves while we watch"
        assert all(row[4] + row[5] >= f["t"] - 2.1 for f in live_frames for row in f["notes"])
        assert live_frames[-1]["calibration"] == {"calibrating": False, "progress": 1.0, "baseline_s": 2.0}


# --------------------------------------------------------------------------------------------- commands


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with MosquittoBroker(tmp_path_factory.mktemp("mosquitto")) as b:
        yield b


BAD = [
    b"{not json",
    b"[1, 2]",
    b'{"bpm": 100}',
    b'{"cmd": "explode"}',
    b'{"cmd": "set_tempo", "bpm": 500, "id": "t1"}',
    b'{"cmd": "set_tempo", "bpm": "100"}',
    b'{"cmd": "set_tempo", "bpm": 100, "colour": "red"}',
    b'{"cmd": "mute", "instrument": "tuba", "id": "m1"}',
    b'{"cmd": "set_register", "instrument": "frontal", "low": 80, "high": 40}',
    b'{"cmd": "set_key", "key": "H"}',
    b'{"cmd": "stop_recording", "id": "r1"}',
    b'{"cmd": "set_tempo", "bpm": 100, "id": "' + b"x" * 5000 + b'"}',
]


async def test_commands_answer_exactly_as_over_mqtt(source_id: str, broker: MosquittoBroker) -> None:
    instance = f"web{uuid.uuid4().hex[:6]}"
    control = broker.control_settings(instance).model_dump()
    control["password"] = control["password"].get_secret_value()
    s = settings(source_id, _port(), control=control)
    topics = Topics.for_instance(instance)
    async with live(s) as rig:
        assert rig.surfaces["web"].handler is rig.surfaces["mqtt"].handler, "one owner of live edits"
        async with aiomqtt.Client(**broker.client_args("controller")) as client:
            await client.subscribe(f"{topics.root}/#", qos=1)
            seen: list[dict[str, Any]] = []

            async def collect() -> None:
                async for msg in client.messages:
                    if str(msg.topic) in (topics.reply, topics.error):
                        seen.append(json.loads(msg.payload if isinstance(msg.payload, bytes) else b"{}"))

            task = asyncio.create_task(collect())
            await rig.surfaces["mqtt"].plane.wait_connected(10)
            try:
                for payload in BAD:
                    n = len(seen)
                    await client.publish(topics.cmd, payload, qos=1)
                    await until(lambda n=n: len(seen) > n, 5, f"the MQTT answer to {payload[:40]!r}")
                    over_mqtt = seen[-1]
                    status, over_web = await command(rig.url, payload)
                    assert status == 400, over_web
                    assert {**over_web, "ts": 0} == {**over_mqtt, "ts": 0}
                    assert over_web["ok"] is False and over_web["message"].endswith(".")
                good = {"cmd": "set_tempo", "bpm": 100.0, "id": "g1"}
                n = len(seen)
                await client.publish(topics.cmd, json.dumps(good).encode(), qos=1)
                await until(lambda: len(seen) > n, 5, "the MQTT reply")
                status, over_web = await command(rig.url, {**good, "bpm": 101.0})
                assert status == 200 and over_web["ok"] and over_web["id"] == "g1" and over_web["cmd"] == "set_tempo"
                assert set(over_web["result"]) == set(seen[-1]["result"])
                assert over_web["result"]["tempo"] == 101.0
                await until(lambda: rig.pipe.engine.composer.tempo == 101.0, 2, "the tempo change")  # type: ignore[union-attr]
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task


async def test_guards_host_origin_type_size_rate_and_client_limit(source_id: str) -> None:
    s = settings(source_id, None, web={"max_clients": 2, "commands_per_second": 2.0, "command_burst": 4})
    async with live(s, midi=False) as rig:
        port = rig.web.port
        status, _, body = await ahttp("GET", rig.url + "/api/state", host=f"evil.example:{port}")
        assert status == 400 and "is not this machine" in body["message"]
        status, _, _ = await ahttp("GET", rig.url + "/", host=f"localhost:{port}")
        assert status == 200
        status, reply = await command(rig.url, {"cmd": "panic"}, origin="http://evil.example")
        assert status == 403 and "not allowed" in reply["message"]
        status, _, reply = await ahttp("POST", rig.url + "/api/cmd", b'{"cmd":"panic"}', content_type="text/plain")
        assert status == 415 and reply["field"] == "payload" and "application/json" in reply["message"]
        status, reply = await command(rig.url, b"{" + b" " * (2 << 20) + b"}")
        assert status == 413 and "far over the limit of 4096 bytes" in reply["message"]
        with pytest.raises(InvalidStatus) as refused:
            async with connect(_ws_url(rig.url), origin="http://evil.example"):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403
        async with connect(_ws_url(rig.url), origin=f"http://127.0.0.1:{port}"):  # type: ignore[arg-type]
            pass  # the page's own origin is welcome

        await asyncio.sleep(2.5)  # a full bucket
        answers = [await command(rig.url, {"cmd": "set_temperature", "temperature": 0.9}) for _ in range(8)]
        codes = [a[0] for a in answers]
        assert codes[:4] == [200] * 4 and 429 in codes, codes
        limited = next(r for c, r in answers if c == 429)
        assert "commands per second" in limited["message"] and "wait a moment" in limited["message"]

        async with connect(_ws_url(rig.url)) as a, connect(_ws_url(rig.url)) as b:
            await _frames(a, 1)
            await _frames(b, 1)
            with pytest.raises(InvalidStatus):
                async with connect(_ws_url(rig.url)):
                    pass
        await until(lambda: not rig.web.viewers, 5, "the viewers leaving")
        async with connect(_ws_url(rig.url)) as c:  # room again
            await _frames(c, 1)


async def test_token_mode(source_id: str) -> None:
    token = "a-long-shared-secret"
    s = settings(source_id, None, web={"token": token})
    async with live(s, midi=False) as rig:
        status, _, page = await ahttp("GET", rig.url + "/")
        assert status == 401 and b"needs its token" in page
        status, _, _ = await ahttp("GET", rig.url + "/?token=wrong-one-entirely")
        assert status == 401
        status, headers, _ = await ahttp("GET", f"{rig.url}/?token={token}")
        assert status == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"]
        assert cookie.startswith(f"bh_token={token}") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        jar = cookie.split(";")[0]
        status, _, _ = await ahttp("GET", rig.url + "/", cookie=jar)
        assert status == 200
        status, _, body = await ahttp("GET", rig.url + "/api/state")
        assert status == 401 and "BRAINHARMONIC_WEB__TOKEN" in body["message"]
        status, _, body = await ahttp("GET", rig.url + "/api/state", authorization=f"Bearer {token}")
        assert status == 200 and body["running"]
        status, reply = await command(rig.url, {"cmd": "panic"})
        assert status == 401 and not reply["ok"]
        status, reply = await command(rig.url, {"cmd": "panic"}, cookie=jar)
        assert status == 200 and reply["ok"]
        with pytest.raises(InvalidStatus):
            async with connect(_ws_url(rig.url)):
                pass
        async with connect(_ws_url(rig.url, f"/ws?token={token}")) as ws:
            assert (await _frames(ws, 1))[0][1]["full"]
        async with connect(_ws_url(rig.url), additional_headers={"Cookie": jar}) as ws:
            assert (await _frames(ws, 1))[0][1]["full"]


def test_other_addresses_need_a_token() -> None:
    with pytest.raises(ConfigError, match=r"web.host '0.0.0.0' is reachable from other machines.*TOKEN"):
        load_settings(None, web={"enabled": True, "host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="shorter than 8"):
        load_settings(None, web={"enabled": True, "token": "short"})
    ok = load_settings(None, web={"enabled": True, "host": "0.0.0.0", "token": "long-enough-secret"})
    assert ok.web.token is not None
    assert load_settings(None, web={"enabled": True, "host": "::1"}).web.host == "::1"


async def test_readonly_shows_without_controls(source_id: str) -> None:
    s = settings(source_id, None, web={"readonly": True})
    async with live(s, midi=False) as rig:
        status, reply = await command(rig.url, {"cmd": "panic"})
        assert status == 403 and "read-only" in reply["message"] and reply["ok"] is False
        status, _, st = await ahttp("GET", rig.url + "/api/state")
        assert status == 200 and st["readonly"]
        async with connect(_ws_url(rig.url)) as ws:
            frames = await _frames(ws, 3)
        assert all(f["readonly"] for _, f in frames)


async def test_a_viewer_that_stops_reading_is_dropped_and_the_others_go_on(source_id: str) -> None:
    s = settings(source_id, _port(), web={"rate_hz": 20.0, "unacked": 2, "stall_timeout": 1.5})
    async with live(s) as rig:
        before = rig.pipe.snapshot()
        async with connect(_ws_url(rig.url), max_queue=1) as stalled, connect(_ws_url(rig.url)) as healthy:
            t0 = time.monotonic()
            frames = await _frames(healthy, 60)  # 3 s at 20 Hz, while the other one reads nothing
            took = time.monotonic() - t0
            assert took < 60 / 20 * 1.6, f"the healthy viewer got 60 frames in {took:.2f} s"
            await until(lambda: rig.web.counters["viewers_dropped"] >= 1, 5, "the stalled viewer being dropped")
            assert len(rig.web.viewers) == 1
            got = 0
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(stalled.recv(), 5)
                    got += 1
            assert got <= 2 + 1, "no more than `unacked` frames were ever in flight for it"
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert "acknowledged nothing" in closed.value.rcvd.reason
            assert frames[-1][1]["web"]["viewers"] == 2 or frames[-1][1]["web"]["viewers"] == 1
        after = rig.pipe.snapshot()
        assert after["windows_dropped"] == before["windows_dropped"], "the music never waited for a viewer"
        assert after["windows"] > before["windows"]
