"""A real mosquitto broker on 127.0.0.1 for tests, benchmarks and demos.

Each broker lives in its own folder with a generated password file (``mosquitto_passwd``), an
ACL and a config, listens on a free loopback port, refuses anonymous clients and can be
stopped and restarted on the same port (to test reconnection). Not used by the service itself.

The default users mirror ``deploy/brainharmonic.acl``: ``brainharmonic`` (the service),
``controller`` (sends commands, reads everything) and ``visuals`` (reads telemetry only).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from brainharmonic_rt.config import ControlSettings
from brainharmonic_rt.errors import BrainharmonicError

HOST = "127.0.0.1"

DEFAULT_ACL = """\
# brainharmonic ACL: who may publish (write) and subscribe (read) which topics.
# The service: reads its commands, writes replies, status and telemetry.
user brainharmonic
topic read brainharmonic/+/cmd
topic write brainharmonic/+/reply
topic write brainharmonic/+/error
topic write brainharmonic/+/status
topic write brainharmonic/+/telemetry/#
# Multi-performer sync: every instance publishes its beat clock and reads the others'.
topic readwrite brainharmonic/+/sync/#

# A controller (phone, lighting desk, another program): sends commands, reads everything.
user controller
topic write brainharmonic/+/cmd
topic read brainharmonic/+/reply
topic read brainharmonic/+/error
topic read brainharmonic/+/status
topic read brainharmonic/+/telemetry/#
topic read brainharmonic/+/sync/#

# Visuals: read-only; its commands never reach the service. The beat clock lets it flash on the beat.
user visuals
topic read brainharmonic/+/status
topic read brainharmonic/+/telemetry/#
topic read brainharmonic/+/sync/#
"""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS listener: the CA that signed the server certificate, and the server's pair."""

    ca: Path
    cert: Path
    key: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        raise BrainharmonicError(f"{name} is not installed; install mosquitto (e.g. `apt install mosquitto`).")
    return path


def write_password_file(path: Path, users: Mapping[str, str]) -> Path:
    """Write ``users`` (name → password) as a mosquitto password file, hashed by ``mosquitto_passwd``."""
    for name in users:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise BrainharmonicError(f"Broker user name {name!r} must be 1-64 letters, digits, '_', '.' or '-'.")
    path.write_text("".join(f"{name}:{password}\n" for name, password in users.items()))
    path.chmod(0o600)
    done = subprocess.run([_tool("mosquitto_passwd"), "-U", str(path)], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise BrainharmonicError(
            f"mosquitto_passwd could not hash {path}: {done.stderr.strip() or done.stdout.strip()}."
        )
    return path


def adapt_config(text: str, port: int, password_file: Path, acl_file: Path, tls: TlsFiles | None = None) -> str:
    """Make a production ``mosquitto.conf`` runnable here: loopback ``port``, local auth files.

    Rewrites the first ``listener`` (port and bind address) and the ``password_file`` / ``acl_file``
    paths, drops any other listener block and system paths (pid file, persistence location, log
    files), and keeps every security setting (anonymous access, ACL, limits) as written.
    """
    out: list[str] = []
    seen_listener = False
    skipping = False
    for line in text.splitlines():
        word = line.split("#", 1)[0].strip().split(" ", 1)[0]
        if word == "listener":
            skipping = seen_listener
            if not seen_listener:
                seen_listener = True
                out.append(f"listener {port} {HOST}")
                if tls is not None:
                    out += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
            continue
        if skipping and word in (
            "cafile",
            "certfile",
            "keyfile",
            "require_certificate",
            "use_identity_as_username",
            "tls_version",
            "protocol",
            "socket_domain",
            "max_connections",
        ):
            continue
        if word == "password_file":
            out.append(f"password_file {password_file}")
        elif word == "acl_file":
            out.append(f"acl_file {acl_file}")
        elif word in (
            "pid_file",
            "persistence_location",
            "persistence_file",
            "log_dest",
            "user",
            "include_dir",
        ):
            continue
        elif word == "persistence":
            out.append("persistence false")
        else:
            out.append(line)
    if not seen_listener:
        raise BrainharmonicError("The mosquitto config has no 'listener' line; add `listener 1883`.")
    out += ["log_dest stderr", f"user {pwd.getpwuid(os.geteuid()).pw_name}"]
    return "\n".join(out) + "\n"


def default_config(port: int, password_file: Path, acl_file: Path, tls: TlsFiles | None = None) -> str:
    """A minimal secure broker config: loopback only, passwords required, ACL enforced, in memory."""
    base = (
        "listener 1883\nallow_anonymous false\npassword_file x\nacl_file x\n"
        "max_packet_size 1048576\nset_tcp_nodelay true\n"
    )
    return adapt_config(base, port, password_file, acl_file, tls)


class MosquittoBroker:
    """A mosquitto process on 127.0.0.1:``port`` with users, an ACL and optional TLS.

    Use as a context manager (start on enter, stop on exit). ``users`` maps name → password
    (random passwords for the default users); ``password_file`` uses an existing hashed file
    instead of writing one from ``users``; ``config`` is a mosquitto.conf text passed through
    :func:`adapt_config` (default: :func:`default_config`).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        users: Mapping[str, str] | None = None,
        acl: str = DEFAULT_ACL,
        config: str | None = None,
        port: int | None = None,
        tls: TlsFiles | None = None,
        password_file: Path | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users = (
            dict(users)
            if users is not None
            else {name: secrets.token_urlsafe(12) for name in ("brainharmonic", "controller", "visuals")}
        )
        self.tls = tls
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.password_file = (
            write_password_file(self.workdir / "passwd", self.users) if password_file is None else password_file
        )
        self.acl_file = self.workdir / "acl"
        self.acl_file.write_text(acl)
        self.acl_file.chmod(0o600)
        self._template = config
        self.config_file = self.workdir / "mosquitto.conf"
        self.log_file = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._exe = _tool("mosquitto")

    host = HOST

    def _write_config(self) -> None:
        args = (self.port, self.password_file, self.acl_file, self.tls)
        text = default_config(*args) if self._template is None else adapt_config(self._template, *args)
        self.config_file.write_text(text)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and wait until it accepts TCP connections (raise after ``timeout`` s)."""
        if self.running:
            return
        for _attempt in range(5):
            self._write_config()
            with self.log_file.open("ab") as logf:
                self._proc = subprocess.Popen(
                    [self._exe, "-c", str(self.config_file)], stdout=logf, stderr=subprocess.STDOUT
                )
            if self._wait_ready(timeout):
                return
            self.stop()
            if self._fixed_port or "in use" not in self.log:
                break
            self.port = free_port()  # lost a race for the port: try another
        tail = " / ".join(self.log.strip().splitlines()[-3:])
        raise BrainharmonicError(
            f"mosquitto did not start on {HOST}:{self.port} within {timeout} s ({tail or 'no output'}); "
            f"check {self.config_file}."
        )

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(0.2)
                if s.connect_ex((HOST, self.port)) == 0:
                    return True
            time.sleep(0.01)
        return False

    def stop(self, *, kill: bool = False, timeout: float = 5.0) -> None:
        """Stop mosquitto (SIGTERM, or SIGKILL with ``kill=True``: clients see the link drop)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port (retained messages are lost: no persistence)."""
        self.stop()
        fixed, self._fixed_port = self._fixed_port, True
        try:
            self.start(timeout)
        finally:
            self._fixed_port = fixed

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def client_args(self, user: str | None) -> dict[str, Any]:
        """Keyword arguments for ``aiomqtt.Client`` logging in as ``user`` (None: anonymous)."""
        args: dict[str, Any] = {
            "hostname": HOST,
            "port": self.port,
            "socket_options": [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        }
        if user is not None:
            args |= {"username": user, "password": self.users[user]}
        if self.tls is not None:
            import aiomqtt

            args["tls_params"] = aiomqtt.TLSParameters(ca_certs=str(self.tls.ca))
        return args

    def control_settings(self, instance: str, user: str = "brainharmonic", **overrides: Any) -> ControlSettings:
        """ControlSettings for a service logging in as ``user``; ``overrides`` replace any field."""
        values: dict[str, Any] = {
            "enabled": True,
            "host": HOST,
            "port": self.port,
            "instance": instance,
            "username": user,
            "password": self.users[user],
            "reconnect_min": 0.05,
            "reconnect_max": 0.5,
        }
        if self.tls is not None:
            values["tls_ca"] = self.tls.ca
        return ControlSettings(**(values | overrides))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def make_test_certificates(folder: Path, hostname: str = "localhost") -> TlsFiles:
    """A throwaway CA and a server certificate for ``hostname`` and 127.0.0.1 (needs ``openssl``)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BrainharmonicError("openssl is not installed; install it to make test certificates.")
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    cert, key, csr = folder / "server.crt", folder / "server.key", folder / "server.csr"
    ext = folder / "server.ext"
    ext.write_text(f"subjectAltName=DNS:{hostname},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    steps = [
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=brainharmonic test CA",
            "-keyout",
            ca_key,
            "-out",
            ca,
        ],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={hostname}", "-keyout", key, "-out", csr],
        [
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext,
            "-out",
            cert,
        ],
    ]
    for step in steps:
        done = subprocess.run([openssl, *map(str, step)], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise BrainharmonicError(f"openssl {step[0]} failed: {done.stderr.strip()[-200:]}.")
    for path in (key, ca_key):
        path.chmod(0o600)
    return TlsFiles(ca=ca, cert=cert, key=key)
