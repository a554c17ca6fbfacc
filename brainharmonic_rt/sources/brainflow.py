"""Live EEG straight from a headset through BrainFlow (``run --board NAME``), no LSL app needed.

BrainFlow talks to 30+ boards (OpenBCI Cyton/Ganglion, Muse over native BLE, g.tec Unicorn, Neurosity,
...) and has a ``synthetic`` board for hardware-free runs and a ``playback_file`` board that replays its
own recordings (``DataFilter.write_file``). The board's description (``BoardShim.get_board_descr``)
gives the sampling rate, which data rows are EEG (only those are used) and their names (a board without
names gets ``ch1..chN``: name them with ``--channels``). BrainFlow scales EEG to µV, so ``units`` is
``"uV"``.

Same contract as :class:`~brainharmonic_rt.sources.lsl.LSLSource`: a reader thread polls the board every
``POLL`` s (BrainFlow has no blocking read), hands each block to the event loop through the same
:class:`~.handoff.Handoff` (a queue bounded in seconds, oldest dropped), raises
:class:`~brainharmonic_rt.errors.StreamLostError` after ``stream.lost_after`` s without samples, and
:meth:`BrainFlowSource.reconnect` waits, retrying, until the board can be opened again.

Timestamps: BrainFlow stamps samples with the host's wall clock (``time.time()``) as they arrive (a
playback board restamps its file the same way). They are put on ``time.monotonic()``'s clock, as the
pipeline needs, with the offset of the least-delayed block over the last ``CLOCK_SPAN`` s, so a block
held up in a Bluetooth stack does not drag the clock along.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import difflib
import threading
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any, Self

import numpy as np

from ..config import BoardSettings, StreamSettings
from ..errors import ConfigError, StreamError, StreamLostError
from ..events import Chunk, SignalInfo
from .handoff import Handoff

POLL = 0.002  # s between polls of the board's ring buffer (BrainFlow has no blocking read)
RING = 45_000  # samples BrainFlow keeps between polls
CLOCK_SPAN = 10.0  # s over which the least-delayed block sets the clock offset
RETRY = 1.0  # s between attempts to reopen a board after a loss


def _brainflow() -> Any:
    """The brainflow module, imported on first use; a clear sentence when it cannot be."""
    try:
        with warnings.catch_warnings():
            # Its native library is found through pkg_resources on Python 3.11, which warns: load it now, quietly.
            warnings.simplefilter("ignore")
            import brainflow.board_shim as board_shim

            board_shim.BoardShim.get_version()
    except (ImportError, OSError) as exc:
        raise StreamError(
            f"BrainFlow cannot be imported ({exc}); install it with `pip install brainflow` "
            "(on Python 3.11 it also needs setuptools<81)."
        ) from None
    return board_shim


def board_names() -> list[str]:
    """Every board BrainFlow knows, as ``--board`` accepts them (lower case, without ``_BOARD``)."""
    ids = _brainflow().BoardIds
    return sorted(b.name.lower().removesuffix("_board") for b in ids if b.value >= -3)


def board_id(name: str) -> int:
    """A BrainFlow board id from ``synthetic``, ``muse_s``, ``CYTON_BOARD``, ``-1`` ...; ConfigError otherwise."""
    ids = _brainflow().BoardIds
    text = name.strip()
    if text.lstrip("-").isdigit():
        value = int(text)
        if value in {b.value for b in ids}:
            return value
    key = text.upper().replace("-", "_").replace(" ", "_")
    for candidate in (key, key + "_BOARD"):
        if candidate in ids.__members__:
            return int(ids[candidate].value)
    names = board_names()
    close = difflib.get_close_matches(text.lower(), names, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ConfigError(
        f"BrainFlow has no board '{name}'; {hint}it knows {len(names)} boards by their BoardIds names in lower "
        "case without _board, e.g. cyton, cyton_daisy, ganglion, muse_2, muse_s, unicorn, notion_2, or "
        "synthetic (no hardware needed)."
    )


def _descr(shim: Any, board: int) -> dict[str, Any]:
    return dict(shim.BoardShim.get_board_descr(board))


def describe(settings: BoardSettings) -> tuple[int, int, dict[str, Any]]:
    """(board id, id whose description applies, description). Playback and streaming boards describe
    themselves through the board that made the data (``master_board``)."""
    if settings.name is None:
        raise ConfigError("No BrainFlow board named; pass --board NAME (e.g. --board synthetic).")
    shim = _brainflow()
    bid = board_id(settings.name)
    ids = shim.BoardIds
    relay = {ids.PLAYBACK_FILE_BOARD.value, ids.STREAMING_BOARD.value}
    if bid in relay:
        if settings.master_board is None:
            raise ConfigError(
                f"Board '{settings.name}' replays data another board made; say which with --master-board NAME "
                "(e.g. --master-board synthetic)."
            )
        if bid == ids.PLAYBACK_FILE_BOARD.value and settings.file is None:
            raise ConfigError("The playback_file board needs the recording to replay: pass --file PATH.")
        described = board_id(settings.master_board)
    else:
        described = bid
    descr = _descr(shim, described)
    if not descr.get("eeg_channels"):
        raise ConfigError(
            f"BrainFlow board '{settings.name}' has no EEG channels ({descr.get('name', '?')}); choose an EEG board."
        )
    return bid, described, descr


def _params(settings: BoardSettings, master: int | None) -> Any:
    p = _brainflow().BrainFlowInputParams()
    for field, attr in (
        ("serial_port", "serial_port"),
        ("mac_address", "mac_address"),
        ("ip_address", "ip_address"),
        ("serial_number", "serial_number"),
        ("other_info", "other_info"),
    ):
        value = getattr(settings, field)
        if value is not None:
            setattr(p, attr, value)
    if settings.ip_port:
        p.ip_port = settings.ip_port
    if settings.timeout:
        p.timeout = settings.timeout
    if settings.file is not None:
        p.file = str(settings.file)
    if master is not None:
        p.master_board = master
    return p


def _where(settings: BoardSettings) -> str:
    parts = [
        f"{label} {value}"
        for label, value in (
            ("serial port", settings.serial_port),
            ("MAC", settings.mac_address),
            ("IP", settings.ip_address),
            ("serial number", settings.serial_number),
            ("file", settings.file),
        )
        if value
    ]
    return f" ({', '.join(parts)})" if parts else ""


def _open_failure(settings: BoardSettings, exc: BaseException) -> StreamError:
    """One sentence for a board that cannot be opened, by BrainFlow's exit code."""
    code = getattr(exc, "exit_code", None)
    codes = _brainflow().BrainFlowExitCodes
    board = f"BrainFlow board '{settings.name}'{_where(settings)}"
    fixes = {
        codes.UNABLE_TO_OPEN_PORT_ERROR.value: "could not open its port; check --serial-port (e.g. /dev/ttyUSB0, "
        "COM3) and that you may use it (on Linux: the dialout group)",
        codes.INVALID_ARGUMENTS_ERROR.value: "needs a connection parameter it was not given; pass --serial-port, "
        "--mac, --ip or --serial-number as the board requires",
        codes.BOARD_NOT_READY_ERROR.value: "is not ready; switch it on (and pair it) and try again",
        codes.BOARD_NOT_CREATED_ERROR.value: "could not be created; check the board name and parameters",
        codes.EMPTY_BUFFER_ERROR.value: "sends no data; switch it on and check the dongle",
    }
    fix = fixes.get(code) if code is not None else None
    detail = " ".join(str(exc).split())[:120]
    return StreamError(f"{board} {fix or f'could not be opened ({detail}); check it is on and connected'}.")


class _ClockMap:
    """Board stamps (wall clock) → ``time.monotonic()``: the offset of the least-delayed recent block."""

    def __init__(self, span: float = CLOCK_SPAN) -> None:
        self.span = span
        self._marks: collections.deque[tuple[float, float]] = collections.deque()  # (arrival, offset), offsets rising

    def offset(self, arrival: float, last_stamp: float) -> float:
        d = arrival - last_stamp
        while self._marks and self._marks[-1][1] >= d:
            self._marks.pop()
        self._marks.append((arrival, d))
        while self._marks[0][0] < arrival - self.span:
            self._marks.popleft()
        return self._marks[0][1]

    def reset(self) -> None:
        self._marks.clear()


class BrainFlowSource:
    """A BrainFlow board as a live :class:`~brainharmonic_rt.sources.base.Source` (see the module notes).

    Chunks carry the EEG rows, shape (n_eeg, n_samples) float64 in µV, and timestamps on the
    ``time.monotonic()`` clock.
    """

    def __init__(self, board: BoardSettings, stream: StreamSettings, *, max_queue_seconds: float = 5.0) -> None:
        self.settings = board
        self.stream = stream
        self.max_queue_seconds = max_queue_seconds
        self._info: SignalInfo | None = None
        self._entered = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handoff = Handoff()
        self._board: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._rate_marks: collections.deque[tuple[float, int]] = collections.deque(maxlen=12)
        self._clock = _ClockMap()
        self._impedance: dict[str, float] = {}
        self._n_samples = 0
        self._n_reconnects = 0
        self._rows: tuple[np.ndarray, int | None, np.ndarray | None] = (np.zeros(0, dtype=np.intp), None, None)

    @property
    def info(self) -> SignalInfo:
        if self._info is None:
            raise RuntimeError("BrainFlowSource.info is only known after `async with BrainFlowSource(...)`.")
        return self._info

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("A BrainFlowSource can be entered only once; create a new one.")
        self._entered = True
        self._loop = asyncio.get_running_loop()
        bid, described, descr = await asyncio.to_thread(describe, self.settings)
        eeg = [int(r) for r in descr["eeg_channels"]]
        names = [n.strip() for n in str(descr.get("eeg_names", "")).split(",") if n.strip()]
        if len(names) != len(eeg):
            names = [f"ch{i + 1}" for i in range(len(eeg))]
        resistance = [int(r) for r in descr.get("resistance_channels", [])]
        ts_row = descr.get("timestamp_channel")
        self._rows = (
            np.asarray(eeg, dtype=np.intp),
            None if ts_row is None else int(ts_row),
            np.asarray(resistance, dtype=np.intp) if len(resistance) == len(eeg) else None,
        )
        self._info = SignalInfo(
            name=str(descr.get("name", self.settings.name)),
            sfreq=float(descr["sampling_rate"]),
            ch_names=tuple(names),
            stype="EEG",
            source_id=f"brainflow:{self.settings.name}{_where(self.settings)}",
            units="uV",
        )
        self._board_id = bid
        self._master = described if described != bid else None
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True
        await self._close()

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Yield chunks as they arrive; raise StreamLostError when the board stops sending."""
        if not self._handoff.open or self._closed:
            raise RuntimeError("BrainFlowSource.chunks() needs an open source: use `async with BrainFlowSource(...)`.")
        async for chunk in self._handoff.chunks():  # an error stays in place until reconnect()
            yield chunk

    async def reconnect(self) -> None:
        """Release the board, then try to open it again every ``RETRY`` s (cancellable, forever)."""
        if not self._entered or self._closed:
            raise RuntimeError("BrainFlowSource.reconnect() needs an open source.")
        await self._close()
        while True:
            try:
                await self._open()
                break
            except StreamError:
                await asyncio.sleep(RETRY)
        self._n_reconnects += 1

    def stats(self) -> dict[str, Any]:
        """Counters for telemetry (as LSLSource), plus ``impedance`` per channel when the board reports it."""
        rate = 0.0
        marks = list(self._rate_marks)
        if len(marks) >= 2 and marks[-1][0] > marks[0][0]:
            rate = (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])
        out: dict[str, Any] = {
            "samples": self._n_samples,
            "chunks": self._handoff.n_chunks,
            "dropped_chunks": self._handoff.n_dropped,
            "reconnects": self._n_reconnects,
            "rate": rate,
            "queued_samples": self._handoff.queued_samples,
        }
        if self._impedance:
            out["impedance"] = dict(self._impedance)
        return out

    # -- the board -----------------------------------------------------------------------------

    def _prepare(self) -> Any:
        shim = _brainflow()
        shim.BoardShim.disable_board_logger()
        board = shim.BoardShim(self._board_id, _params(self.settings, self._master))
        try:
            board.prepare_session()
            board.start_stream(RING)
        except shim.BrainFlowError as exc:
            with contextlib.suppress(Exception):
                board.release_session()
            raise _open_failure(self.settings, exc) from None
        return board

    async def _open(self) -> None:
        board = await asyncio.to_thread(self._prepare)
        info = self.info
        self._board = board
        assert self._loop is not None
        self._handoff.reset(self._loop, round(self.max_queue_seconds * info.sfreq))
        self._rate_marks.clear()
        self._clock.reset()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._read, args=(board, self._stop), name=f"brainflow-{info.name}", daemon=True
        )
        self._thread.start()

    async def _close(self) -> None:
        self._stop.set()
        thread, board = self._thread, self._board
        self._thread = self._board = None
        if thread is not None:
            await asyncio.to_thread(thread.join, 2.0)
        if board is not None:
            await asyncio.to_thread(self._release, board)

    @staticmethod
    def _release(board: Any) -> None:
        with contextlib.suppress(Exception):
            board.stop_stream()
        with contextlib.suppress(Exception):
            board.release_session()

    # -- reader thread ---------------------------------------------------------------------------

    def _read(self, board: Any, stop: threading.Event) -> None:
        info = self.info
        eeg, ts_row, res_rows = self._rows
        lost_after = self.stream.lost_after
        last = time.monotonic()
        try:
            while not stop.is_set():
                if board.get_board_data_count() == 0:
                    now = time.monotonic()
                    if now - last > lost_after:
                        raise StreamLostError(
                            f"BrainFlow board '{self.settings.name}'{_where(self.settings)} sent no samples for "
                            f"{lost_after:g} s; check that it is on, charged and in range "
                            "(brainharmonic reconnects when it returns)."
                        )
                    stop.wait(POLL)
                    continue
                raw = board.get_board_data()
                now = time.monotonic()
                last = now
                n = raw.shape[1]
                data = np.ascontiguousarray(raw[eeg], dtype=np.float64)
                if ts_row is not None:
                    stamps = raw[ts_row].astype(np.float64)
                    stamps += self._clock.offset(now, float(stamps[-1]))
                else:
                    stamps = now - (n - 1 - np.arange(n)) / info.sfreq
                if res_rows is not None:
                    self._impedance = {c: float(v) for c, v in zip(info.ch_names, raw[res_rows, -1], strict=True)}
                self._n_samples += n
                if not self._rate_marks or now - self._rate_marks[-1][0] >= 0.5:
                    self._rate_marks.append((now, self._n_samples))
                self._handoff.put((data, stamps, now))
        except BaseException as exc:  # forwarded to the loop, never swallowed
            self._handoff.put(exc)


def add_board_arguments(p: Any) -> None:
    """``run``/``demo`` options for a BrainFlow board (see [board] in the config)."""
    g = p.add_argument_group("BrainFlow board (instead of an LSL stream; see [board] in the config)")
    g.add_argument("--board", metavar="NAME", help="BrainFlow board, e.g. synthetic, cyton, ganglion, muse_s, unicorn.")
    conn = g.add_mutually_exclusive_group()
    conn.add_argument("--serial-port", metavar="PORT", help="Serial port of the board's dongle.")
    conn.add_argument("--mac", metavar="ADDR", help="Bluetooth MAC address of the board.")
    conn.add_argument("--ip", metavar="ADDR", help="IP address of a Wi-Fi board.")
    g.add_argument("--ip-port", type=int, metavar="N", help="IP port of a Wi-Fi board.")
    g.add_argument("--serial-number", metavar="S", help="Serial number / name of the device (Muse, Unicorn, ...).")
    g.add_argument("--file", metavar="F", help="Recording for --board playback_file.")
    g.add_argument("--master-board", metavar="NAME", help="Board that made the --file recording.")
    g.add_argument("--other-info", metavar="S", help="Board-specific extra parameter.")


def board_overrides(args: Any) -> dict[str, Any]:
    """The [board] settings given on the command line."""
    return {
        "name": getattr(args, "board", None),
        "serial_port": getattr(args, "serial_port", None),
        "mac_address": getattr(args, "mac", None),
        "ip_address": getattr(args, "ip", None),
        "ip_port": getattr(args, "ip_port", None),
        "serial_number": getattr(args, "serial_number", None),
        "file": getattr(args, "file", None),
        "master_board": getattr(args, "master_board", None),
        "other_info": getattr(args, "other_info", None),
    }
