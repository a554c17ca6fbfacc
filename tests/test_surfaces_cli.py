"""`run --web / --osc / --osc-in` as a person types them: subprocesses, one clear line for every mistake."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from .lslutil import SyntheticOutlet

BIN = [sys.executable, "-m", "brainharmonic_rt.cli"]


def bh(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BIN, *args], capture_output=True, text=True, timeout=timeout)


def test_help_shows_the_surface_options() -> None:
    for cmd in ("run", "demo"):
        out = bh(cmd, "--help").stdout
        for opt in ("--web", "--web-readonly", "--osc HOST:PORT"):
            assert opt in out, (cmd, opt)
    assert "--osc-in" in bh("run", "--help").stdout


@pytest.mark.parametrize(
    ("args", "code", "pattern"),
    [
        (
            ["--web", "0.0.0.0:8799"],
            2,
            r"web.host '0.0.0.0' is reachable from other machines.*WEB__TOKEN",
        ),
        (["--web", "localhost:http"], 2, r"--web 'localhost:http' has no port number"),
        (["--osc", "127.0.0.1"], 2, r"osc.targets.*'127.0.0.1' has no port number"),
        (["--osc", "no-such-host.invalid:9000"], 2, r"OSC target no-such-host.invalid:9000 cannot be resolved"),
        (["--web", "127.0.0.1:{busy}"], 2, r"The web page cannot listen on 127.0.0.1:\d+ .*pick another"),
    ],
)
def test_bad_surface_options_get_one_clear_line(args: list[str], code: int, pattern: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        args = [a.format(busy=busy.getsockname()[1]) for a in args]
        r = bh("run", "--source-id", "bh-nothing-here", "--timeout", "1", "--no-midi", *args)
    err = r.stderr.strip()
    assert r.returncode == code, err
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("brainharmonic: error:")
    assert re.search(pattern, err), err


def test_osc_in_without_a_sender_says_where_to_point_it() -> None:
    r = bh("run", "--osc-in", "127.0.0.1:0", "--timeout", "1", "--no-midi")
    err = r.stderr.strip()
    assert r.returncode == 4, err
    assert re.search(r"No /muse/eeg OSC messages arrived on UDP port \d+ within 1 s; point Mind Monitor", err), err
    assert len(err.splitlines()) == 1


def test_run_with_web_serves_the_page_while_it_plays() -> None:
    sid = f"bh-{uuid.uuid4().hex[:8]}"
    with SyntheticOutlet(sid, n_channels=8):
        proc = subprocess.Popen(
            [*BIN, "run", "--source-id", sid, "--no-midi", "--web", "0", "--duration", "8"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            m = re.fullmatch(r"web page: (http://127\.0\.0\.1:\d+/)\n", line)
            assert m, line
            deadline = time.monotonic() + 20
            while True:
                with urllib.request.urlopen(m.group(1) + "api/state", timeout=5) as resp:
                    state = json.loads(resp.read())
                if state["brain"] is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert state["running"] and state["brain"]["index"] >= 0 and state["stream"]["n_channels"] == 8
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert "stopped (duration 8 s reached)" in out
