"""MQTT commands against the running service: real mosquitto, real LSL stream, real JACK MIDI port.

Each command is sent by a real aiomqtt client logged in as ``controller``; its effect is read back
on the MIDI port (onset spacing, pitch classes, silent channels, program changes, CC 123) or in the
telemetry. Waits poll with deadlines; nothing is paced by fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import sys
import time
import uuid
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from brainharmonic_rt.config import load_settings
from brainharmonic_rt.control.live import LiveControl
from brainharmonic_rt.control.mqtt import Topics
from brainharmonic_rt.music.ensemble_composer import EnsembleLearnedComposer
from brainharmonic_rt.music.scales import pitch_classes
from brainharmonic_rt.pipeline import LivePipeline
from brainharmonic_rt.recording import read_jsonl
from brainharmonic_rt.sinks.rtmidi_port import RtMidiSink
from brainharmonic_rt.sources.lsl import LSLSource

from .broker import MosquittoBroker
from .lslutil import SyntheticOutlet
from .midiutil import MidiReader, note_ons

pytestmark = pytest.mark.usefixtures("jack_server")

Msgs = list[tuple[float, list[int]]]


class JackTimedReader(MidiReader):
    """A MidiReader whose times come from JACK (rtmidi's per-message deltas), not from the Python callback.

    The callback runs when it gets the GIL, milliseconds late on a busy machine; the deltas are taken in
    JACK's process cycle. Their running sum is put on the monotonic clock through the least-delayed callback.
    """

    def __init__(self, needle: str) -> None:
        self._jack: list[tuple[float, float]] = []  # (callback monotonic time, JACK time since the first message)
        self._sum = 0.0
        super().__init__(needle)

    def _on_message(self, event: tuple[list[int], float], data: object = None) -> None:
        with self._lock:
            self._sum += event[1] if self._jack else 0.0
            self._jack.append((time.monotonic(), self._sum))
            self.messages.append((0.0, list(event[0])))

    def snapshot(self) -> Msgs:
        with self._lock:
            if not self._jack:
                return []
            offset = min(mono - jack for mono, jack in self._jack)
            return [(jack + offset, m) for (_, jack), (_, m) in zip(self._jack, self.messages, strict=True)]


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.02)
    return result


class Controller:
    """The far side of the broker: sends commands, records replies, errors and telemetry."""

    def __init__(self, client: aiomqtt.Client, instance: str) -> None:
        self.client, self.topics = client, Topics.for_instance(instance)
        self.seen: list[tuple[str, dict[str, Any], float]] = []  # (topic suffix, JSON, monotonic arrival)

    async def collect(self) -> None:
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else b"{}"
            self.seen.append((str(m.topic).removeprefix(self.topics.root + "/"), json.loads(payload), time.monotonic()))

    def on(self, suffix: str) -> list[dict[str, Any]]:
        return [m for s, m, _ in self.seen if s == suffix]

    async def ask(self, payload: dict[str, Any] | bytes, timeout: float = 5.0) -> tuple[dict[str, Any], float, float]:
        """Send a command; return (reply or error, monotonic send time, monotonic arrival of the answer)."""
        cid = uuid.uuid4().hex[:12]
        data = payload if isinstance(payload, bytes) else json.dumps({**payload, "id": cid}).encode()
        sent = time.monotonic()
        n = len(self.seen)
        await self.client.publish(self.topics.cmd, data, qos=1)

        def answer() -> tuple[dict[str, Any], float] | None:
            for s, m, t in self.seen[n:]:
                if s in ("reply", "error") and (isinstance(payload, bytes) or m.get("id") == cid):
                    return m, t
            return None

        reply, arrived = await until(answer, timeout, f"the answer to {payload!r}")
        return reply, sent, arrived


@dataclass
class Rig:
    pipe: LivePipeline
    control: LiveControl
    reader: JackTimedReader
    task: asyncio.Task[Any]

    def channel(self, name: str) -> int:
        return self.pipe.engine.composer.instruments[name].channel  # type: ignore[union-attr]

    def ons(self, after: float = 0.0, channel: int | None = None) -> Msgs:
        return [
            (t, m)
            for t, m in note_ons(self.reader.snapshot())
            if t > after and (channel is None or m[0] & 15 == channel)
        ]

    def ccs(self, number: int, after: float) -> set[int]:
        return {m[0] & 15 for t, m in self.reader.snapshot() if t > after and m[0] & 0xF0 == 0xB0 and m[1] == number}


def _overrides(broker: MosquittoBroker, source_id: str, port: str, instance: str, **sections: Any) -> dict[str, Any]:
    """The command-line layer of a test service (also what reload_config applies again)."""
    control = broker.control_settings(instance).model_dump() | sections.pop("control", {})
    control["password"] = control["password"].get_secret_value()
    return dict(
        stream={"source_id": source_id, "timeout": 5.0, "lost_after": 0.5},
        signal={"window": 1.0, "hop": 0.25, "baseline": 1.0},
        # lookahead ≥ hop + processing time: every note is scheduled before it is due (the default 0.15 s
        # is below the 0.25 s hop, so the last 0.1 s of each hop would be composed late).
        music={"tempo": 150.0, "seed": 3, "lookahead": 0.35, **sections.pop("music", {})},
        # the tempo moves only by command or sync here (the plan's brain-driven tempo is tested on its own)
        harmony={"adaptive_tempo": False, **sections.pop("harmony", {})},
        output={"virtual_port": port},
        control=control,
        **sections,
    )


def _settings(broker: MosquittoBroker, source_id: str, port: str, instance: str, **sections: Any) -> Any:
    return load_settings(None, **_overrides(broker, source_id, port, instance, **sections))


@asynccontextmanager
async def live(
    settings: Any, *, config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> AsyncIterator[Rig]:
    port = settings.output.virtual_port
    with SyntheticOutlet(settings.stream.source_id, n_channels=8, sfreq=250.0):
        pipe = LivePipeline(settings, LSLSource(settings.stream), [RtMidiSink(None, virtual_name=port)])
        async with LiveControl(pipe, config_file=config_file, overrides=overrides) as control:
            task = asyncio.create_task(pipe.run())
            reader = await asyncio.to_thread(JackTimedReader, port)
            try:
                await until(lambda: len(note_ons(reader.snapshot())) >= 4, 20, "the first notes")
                yield Rig(pipe, control, reader, task)
                assert not task.done(), "the music must never stop because of a command"
            finally:
                pipe.stop("test over")
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 10)
                reader.close()


@asynccontextmanager
async def controller(broker: MosquittoBroker, instance: str) -> AsyncIterator[Controller]:
    async with aiomqtt.Client(**broker.client_args("controller"), identifier=f"ctl-{uuid.uuid4().hex[:8]}") as client:
        ctl = Controller(client, instance)
        await client.subscribe(f"{ctl.topics.root}/#", qos=1)
        task = asyncio.create_task(ctl.collect())
        try:
            yield ctl
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with MosquittoBroker(tmp_path_factory.mktemp("mosquitto")) as b:
        yield b


@pytest.fixture
def instance() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def _off_grid(times: list[float], grid: float) -> int:
    """How many ``times`` (s from a grid step) are off the multiples of ``grid``.

    Arrivals are JACK-timed (one 64-frame cycle ≈ 1.3 ms) plus dispatch: allow 12 ms late, 4 ms early.
    """
    return sum(1 for t in times if not (t % grid < 0.012 or t % grid > grid - 0.004))


async def test_commands_change_the_music_and_bad_ones_change_nothing(
    broker: MosquittoBroker, source_id: str, instance: str
) -> None:
    port = f"bh-{uuid.uuid4().hex[:6]}"
    settings = _settings(broker, source_id, port, instance)
    async with live(settings) as rig, controller(broker, instance) as ctl:
        composer = rig.pipe.engine.composer  # type: ignore[union-attr]
        names = list(composer.instruments)
        origin = rig.pipe.scheduler.origin  # type: ignore[union-attr]

        # key ⇒ every note from the change on is in the new scale
        reply, _, _ = await ctl.ask({"cmd": "set_key", "key": "F#", "scale": "major"})
        assert reply["ok"], reply
        t_key = origin + reply["result"]["from_time"]
        before = [m[1] % 12 for _, m in rig.ons() if _ < t_key - 0.02]
        assert not set(before) <= set(pitch_classes("F#", "major")), "the old key must sound different"
        await until(lambda: len(rig.ons(t_key + 0.02)) >= 5, 15, "notes in the new key")
        assert {m[1] % 12 for _, m in rig.ons(t_key + 0.02)} <= set(pitch_classes("F#", "major"))

        # mute ⇒ that channel goes silent (its notes end: CC 123) while the others play on; unmute brings it back
        counts = {n: len(rig.ons(channel=rig.channel(n))) for n in names}
        loud = max(counts, key=counts.__getitem__)
        ch = rig.channel(loud)
        reply, sent, acked = await ctl.ask({"cmd": "mute", "instrument": loud})
        assert reply["ok"] and reply["result"]["muted"] is True
        await until(lambda: ch in rig.ccs(123, sent), 2, "CC 123 on the muted channel")
        others = len(rig.ons(acked)) - len(rig.ons(acked, ch))
        await until(lambda: len(rig.ons(acked)) - len(rig.ons(acked, ch)) >= others + 4, 15, "the others playing on")
        assert rig.ons(acked + 0.03, ch) == [], f"{loud} played while muted"
        reply, _, acked = await ctl.ask({"cmd": "unmute", "instrument": loud})
        assert reply["ok"]
        await until(lambda: rig.ons(acked, ch), 15, f"{loud} playing again")

        # program ⇒ a program_change on the port at once
        reply, sent, _ = await ctl.ask({"cmd": "set_program", "instrument": names[0], "program": 73})
        assert reply["ok"]
        pc = [0xC0 | rig.channel(names[0]), 73]
        arrived = await until(
            lambda: [t for t, m in rig.reader.snapshot() if m == pc and t > sent], 2, "program_change"
        )
        assert arrived[0] - sent < 0.1

        # panic ⇒ note-offs and CC 123 on every used channel, and the music goes on
        reply, sent, _ = await ctl.ask({"cmd": "panic"})
        assert reply["ok"]
        await until(lambda: {rig.channel(n) for n in names} <= rig.ccs(123, sent), 2, "CC 123 everywhere")
        await until(lambda: len(rig.ons(sent + 0.05)) >= 2, 15, "music after the panic")

        # malformed, out of range, unknown: an error naming the field, nothing changes, music continues
        tempo, key = composer.tempo, (composer.key, composer.scale)
        bad = {
            b'{"cmd": "set_tempo", "bpm": 500}': "bpm",
            b'{"cmd": "set_tempo", "bpm": "fast"}': "bpm",
            b'{"cmd": "set_tempo", "bpm": 90, "now": true}': "now",
            b'{"cmd": "mute", "instrument": "tuba"}': "instrument",
            b'{"cmd": "set_key", "key": "H"}': "key",
            b'{"cmd": "set_mode", "mode": "jazz"}': "mode",
            b"not json": "payload",
        }
        for payload, field in bad.items():
            reply, _, _ = await ctl.ask(payload)
            assert reply["ok"] is False and reply["field"] == field, (payload, reply)
        rng = random.Random(6)
        for _ in range(30):
            await ctl.client.publish(ctl.topics.cmd, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))))
        await until(lambda: len(ctl.on("error")) >= len(bad) + 30, 10, "an error for every fuzzed payload")
        assert (composer.tempo, (composer.key, composer.scale)) == (tempo, key)
        n = len(rig.ons())
        await until(lambda: len(rig.ons()) >= n + 3, 15, "music after the bad commands")
        reply, _, _ = await ctl.ask({"cmd": "set_temperature", "temperature": 0.6})
        assert reply["ok"] and "learned generator" in reply["result"]["note"]

        # tempo ⇒ onsets move to the new, wider grid from the change on (grid phase continues)
        reply, _, _ = await ctl.ask({"cmd": "set_tempo", "bpm": 60})
        assert reply["ok"]
        t_cut = origin + reply["result"]["from_time"]
        spb = settings.music.steps_per_beat
        grid = 60 / 60 / spb
        pos = reply["result"]["from_beat"] * spb  # the grid phase goes on: the next step is at the next whole position
        step0 = t_cut + (math.ceil(pos - 1e-6) - pos) * grid
        earlier = sorted({round(t - step0, 4) for t, _ in rig.ons() if t < t_cut - 0.02})[-12:]
        assert _off_grid(earlier, grid) >= 3, f"before: the 150 BPM grid {earlier}"
        await until(lambda: len({round(t, 2) for t, _ in rig.ons(t_cut + 0.004)}) >= 5, 20, "onsets at 60 BPM")
        later = sorted({round(t - step0, 4) for t, _ in rig.ons(t_cut + 0.004)})
        assert _off_grid(later, grid) == 0, f"onsets off the 60 BPM grid: {later} ({rig.pipe.snapshot()})"
        music = await until(lambda: [m for m in ctl.on("telemetry/music") if m["tempo"] == 60.0], 5, "telemetry")
        assert music[-1]["key"] == "F#" and music[-1]["scale"] == "major"
        health = ctl.on("telemetry/health")[-1]
        assert health["connected"] and health["latency_ms"]["processing_p50"] is not None
        assert health["control"]["commands_rejected"] >= len(bad) + 30
        brains = [m["index"] for m in ctl.on("telemetry/brain")]
        assert len(brains) >= 3 and brains == sorted(brains)

        # mode: the learned generator takes over live (same grid, plan and instruments), and gives back
        reply, _, acked = await ctl.ask({"cmd": "set_mode", "mode": "learned"})
        assert reply["ok"] and reply["result"]["changed"], reply
        engine = rig.pipe.engine
        composer = engine.composer if engine is not None else None
        assert isinstance(composer, EnsembleLearnedComposer) and engine is not None and engine.mode == "learned"
        await until(lambda: len(rig.ons(acked + 1.0)) >= 4, 20, "music from the learned ensemble")
        assert composer.tempo == 60.0 and (composer.key, composer.scale) == ("F#", "major")
        assert composer.temperature == 0.6  # sent earlier, in classic mode
        reply, _, _ = await ctl.ask({"cmd": "set_temperature", "temperature": 0.9})
        assert (
            reply["ok"] and reply["result"]["applied_to"] == "EnsembleLearnedComposer" and composer.temperature == 0.9
        )
        reply, _, acked = await ctl.ask({"cmd": "set_mode", "mode": "classic"})
        assert reply["ok"] and type(engine.composer).__name__ == "ClassicComposer"
        await until(lambda: len(rig.ons(acked + 1.0)) >= 4, 20, "music in classic mode again")


async def test_solo_recording_and_reload(
    broker: MosquittoBroker, source_id: str, instance: str, tmp_path: Path
) -> None:
    port = f"bh-{uuid.uuid4().hex[:6]}"
    toml = tmp_path / "service.toml"
    toml.write_text(f'[music]\ntempo = 150.0\nkey = "D"\n[record]\ndir = "{tmp_path / "rec"}"\n')
    overrides = _overrides(broker, source_id, port, instance)
    del overrides["music"]["tempo"]  # the command line would win over the file
    settings = load_settings(toml, **overrides)
    async with live(settings, config_file=toml, overrides=overrides) as rig, controller(broker, instance) as ctl:
        composer = rig.pipe.engine.composer  # type: ignore[union-attr]
        names = list(composer.instruments)
        counts = {n: len(rig.ons(channel=rig.channel(n))) for n in names}
        star = max(counts, key=counts.__getitem__)
        reply, _, acked = await ctl.ask({"cmd": "solo", "instrument": star})
        assert reply["ok"] and set(reply["result"]["silent"]) == set(names) - {star}
        await until(lambda: len(rig.ons(acked + 0.03, rig.channel(star))) >= 2, 15, f"{star} playing solo")
        assert all(m[0] & 15 == rig.channel(star) for _, m in rig.ons(acked + 0.03))
        assert (await ctl.ask({"cmd": "solo", "instrument": None}))[0]["ok"]

        reply, _, _ = await ctl.ask({"cmd": "start_recording", "label": "take-1"})
        assert reply["ok"], reply
        folder = Path(reply["result"]["folder"])
        again, _, _ = await ctl.ask({"cmd": "start_recording"})
        assert again["ok"] is False and "running" in again["reason"]
        w = rig.pipe.stats.windows
        await until(lambda: rig.pipe.stats.windows >= w + 3, 10, "windows while recording")
        assert (await ctl.ask({"cmd": "stop_recording"}))[0]["ok"]
        await until(lambda: (folder / "notes.mid").exists(), 10, "the session folder to be closed")
        assert len(read_jsonl(folder / "states.jsonl")) >= 3 and folder.name.startswith("take-1")

        # reload: tempo and program change live; a signal setting needs a restart and says so
        toml.write_text(
            toml.read_text().replace("tempo = 150.0", "tempo = 120.0")
            + f"[signal]\nnotch = 60.0\n[music.instruments.{names[0]}]\nprogram = 40\n"
        )
        reply, sent, _ = await ctl.ask({"cmd": "reload_config"})
        assert reply["ok"], reply
        res = reply["result"]
        assert res["applied"]["music.tempo"] == 120.0 and res["applied"][f"music.instruments.{names[0]}.program"] == 40
        assert res["needs_restart"] == ["signal.notch"] and "restart" in res["message"]
        assert composer.tempo == 120.0
        pc = [0xC0 | rig.channel(names[0]), 40]
        await until(lambda: [t for t, m in rig.reader.snapshot() if m == pc and t > sent], 2, "program_change")
        toml.write_text(toml.read_text().replace("tempo = 120.0", "tempo = 999.0"))
        reply, _, _ = await ctl.ask({"cmd": "reload_config"})
        assert reply["ok"] is False and "music.tempo" in reply["reason"] and composer.tempo == 120.0


async def test_reload_of_an_unchanged_file_leaves_the_brain_moved_tempo_free(
    broker: MosquittoBroker, source_id: str, instance: str, tmp_path: Path
) -> None:
    """Review defect: reload compared the file's tempo with the composer's (which the brain moves), so an unchanged
    file "changed" the tempo and pinned it: brain-driven tempo was off for the rest of the session."""
    port = f"bh-{uuid.uuid4().hex[:6]}"
    toml = tmp_path / "service.toml"
    toml.write_text("[music]\ntempo = 96.0\n[harmony]\nadaptive_tempo = true\n")
    overrides = _overrides(broker, source_id, port, instance)
    del overrides["music"]["tempo"], overrides["harmony"]  # the file's values, as a service started with it
    settings = load_settings(toml, **overrides)
    async with live(settings, config_file=toml, overrides=overrides) as rig, controller(broker, instance) as ctl:
        engine = rig.pipe.engine
        assert engine is not None
        # The plan moves the tempo with the brain (what a bar start does when the state changes): not pinned.
        engine.apply(lambda at: engine.composer.retime(at, 107.5, pin=False))
        assert not engine.composer.plan.tempo_pinned
        reply, _, _ = await ctl.ask({"cmd": "reload_config"})
        assert reply["ok"], reply
        assert "music.tempo" not in reply["result"]["applied"], reply
        assert not engine.composer.plan.tempo_pinned, "an unchanged file must leave the tempo to the brain"
        assert engine.composer.tempo == 107.5
        toml.write_text(toml.read_text().replace("tempo = 96.0", "tempo = 90.0"))  # a real edit still applies
        reply, _, _ = await ctl.ask({"cmd": "reload_config"})
        assert reply["ok"] and reply["result"]["applied"]["music.tempo"] == 90.0, reply
        assert engine.composer.tempo == 90.0 and engine.composer.plan.tempo_pinned


async def test_broker_restart_mid_run_music_goes_on_and_telemetry_resumes(
    source_id: str, instance: str, tmp_path: Path
) -> None:
    with MosquittoBroker(tmp_path / "mq") as broker:
        port = f"bh-{uuid.uuid4().hex[:6]}"
        settings = _settings(broker, source_id, port, instance)
        async with live(settings) as rig:
            plane = rig.control.plane
            await until(lambda: plane.connected, 5, "the connection")
            await asyncio.to_thread(broker.stop, kill=True)
            await until(lambda: not plane.connected, 10, "noticing the broker is gone")
            lost = time.monotonic()
            await until(lambda: len(rig.ons(lost)) >= 4, 15, "music while the broker is away")
            await asyncio.to_thread(broker.start)
            await until(lambda: plane.stats()["reconnects"] >= 1, 15, "the reconnect")
            async with controller(broker, instance) as ctl:
                await until(lambda: ctl.on("telemetry/health") and ctl.on("telemetry/music"), 5, "telemetry again")
                assert (await ctl.ask({"cmd": "set_tempo", "bpm": 100}))[0]["ok"]
            assert not rig.task.done()


async def test_follower_follows_the_leader_and_survives_its_loss(broker: MosquittoBroker, tmp_path: Path) -> None:
    lead_name, follow_name = f"L{uuid.uuid4().hex[:8]}", f"F{uuid.uuid4().hex[:8]}"
    sid_l, sid_f = f"bh-{uuid.uuid4().hex[:10]}", f"bh-{uuid.uuid4().hex[:10]}"
    lead = _settings(broker, sid_l, f"bh-{uuid.uuid4().hex[:6]}", lead_name, control={"lead": True})
    follow = _settings(
        broker,
        sid_f,
        f"bh-{uuid.uuid4().hex[:6]}",
        follow_name,
        control={"follow": lead_name, "sync_lost_after": 0.6},
        music={"tempo": 90.0, "key": "A", "scale": "minor", "seed": 11},
    )
    beats: dict[str, dict[int, float]] = {lead_name: {}, follow_name: {}}
    async with aiomqtt.Client(**broker.client_args("controller")) as spy:
        await spy.subscribe(Topics.all_sync_beats())

        async def watch() -> None:
            async for m in spy.messages:
                b = json.loads(m.payload if isinstance(m.payload, bytes) else b"{}")
                beats.setdefault(b["instance"], {})[b["beat"]] = b["time"]

        watcher = asyncio.create_task(watch())
        async with live(follow) as f_rig:
            async with live(lead) as l_rig:
                sync = f_rig.control.sync
                assert sync is not None
                await until(lambda: sync.role == "follower" and sync.snaps >= 1, 10, "the follower locking on")
                locked = time.monotonic()
                for published in beats.values():
                    published.clear()  # beats from before the lock are the follower's own numbering
                fc = f_rig.pipe.engine.composer  # type: ignore[union-attr]
                await until(lambda: len(set(beats[lead_name]) & set(beats[follow_name])) >= 6, 15, "common beats")
                common = sorted(set(beats[lead_name]) & set(beats[follow_name]))[-6:]
                diffs = [abs(beats[lead_name][b] - beats[follow_name][b]) * 1000 for b in common]
                assert max(diffs) < 10, f"beat time differences {diffs} ms"

                def together() -> list[float]:
                    """Onset differences (ms) on the leader's beats where both ports have a note."""
                    out = []
                    for t in sorted(beats[lead_name].values()):
                        near = [[a for a, _ in rig.ons(locked) if abs(a - t) < 0.03] for rig in (l_rig, f_rig)]
                        if all(near):
                            out.append(abs(min(near[0]) - min(near[1])) * 1000)
                    return out

                pairs = await until(lambda: len(together()) >= 4 and together(), 15, "notes on common beats")
                assert sorted(pairs)[len(pairs) // 2] < 10, f"onset differences on common beats {pairs} ms"
                lead_tempo = l_rig.pipe.engine.composer.tempo  # type: ignore[union-attr]  # 150 ± the plan's moves
                assert abs(fc.tempo - lead_tempo) < lead_tempo * 0.06 and (fc.key, fc.scale) == ("D", "dorian")
                async with controller(broker, follow_name) as ctl:
                    reply, _, _ = await ctl.ask({"cmd": "set_tempo", "bpm": 70})
                    assert reply["ok"] is False and reply["field"] == "bpm" and lead_name in reply["reason"]
            gone = time.monotonic()
            await until(lambda: sync.role == "alone", 5, "the follower noticing the leader is gone")
            await until(lambda: len(f_rig.ons(gone + 0.7)) >= 4, 15, "the follower playing on alone")
            assert abs(fc.tempo - 150.0) < 150 * 0.06, "it keeps the leader's tempo"
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await watcher


async def test_cli_run_with_mqtt_serves_commands_and_telemetry(
    broker: MosquittoBroker, source_id: str, instance: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from brainharmonic_rt.cli import main

    assert main(["run", "--source-id", source_id, "--mqtt", "host:port"]) != 0
    assert "--mqtt 'host:port' is not HOST or HOST:PORT" in capsys.readouterr().err
    env = dict(
        os.environ,
        BRAINHARMONIC_CONTROL__USERNAME="brainharmonic",
        BRAINHARMONIC_CONTROL__PASSWORD=broker.users["brainharmonic"],
    )
    args = ["run", "--source-id", source_id, "--no-midi", "--duration", "6", "--timeout", "10"]
    args += ["--mqtt", f"{broker.host}:{broker.port}", "--instance", instance, "--lead"]
    with SyntheticOutlet(source_id, n_channels=8, sfreq=250.0):
        async with controller(broker, instance) as ctl:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "brainharmonic_rt.cli", *args, env=env, stdout=PIPE, stderr=STDOUT
            )
            try:
                await until(lambda: ctl.on("telemetry/health") and ctl.on("sync/beat"), 15, "telemetry from the CLI")
                reply, _, _ = await ctl.ask({"cmd": "set_tempo", "bpm": 111})
                assert reply["ok"], reply
                await until(lambda: any(m["tempo"] == 111 for m in ctl.on("telemetry/music")), 5, "the new tempo")
                out, _ = await asyncio.wait_for(proc.communicate(), 20)
            finally:
                if proc.returncode is None:
                    proc.kill()
            assert proc.returncode == 0, out.decode()
            assert ctl.on("status")[0]["state"] == "online"
            await until(lambda: ctl.on("status")[-1]["state"] == "offline", 5, "the offline status")
    health = ctl.on("telemetry/health")[-1]
    assert health["sync"]["role"] == "leader" and health["rate_hz"] > 200
