"""MIDI ports on this machine through python-rtmidi (JACK, ALSA, CoreMIDI or WinMM): listing them,
finding one by name, connecting a client, and closing an input safely.

Shared by the live MIDI output (``sinks.rtmidi_port``) and the MIDI clock follower
(``sources.midiclock``), so it sits below both. JACK is never autostarted
(``JACK_NO_START_SERVER=1`` unless the environment says otherwise), and the C libraries' own
complaints on stderr are silenced while probing so the user sees one sentence instead.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from .errors import ConfigError, SinkError

PPQN = 24  #: MIDI clock ticks per quarter note (beat), by the MIDI specification
API_NAMES = ("auto", "jack", "alsa", "coremidi", "winmm")
_JACK_HINT = "start one with `jackd -d dummy -r 48000 -p 64` (or `jackd -d alsa` with a sound card)"


def _rtmidi() -> Any:
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    try:
        import rtmidi
    except ImportError as exc:  # pragma: no cover - a dependency
        raise SinkError(f"python-rtmidi cannot be imported ({exc}); run `pip install python-rtmidi`.") from None
    return rtmidi


def close_midi_in(mi: Any, grace: float = 0.05) -> None:
    """Stop a MidiIn's callback, close its port and delete it, without racing the MIDI thread. Idempotent.

    Measured with JACK (a reader opened and closed while messages flow): python-rtmidi's callback
    wrapper holds a raw pointer to the ``(func, data)`` tuple, and a message already past RtMidi's
    check waits for the GIL with it; ``cancel_callback`` frees that tuple (a use-after-free that
    crashed the interpreter at exit in 5 of 10 runs), and deleting the client while that thread
    still waits for the GIL kills it holding the GIL's lock (every later thread hangs: 3 of 3 runs
    within 50 cycles). So: keep the tuple alive, cancel, let a waiting callback finish with the GIL
    released (``grace``), then close and delete. 0 crashes in 20 runs and 0 hangs in 400 cycles.
    A mitigation, not a guarantee: a callback that runs longer than ``grace`` still races the delete.
    Never replace a callback with ``set_callback`` on a live port (it frees the old tuple the same way).
    """
    if mi is None or mi.is_deleted:
        return
    keep = callback_refs(mi)
    try:
        with contextlib.suppress(Exception):
            mi.cancel_callback()
        if keep or mi.is_port_open():  # a port with no callback found: wait anyway, it costs only `grace`
            _sleep_through(grace)
        mi.close_port()
    finally:
        mi.delete()
        del keep  # no MIDI thread is left to call it


def callback_refs(mi: Any) -> list[tuple[Any, Any]]:
    """The ``(func, data)`` tuples a python-rtmidi MidiIn holds for its input callback (found through the
    garbage collector's view of the object; a test checks that this still finds it)."""
    return [r for r in gc.get_referents(mi) if type(r) is tuple and len(r) == 2 and callable(r[0])]


def _sleep_through(seconds: float) -> None:
    """Sleep even through Ctrl-C (re-raised afterwards): cutting the grace short is the hang it prevents."""
    end = time.monotonic() + seconds
    interrupted: BaseException | None = None
    while (left := end - time.monotonic()) > 0:
        try:
            time.sleep(left)
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def _api_ids() -> dict[str, int]:
    rtmidi = _rtmidi()
    return {
        "alsa": rtmidi.API_LINUX_ALSA,
        "jack": rtmidi.API_UNIX_JACK,
        "coremidi": rtmidi.API_MACOSX_CORE,
        "winmm": rtmidi.API_WINDOWS_MM,
    }


def compiled_apis() -> list[str]:
    """Our names of the MIDI APIs compiled into python-rtmidi, in its preference order."""
    by_id = {v: k for k, v in _api_ids().items()}
    return [by_id[a] for a in _rtmidi().get_compiled_api() if a in by_id]


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence C-level stderr (JACK / ALSA print their own errors) for a moment."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded): nothing to silence
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _unavailable(api: str) -> str:
    if api == "jack":
        return f"The JACK server is not running; {_JACK_HINT}, or choose another --midi-api."
    if api == "alsa":
        return (
            "The ALSA sequencer is not available (no /dev/snd/seq); load it with `sudo modprobe snd-seq`, "
            f"or use --midi-api jack with a JACK server ({_JACK_HINT})."
        )
    return f"The {api} MIDI system cannot be opened; check that it is installed and running."


def _no_midi_system(tried: list[str]) -> SinkError:
    return SinkError(
        f"No MIDI system is running (tried {', '.join(tried) or 'none'}): {_JACK_HINT}, "
        "or install and start a MIDI system (ALSA sequencer, CoreMIDI, WinMM)."
    )


def _open_client(api: str, kind: str, name: str) -> Any:
    """A MidiOut/MidiIn on ``api``; SinkError if that MIDI system is not running."""
    rtmidi = _rtmidi()
    cls = rtmidi.MidiOut if kind == "out" else rtmidi.MidiIn
    try:
        with quiet_stderr():
            return cls(_api_ids()[api], name)
    except rtmidi.SystemError:
        raise SinkError(_unavailable(api)) from None


def _candidate_apis(api: str) -> list[str]:
    if api not in API_NAMES:
        raise ConfigError(f"Unknown MIDI API {api!r}; choose one of {', '.join(API_NAMES)}.")
    compiled = compiled_apis()
    if api == "auto":
        return compiled
    if api not in compiled:
        raise SinkError(
            f"MIDI API {api!r} is not in this python-rtmidi build (it has: {', '.join(compiled)}); "
            "choose one of those with --midi-api."
        )
    return [api]


def list_ports(api: str = "auto") -> dict[str, dict[str, list[str]]]:
    """Port names by direction, then MIDI API: ``{"outputs": {"jack": [...]}, "inputs": {"jack": [...]}}``.

    Only APIs that work are listed. Raises :class:`SinkError` when no MIDI system is running.
    """
    out: dict[str, dict[str, list[str]]] = {"outputs": {}, "inputs": {}}
    tried = _candidate_apis(api)
    for name in tried:
        try:
            mo = _open_client(name, "out", "brainharmonic-list")
        except SinkError:
            continue
        try:
            mi = _open_client(name, "in", "brainharmonic-list")
            try:
                out["outputs"][name] = list(mo.get_ports())
                out["inputs"][name] = list(mi.get_ports())
            finally:
                mi.delete()
        finally:
            mo.delete()
    if not out["outputs"]:
        if api != "auto":
            raise SinkError(_unavailable(tried[0]))
        raise _no_midi_system(tried)
    return out


def format_ports(ports: dict[str, dict[str, list[str]]]) -> str:
    """Human-readable listing of :func:`list_ports` for ``brainharmonic ports``."""
    lines: list[str] = []
    for direction in ("outputs", "inputs"):
        for api, names in ports.get(direction, {}).items():
            lines.append(f"MIDI {direction} ({api}):")
            if names:
                lines.extend(f"  {n}" for n in names)
            else:
                lines.append(
                    "  (none)" + ("; `brainharmonic run` opens a virtual port" if direction == "outputs" else "")
                )
    return "\n".join(lines)


def _match(port: str, names: list[str]) -> list[int]:
    if port in names:
        return [names.index(port)]
    needle = port.lower()
    return [i for i, n in enumerate(names) if needle in n.lower()]


def connect(
    api: str,
    kind: str,
    client_name: str,
    port: str | None,
    *,
    virtual: str | None = None,
    port_client_name: str | None = None,
    label: str,
    ambiguous_hint: str,
    missing_hint: str,
    configure: Callable[[Any], None] | None = None,
) -> tuple[Any, str, str]:
    """A MidiOut (``kind="out"``) or MidiIn (``"in"``) on the first MIDI API that works, connected to ``port``
    (exact name or unique case-insensitive substring) or, with ``port=None``, to a new virtual port ``virtual``.

    Returns (client, port name, API name). ``configure`` runs on the client before its port opens. Raises
    SinkError naming the matches of an ambiguous name (``"MIDI <label> port ... Give more of the name<hint>"``)
    or the available ports of a missing one, and deletes every client it opened on the way (explicitly: an
    implicitly freed JACK client can crash the process).
    """
    tried = _candidate_apis(api)
    available: dict[str, list[str]] = {}
    for name in tried:
        try:
            client = _open_client(name, kind, client_name)
        except SinkError:
            if api != "auto":
                raise
            continue
        try:
            if port is None:
                assert virtual is not None
                with quiet_stderr():
                    client.open_virtual_port(virtual)
                return client, virtual, name
            names = list(client.get_ports())
            hits = _match(port, names)
            if len(hits) > 1:
                raise SinkError(
                    f"MIDI {label} port {port!r} is ambiguous; it matches "
                    f"{', '.join(repr(names[i]) for i in hits)}. Give more of the name{ambiguous_hint}."
                )
            if not hits:
                available[name] = names
                client.delete()
                continue
            if configure is not None:
                configure(client)
            with quiet_stderr():
                client.open_port(hits[0], port_client_name or client_name)
            return client, names[hits[0]], name
        except BaseException:
            if not client.is_deleted:
                client.delete()
            raise
    if not available:
        raise _no_midi_system(tried)
    listing = "; ".join(f"{a}: {', '.join(repr(n) for n in names) or '(none)'}" for a, names in available.items())
    direction = "outputs" if kind == "out" else "inputs"
    raise SinkError(f"MIDI {label} port {port!r} does not exist (available {direction} — {listing}); {missing_hint}")
