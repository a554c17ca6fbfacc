"""Real parts for the control benchmarks: mosquitto, JACK, real EEG over LSL, services as processes.

Each service is ``python -m brainharmonic_rt.cli run`` (exactly what an installation runs) fed by
its own LSL stream of a real eegmat recording (``_lsl_push.py``: 8 channels at 250 Hz, stamped at
push time; ``brainharmonic replay`` at 19 × 500 Hz per performer did not fit on this shared 2-core
machine next to three services); the benchmark process only reads the MIDI ports (JACK-timed, see
:class:`JackTimedReader`) and talks MQTT.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EEGMAT = Path(os.environ.get("BRAINHARMONIC_DATA", ROOT.parent / "shared" / "data" / "eeg" / "eegmat"))

# Isolate LSL discovery before liblsl loads (as tests/conftest.py does). A bench's own child processes
# (multiprocessing "spawn" imports this module again) keep the parent's session, or they would not see each other.
if "BH_BENCH_LSLAPICFG" not in os.environ:
    _LSL_DIR = Path(tempfile.mkdtemp(prefix="bh-bench-lsl-"))
    _SESSION = f"bh-bench-{uuid.uuid4().hex[:12]}"
    (_LSL_DIR / "lsl_api.cfg").write_text(
        f"[multicast]\nResolveScope = link\n\n[lab]\nSessionID = {_SESSION}\n\n[log]\nlevel = -2\n"
    )
    os.environ["BH_BENCH_LSLAPICFG"] = str(_LSL_DIR / "lsl_api.cfg")
os.environ["LSLAPICFG"] = os.environ["BH_BENCH_LSLAPICFG"]
os.environ["JACK_NO_START_SERVER"] = "1"

SERVICE_TOML = """\
[signal]
window = 2.0
hop = 0.25
baseline = 10.0
[music]
tempo = {tempo}
seed = {seed}
# lookahead >= hop + processing time, so every note is scheduled before it is due
lookahead = 0.35
[control]
telemetry_rate_hz = 10.0
reconnect_min = 0.2
reconnect_max = 2.0
"""


def jack_period() -> int | None:
    done = subprocess.run(["jack_bufsize"], capture_output=True, text=True, timeout=10)
    for word in done.stdout.split():
        if word.isdigit():
            return int(word)
    return None


class Jack:
    """Use the running JACK server, or start a dummy one (64-frame periods) and stop it at the end.

    ``private=True`` always starts a named server of its own (long runs on a shared machine).
    """

    def __init__(self, period: int = 64, *, private: bool = False) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.period = period
        if private:  # a server of our own (children inherit the name): another job's server going away is no harm
            os.environ["JACK_DEFAULT_SERVER"] = f"bh-bench-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> Jack:
        if subprocess.run(["jack_lsp"], capture_output=True, timeout=10).returncode != 0:
            self.proc = subprocess.Popen(
                ["jackd", "-R", "-d", "dummy", "-r", "48000", "-p", str(self.period)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=dict(os.environ, JACK_NO_AUDIO_RESERVATION="1"),
            )
            deadline = time.monotonic() + 10
            while subprocess.run(["jack_lsp"], capture_output=True, timeout=10).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("jackd did not start")
                time.sleep(0.1)
        self.period = jack_period() or self.period
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)


class JackTimedReader:
    """Reads one MIDI port; message times from JACK (rtmidi deltas), put on time.monotonic().

    A Python callback runs when it gets the GIL (milliseconds late on a busy machine); the deltas are
    taken in JACK's process cycle. Their running sum is anchored by the least-delayed callback.
    """

    def __init__(self, needle: str, timeout: float = 30.0) -> None:
        import rtmidi

        self._lock = threading.Lock()
        self._rows: list[tuple[float, float, list[int]]] = []  # (callback monotonic, JACK running time, bytes)
        self._sum = 0.0
        self._in = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name="bh-bench-reader")
        self._in.ignore_types(sysex=True, timing=True, active_sense=True)
        deadline = time.monotonic() + timeout
        while not (hits := [i for i, p in enumerate(self._in.get_ports()) if needle in p]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no MIDI port containing {needle!r}")
            time.sleep(0.05)
        self._in.open_port(hits[0])
        self._in.set_callback(self._on)

    def _on(self, event: tuple[list[int], float], data: object = None) -> None:
        with self._lock:
            self._sum += event[1] if self._rows else 0.0
            self._rows.append((time.monotonic(), self._sum, list(event[0])))

    def messages(self) -> list[tuple[float, list[int]]]:
        with self._lock:
            if not self._rows:
                return []
            offset = min(mono - jack for mono, jack, _ in self._rows)
            return [(jack + offset, m) for _, jack, m in self._rows]

    def close(self) -> None:
        from brainharmonic_rt.midiports import close_midi_in

        close_midi_in(self._in)  # the safe order and grace period (see its docstring)


def note_ons(msgs: list[tuple[float, list[int]]]) -> list[tuple[float, list[int]]]:
    return [(t, m) for t, m in msgs if m[0] & 0xF0 == 0x90 and m[2] > 0]


class Services:
    """Replays and services as child processes; all stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, **(env or {})),
            cwd=ROOT,
        )
        self.procs.append((name, proc))
        return proc

    def streams(self, recordings: dict[str, Path]) -> dict[str, str]:
        """One live LSL stream per name (one child process); returns name → source_id."""
        ids = {name: f"bench-{name}-{uuid.uuid4().hex[:6]}" for name in recordings}
        push = str(Path(__file__).with_name("_lsl_push.py"))
        self._spawn("streams", [push, *(f"{ids[n]}={path}" for n, path in recordings.items())])
        return ids

    def service(
        self, name: str, source_id: str, broker: Any, *, tempo: float, seed: int, extra: Sequence[str] = ()
    ) -> str:
        port = f"bh-bench-{name}"
        toml = self.workdir / f"{name}.toml"
        toml.write_text(SERVICE_TOML.format(tempo=tempo, seed=seed))
        env = {
            "BRAINHARMONIC_CONTROL__USERNAME": "brainharmonic",
            "BRAINHARMONIC_CONTROL__PASSWORD": broker.users["brainharmonic"],
        }
        args = [
            "-m",
            "brainharmonic_rt.cli",
            "run",
            "--source-id",
            source_id,
            "--timeout",
            "30",
            "--virtual-port",
            port,
            "--config",
            str(toml),
        ]
        args += ["--mqtt", f"{broker.host}:{broker.port}", "--instance", name, *extra]
        self._spawn(name, args, env)
        return port

    def replay(self, name: str, path: Path, source_id: str) -> subprocess.Popen[bytes]:
        """``brainharmonic replay PATH --loop`` (the whole recording, as a user runs it) under ``source_id``."""
        args = ["-m", "brainharmonic_rt.cli", "replay", str(path), "--loop", "--source-id", source_id]
        return self._spawn(name, [*args, "--name", source_id])

    def stop(self, name: str, *, kill: bool = False, timeout: float = 30.0) -> int:
        """Stop child ``name``: SIGTERM (its orderly stop), or SIGKILL (an outlet vanishing without a goodbye).

        Returns its exit status; it is no longer checked.
        """
        proc = next(p for n, p in self.procs if n == name)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]
        if kill:
            proc.kill()
        else:
            proc.terminate()
        return proc.wait(timeout=timeout)

    def web_service(
        self,
        name: str,
        source_id: str,
        *,
        tempo: float,
        seed: int,
        hop: float = 0.25,
        toml_extra: str = "",
        extra: Sequence[str] = (),
    ) -> str:
        """A service with the web page on an ephemeral loopback port (``web_url`` reads it); returns its MIDI port."""
        port = f"bh-bench-{name}"
        toml = self.workdir / f"{name}.toml"
        text = SERVICE_TOML.format(tempo=tempo, seed=seed).replace("hop = 0.25", f"hop = {hop}")
        toml.write_text(text + toml_extra)
        args = ["-m", "brainharmonic_rt.cli", "run", "--source-id", source_id, "--timeout", "30"]
        args += ["--virtual-port", port, "--config", str(toml), "--web", "127.0.0.1:0", *extra]
        self._spawn(name, args)
        return port

    def web_url(self, name: str, timeout: float = 60.0) -> str:
        """The page's address, from the line the service prints when its web surface is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            for line in (self.workdir / f"{name}.log").read_text(errors="replace").splitlines():
                if line.startswith("web page: "):
                    return line.removeprefix("web page: ").split()[0].rstrip("/")
            time.sleep(0.1)
        raise RuntimeError(f"{name} printed no web address within {timeout} s")

    def finish(self, name: str, timeout: float) -> str:
        """Wait for service ``name`` to exit by itself (``--duration``); its whole output."""
        proc = next(p for n, p in self.procs if n == name)
        proc.wait(timeout=timeout)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]  # done: no longer checked
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-800:]
                raise RuntimeError(f"{name} exited with {proc.returncode}: {tail}")

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def recordings() -> list[Path]:
    files = sorted(EEGMAT.glob("Subject*_2.edf"))
    if not files:
        raise SystemExit(f"No eegmat recordings under {EEGMAT}; set BRAINHARMONIC_DATA.")
    return files


def have(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None and shutil.which(t, path="/usr/sbin:/sbin") is None]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)}")


class HealthListener:
    """The services' ``telemetry/health`` (the latest per instance), read as ``controller``; paho reconnects."""

    def __init__(self, broker: Any, instance: str = "+") -> None:
        import paho.mqtt.client as mqtt

        self._latest: dict[str, dict[str, Any]] = {}
        self.messages = 0
        self.connects = 0
        self._topic = f"brainharmonic/{instance}/telemetry/health"
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bh-bench-{uuid.uuid4().hex[:6]}")
        self._client.username_pw_set("controller", broker.users["controller"])
        self._client.reconnect_delay_set(0.2, 2.0)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        self.connects += 1
        client.subscribe(self._topic)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        body = json.loads(msg.payload)
        with self._lock:
            self._latest[msg.topic.split("/")[1]] = body
            self.messages += 1

    def snapshot(self, instance: str) -> dict[str, Any]:
        """The latest health payload of ``instance`` ({} before its first)."""
        with self._lock:
            return dict(self._latest.get(instance, {}))

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon (private) and RssShmem (JACK shared memory) of ``pid``, MB."""
    with open(f"/proc/{pid}/status") as fh:
        rows = {ln.split(":")[0]: ln.split()[1] for ln in fh if ln.startswith(("VmRSS", "RssAnon", "RssShmem"))}
    return {k: int(v) / 1024 for k, v in rows.items()}


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid``."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
