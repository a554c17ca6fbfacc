"""XDF recordings (LabRecorder) as MNE Raw objects, so ``render``, ``replay`` and ``embed`` read them like EDF.

pyxdf reads the file with its own clock handling: each stream's timestamps are moved onto the
recording computer's clock from the file's clock-offset measurements (``synchronize_clocks``), clock
resets are detected (``handle_clock_resets``) and the jitter of regularly sampled streams is removed
(``dejitter_timestamps``). After that:

* **the EEG stream** is the one named (or typed) by ``--xdf-stream``; otherwise the first stream typed
  EEG, otherwise the only regularly sampled numeric stream. Several candidates and no choice: one
  sentence listing them.
* **markers**: every string-valued or irregular stream becomes annotations (onset = marker time minus
  the EEG stream's first timestamp), so they reach the piano roll and ``replay``'s marker stream.
* **labels, types and units** come from the stream header (``desc/channels/channel``). Samples are
  turned into volts like every other file: µV, mV, V and nV are read from the unit (as text or as a
  power of ten, as mne-lsl writes it). A stream without units is taken as µV (what EEG amplifiers send
  over LSL) when its values are larger than a volt-scale EEG could be, else as volts; the log says which.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)

#: volts per unit of a channel's unit text
_VOLTS = {
    "v": 1.0,
    "volt": 1.0,
    "volts": 1.0,
    "0": 1.0,
    "mv": 1e-3,
    "millivolt": 1e-3,
    "millivolts": 1e-3,
    "-3": 1e-3,
    "uv": 1e-6,
    "µv": 1e-6,
    "μv": 1e-6,
    "microvolt": 1e-6,
    "microvolts": 1e-6,
    "-6": 1e-6,
    "nv": 1e-9,
    "nanovolt": 1e-9,
    "nanovolts": 1e-9,
    "-9": 1e-9,
}
#: XDF channel type → MNE channel type (anything else that is not EEG becomes misc)
_TYPES = {"eeg": "eeg", "ecg": "ecg", "eog": "eog", "emg": "emg", "stim": "stim", "trigger": "stim", "marker": "stim"}
#: a scalp EEG stored in volts has a median absolute value far below this
_VOLT_SCALE_LIMIT = 1e-2


def _first(d: dict[str, Any], key: str, default: str = "") -> str:
    v = d.get(key)
    if isinstance(v, list) and v:
        v = v[0]
    return default if v is None else str(v)


def _channels(info: dict[str, Any]) -> list[dict[str, Any]]:
    desc = info.get("desc")
    try:
        return list(desc[0]["channels"][0]["channel"])  # type: ignore[index]
    except (TypeError, KeyError, IndexError):
        return []


def _describe(s: dict[str, Any]) -> str:
    info = s["info"]
    rate = float(_first(info, "nominal_srate", "0") or 0)
    return (
        f"'{_first(info, 'name')}' (type {_first(info, 'type') or '-'}, {_first(info, 'channel_count')} ch, "
        f"{'irregular' if rate == 0 else f'{rate:g} Hz'}, {_first(info, 'channel_format')})"
    )


def _is_signal(s: dict[str, Any]) -> bool:
    info = s["info"]
    return _first(info, "channel_format") != "string" and float(_first(info, "nominal_srate", "0") or 0) > 0


def pick_stream(streams: list[dict[str, Any]], wanted: str | None, path: Path) -> dict[str, Any]:
    """The EEG stream of an XDF file (see the module notes); DataError naming the candidates otherwise."""
    listing = ", ".join(_describe(s) for s in streams) or "none"
    if wanted is not None:
        by_name = [s for s in streams if _first(s["info"], "name") == wanted]
        by_type = [s for s in streams if _first(s["info"], "type").casefold() == wanted.casefold()]
        matches = by_name or by_type
        if not matches:
            raise DataError(
                f"{path} has no stream named or typed '{wanted}'; its streams are {listing}: "
                "pass one of their names to --xdf-stream."
            )
        if not _is_signal(matches[0]):
            raise DataError(
                f"Stream {_describe(matches[0])} in {path} is not regularly sampled numeric data (a marker "
                f"stream?); pass an EEG stream to --xdf-stream (the streams are {listing})."
            )
        if len(matches) > 1:
            raise DataError(
                f"{len(matches)} streams in {path} match '{wanted}' ({', '.join(map(_describe, matches))}); "
                "pass a unique stream name to --xdf-stream."
            )
        return matches[0]
    signal = [s for s in streams if _is_signal(s)]
    eeg = [s for s in signal if _first(s["info"], "type").casefold() == "eeg"]
    if eeg:
        return eeg[0]
    if len(signal) == 1:
        return signal[0]
    if not signal:
        raise DataError(f"{path} holds no regularly sampled numeric stream (streams: {listing}); record the EEG too.")
    raise DataError(
        f"{path} holds {len(signal)} candidate signal streams and none is typed EEG "
        f"({', '.join(map(_describe, signal))}); choose one with --xdf-stream NAME."
    )


def _scale(units: list[str], data: np.ndarray, name: str) -> np.ndarray:
    """Volts per stored unit, per channel (see the module notes for streams without units)."""
    out = np.ones(data.shape[1])
    unknown = []
    for i, u in enumerate(units):
        v = _VOLTS.get(u.strip().lower())
        if v is None:
            unknown.append(i)
        else:
            out[i] = v
    if unknown:
        typical = float(np.nanmedian(np.abs(data[:, unknown]))) if data.size else 0.0
        guess = 1e-6 if typical > _VOLT_SCALE_LIMIT else 1.0
        out[unknown] = guess
        log.info(
            "XDF stream '%s': %d channel(s) without a voltage unit, read as %s (median |value| %.3g)",
            name,
            len(unknown),
            "µV" if guess == 1e-6 else "V",
            typical,
        )
    return out


def read_xdf(path: str | Path, stream: str | None = None) -> Any:
    """The EEG stream of an XDF file as a preloaded ``mne.io.RawArray`` in volts, with markers as annotations.

    Raises DataError (one sentence naming the file and the fix) for unreadable files, missing or
    ambiguous streams, and streams without samples.
    """
    import mne
    import pyxdf

    path = Path(path)
    quiet = logging.getLogger("pyxdf")  # its per-segment remarks are not for the person playing
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        streams, _header = pyxdf.load_xdf(
            str(path), synchronize_clocks=True, handle_clock_resets=True, dejitter_timestamps=True
        )
        if not streams:
            raise ValueError("no stream in it")
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise DataError(
            f"Could not read {path} as XDF ({detail}); the file may be truncated or not XDF: record it again "
            "with LabRecorder or convert it."
        ) from None
    finally:
        quiet.setLevel(level)
    chosen = pick_stream(streams, stream, path)
    info = chosen["info"]
    name = _first(info, "name", path.stem)
    data = np.asarray(chosen["time_series"], dtype=np.float64)
    stamps = np.asarray(chosen["time_stamps"], dtype=np.float64)
    n_ch = int(_first(info, "channel_count", "0") or 0)
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] != n_ch:
        raise DataError(f"Stream '{name}' in {path} holds no samples (shape {data.shape}); pass a recording with data.")
    sfreq = float(_first(info, "nominal_srate"))
    chans = _channels(info)[:n_ch]
    labels = [(_first(chans[i], "label") if i < len(chans) else "") or f"ch{i + 1}" for i in range(n_ch)]
    if len(set(labels)) != n_ch:  # duplicate labels: keep them apart
        labels = [f"{c}-{i + 1}" for i, c in enumerate(labels)]
    units = [_first(c, "unit") for c in chans] + [""] * (n_ch - len(chans))
    types = [_TYPES.get(_first(c, "type").strip().lower(), "eeg" if not _first(c, "type") else "misc") for c in chans]
    types += ["eeg"] * (n_ch - len(types))
    scale = _scale(units[:n_ch], data, name)
    with mne.utils.use_log_level("ERROR"):
        raw = mne.io.RawArray((data * scale).T, mne.create_info(labels, sfreq, types), verbose="error")
        t0 = float(stamps[0])
        onsets, texts = [], []
        duration = data.shape[0] / sfreq
        for s in streams:
            if s is chosen or _is_signal(s):
                continue
            for t, value in zip(s["time_stamps"], s["time_series"], strict=False):
                onset = float(t) - t0
                if 0 <= onset < duration:
                    onsets.append(onset)
                    texts.append(str(value[0] if isinstance(value, list | tuple | np.ndarray) else value))
        if onsets:
            raw.set_annotations(mne.Annotations(onsets, [0.0] * len(onsets), texts))
    return raw
