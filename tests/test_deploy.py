"""deploy/: everything that can be validated without docker or a real systemd boot.

The mosquitto config is run for real (its port rewritten to a free loopback one) with the
password file made by deploy/make-passwd.sh and the shipped ACL, and the control plane is
driven through it; the systemd unit goes through `systemd-analyze verify`; the compose file
and the example configs are parsed and checked against the files and channel layouts they name.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from brainharmonic_rt.config import load_settings
from brainharmonic_rt.control import ControlPlane, Topics
from brainharmonic_rt.errors import ConfigError
from brainharmonic_rt.signal.channels import group_channels

from .broker import DEFAULT_ACL, MosquittoBroker

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PASSWORDS = {"brainharmonic": "svc-Pw-1", "controller": "ctl-Pw-2", "visuals": "vis-Pw-3"}


def _env_example() -> dict[str, str]:
    env = {}
    for line in (DEPLOY / "brainharmonic.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def _acl_rules(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _make_passwd(path: Path, passwords: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **{f"BH_PASSWORD_{u.upper()}": pw for u, pw in passwords.items()})
    return subprocess.run(
        ["sh", str(DEPLOY / "make-passwd.sh"), str(path)], env=env, capture_output=True, text=True, timeout=30
    )


# ---------------------------------------------------------------- passwords and ACL


def test_make_passwd_script_writes_hashed_users_and_updates_them(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    done = _make_passwd(path, PASSWORDS)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(":", 1) for line in path.read_text().splitlines())
    assert set(lines) == set(PASSWORDS)
    assert all(h.startswith("$7$") for h in lines.values())  # hashed, never plain
    assert not any(pw in path.read_text() for pw in PASSWORDS.values())
    assert path.stat().st_mode & 0o077 == 0
    again = _make_passwd(path, {"brainharmonic": "-", "controller": "-", "visuals": "new-visuals-pw"})
    assert again.returncode == 0, again.stderr
    after = dict(line.split(":", 1) for line in path.read_text().splitlines())
    assert after["brainharmonic"] == lines["brainharmonic"] and after["visuals"] != lines["visuals"]


def test_shipped_acl_is_the_one_the_tests_enforce() -> None:
    assert _acl_rules((DEPLOY / "brainharmonic.acl").read_text()) == _acl_rules(DEFAULT_ACL)


async def test_mosquitto_conf_runs_and_enforces_passwords_and_acl(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    assert _make_passwd(passwd, PASSWORDS).returncode == 0
    conf = (DEPLOY / "mosquitto.conf").read_text()
    assert re.search(r"^allow_anonymous false$", conf, re.M) and re.search(r"^acl_file ", conf, re.M)
    acl = (DEPLOY / "brainharmonic.acl").read_text()
    broker = MosquittoBroker(tmp_path / "mq", users=PASSWORDS, password_file=passwd, acl=acl, config=conf)
    with broker:
        with pytest.raises(aiomqtt.MqttError, match="Not authorized"):
            async with aiomqtt.Client(broker.host, broker.port):
                pass
        instance = f"d{uuid.uuid4().hex[:8]}"
        topics = Topics.for_instance(instance)
        applied: list[str] = []

        class Handler:
            def apply(self, cmd: Any) -> dict[str, Any]:
                applied.append(cmd.cmd)
                return {}

        async with (
            ControlPlane(broker.control_settings(instance), Handler()) as plane,
            aiomqtt.Client(**broker.client_args("controller")) as controller,
            aiomqtt.Client(**broker.client_args("visuals")) as visuals,
        ):
            assert await plane.wait_connected(5)
            await controller.subscribe(topics.reply, qos=1)
            await visuals.subscribe(topics.telemetry("health"), qos=0)
            await visuals.publish(topics.cmd, b'{"cmd": "panic", "id": "v"}', qos=1)  # dropped by the ACL
            await controller.publish(topics.cmd, b'{"cmd": "set_tempo", "bpm": 90, "id": "c"}', qos=1)
            reply = await _next(controller)
            assert json.loads(reply)["id"] == "c" and applied == ["set_tempo"]
            plane.publish("health", {"ok": 1})
            assert json.loads(await _next(visuals)) == {"ok": 1}


async def _next(client: aiomqtt.Client, timeout: float = 5.0) -> bytes:
    async def first() -> bytes:
        async for m in client.messages:
            return m.payload if isinstance(m.payload, bytes) else b""
        raise AssertionError("message stream ended")

    return await asyncio.wait_for(first(), timeout)


# ---------------------------------------------------------------- systemd


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "brainharmonic.service")
    return unit


def test_systemd_unit_restarts_on_failure_and_runs_unprivileged() -> None:
    unit = _unit()
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure" and svc["User"] not in ("", "root") and svc["NoNewPrivileges"] == "yes"
    assert "--config /etc/brainharmonic/config.toml" in svc["ExecStart"]
    assert svc["EnvironmentFile"].lstrip("-") == "/etc/brainharmonic/env"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "mosquitto.service" in unit["Unit"]["After"]


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed; the unit was only parsed (test above).")
    text = (DEPLOY / "brainharmonic.service").read_text()
    # verify checks that ExecStart's program exists: point it at this Python, keep the arguments.
    unit = tmp_path / "brainharmonic.service"
    unit.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable}", text, flags=re.M))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if "brainharmonic.service" in line]
    assert done.returncode == 0 and complaints == [], done.stdout + done.stderr


# ---------------------------------------------------------------- docker compose


def test_docker_compose_parses_and_names_existing_files() -> None:
    yaml = pytest.importorskip("yaml", reason="pyyaml is not installed; cannot parse docker-compose.yml")
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"mosquitto", "brainharmonic"}
    made_by_user = {"passwd": "make-passwd.sh", "brainharmonic.env": "brainharmonic.env.example"}
    mounts: dict[str, str] = {}
    for svc in services.values():
        assert svc["network_mode"] == "host" and svc["restart"] == "unless-stopped"
        for vol in svc.get("volumes", []):
            src, dst = vol.split(":")[:2]
            if src.startswith("./"):
                name = src[2:]
                assert (DEPLOY / name).is_file() or (DEPLOY / made_by_user[name]).is_file(), src
                mounts[dst] = name
    for env_file in services["brainharmonic"]["env_file"]:
        assert (DEPLOY / made_by_user[Path(env_file).name]).is_file()
    # mosquitto runs the mounted deploy config, which names the mounted password file and ACL.
    conf_path = services["mosquitto"]["command"][-1]
    assert mounts[conf_path] == "mosquitto.conf"
    conf = (DEPLOY / "mosquitto.conf").read_text()
    for key, name in (("password_file", "passwd"), ("acl_file", "brainharmonic.acl")):
        path = re.search(rf"^{key} (\S+)$", conf, re.M).group(1)  # type: ignore[union-attr]
        assert mounts[path] == name
    assert mounts["/etc/brainharmonic/config.toml"].endswith(".toml")
    build = services["brainharmonic"]["build"]
    dockerfile = (DEPLOY / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile.is_file()
    for src in re.findall(r"^COPY (.+) \S+$", dockerfile.read_text(), re.M):
        for name in src.split():
            assert (ROOT / name).exists(), f"Dockerfile copies {name}, which is not in the repository"


# ---------------------------------------------------------------- example configs

CAP64 = (  # actiCAP 64, 10-10 names
    "Fp1 Fz F3 F7 FT9 FC5 FC1 C3 T7 TP9 CP5 CP1 Pz P3 P7 O1 Oz O2 P4 P8 TP10 CP6 CP2 Cz C4 T8 FT10 "
    "FC6 FC2 F4 F8 Fp2 AF7 AF3 AFz F1 F5 FT7 FC3 C1 C5 TP7 CP3 P1 P5 PO7 PO3 POz PO4 PO8 P6 P2 CPz "
    "CP4 TP8 C6 C2 FC4 FT8 F6 AF8 AF4 F2 FCz"
)
LAYOUTS = {
    "muse": ("TP9", "AF7", "AF8", "TP10", "Right AUX"),
    "cyton": tuple(str(i) for i in range(8)),  # the OpenBCI GUI sends no channel names
    "cap64": tuple(CAP64.split()),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_example_config_loads_and_fits_its_headset(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = DEPLOY / f"{name}.toml"
    for key in [k for k in os.environ if k.startswith("BRAINHARMONIC_")]:
        monkeypatch.delenv(key)
    with pytest.raises(ConfigError, match=rf"BRAINHARMONIC_CONTROL__PASSWORD.*{name}\.toml"):
        load_settings(path)  # the password is never in the file
    for key, value in _env_example().items():
        monkeypatch.setenv(key, value)
    s = load_settings(path)
    assert s.control.enabled and s.control.username == "brainharmonic" and s.control.instance == name
    assert s.control.password is not None and s.control.password.get_secret_value() == "change-me"
    assert "password" not in tomllib.loads(path.read_text())["control"]
    groups = group_channels(LAYOUTS[name], s.signal.groups, s.signal.fallback_groups)
    assert set(groups) == set(s.music.instruments), "every group gets an instrument, every instrument a group"
    channels = [inst.channel for inst in s.music.instruments.values()]
    assert len(set(channels)) == len(channels), "instruments share a MIDI channel"
    if name == "cap64":
        assert len(LAYOUTS[name]) == 64 and sum(len(v) for v in groups.values()) == 64
