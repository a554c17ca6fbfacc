"""A small XDF 1.0 writer for tests, written from the format specification (not from any library).

File = ``b"XDF:"`` then chunks. Each chunk: a length-of-length byte (1, 4 or 8), the length (little-endian,
covering tag and content), a 2-byte tag, the content. Tags used here: 1 file header (XML), 2 stream
header (stream id + XML), 3 samples (stream id, sample count as a varlen number, then per sample a
timestamp flag byte (8 = a double follows) and the values), 4 clock offset (stream id, collection time,
offset value, both doubles), 6 stream footer (stream id + XML). String values are varlen length + UTF-8.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

_FORMATS = {"float32": "<f4", "double64": "<f8", "int16": "<i2", "int32": "<i4"}


def _varlen(n: int) -> bytes:
    if n < 256:
        return bytes([1]) + struct.pack("<B", n)
    if n < 2**32:
        return bytes([4]) + struct.pack("<I", n)
    return bytes([8]) + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


@dataclass
class XdfStream:
    """One stream to write. ``data``: (n_samples, n_channels) numbers, or a list of strings (markers)."""

    name: str
    type: str
    srate: float
    fmt: str  # float32, double64, int16, int32 or string
    data: np.ndarray | Sequence[str]
    stamps: np.ndarray
    labels: Sequence[str] = ()
    units: Sequence[str] = ()
    types: Sequence[str] = ()
    source_id: str = ""
    clock_offsets: Sequence[tuple[float, float]] = field(default_factory=list)

    @property
    def n_channels(self) -> int:
        return 1 if self.fmt == "string" else int(np.asarray(self.data).shape[1])

    def header_xml(self) -> str:
        chans = ""
        if self.labels:
            items = []
            for i, label in enumerate(self.labels):
                unit = f"<unit>{escape(self.units[i])}</unit>" if i < len(self.units) and self.units[i] else ""
                ctype = f"<type>{escape(self.types[i])}</type>" if i < len(self.types) and self.types[i] else ""
                items.append(f"<channel><label>{escape(label)}</label>{unit}{ctype}</channel>")
            chans = f"<desc><channels>{''.join(items)}</channels></desc>"
        return (
            '<?xml version="1.0"?><info>'
            f"<name>{escape(self.name)}</name><type>{escape(self.type)}</type>"
            f"<channel_count>{self.n_channels}</channel_count><nominal_srate>{self.srate:g}</nominal_srate>"
            f"<channel_format>{self.fmt}</channel_format><source_id>{escape(self.source_id)}</source_id>"
            f"<version>1.1</version><created_at>0</created_at><uid>test-{escape(self.name)}</uid>"
            f"<session_id>default</session_id><hostname>test</hostname>{chans}</info>"
        )

    def samples(self, stream_id: int, start: int, stop: int) -> bytes:
        out = [struct.pack("<I", stream_id), _varlen(stop - start)]
        for i in range(start, stop):
            out.append(b"\x08" + struct.pack("<d", float(self.stamps[i])))
            if self.fmt == "string":
                text = str(self.data[i]).encode()
                out.append(_varlen(len(text)) + text)
            else:
                out.append(np.asarray(self.data[i], dtype=_FORMATS[self.fmt]).tobytes())
        return b"".join(out)


def write_xdf(path: Path, streams: Sequence[XdfStream], *, chunk: int = 500) -> Path:
    """Write ``streams`` (samples interleaved in blocks of ``chunk``, as LabRecorder does)."""
    parts = [b"XDF:", _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>')]
    for sid, s in enumerate(streams, start=1):
        parts.append(_chunk(2, struct.pack("<I", sid) + s.header_xml().encode()))
    longest = max(len(s.stamps) for s in streams)
    for start in range(0, longest, chunk):
        for sid, s in enumerate(streams, start=1):
            stop = min(start + chunk, len(s.stamps))
            if start < stop:
                parts.append(_chunk(3, s.samples(sid, start, stop)))
    for sid, s in enumerate(streams, start=1):
        for when, offset in s.clock_offsets:
            parts.append(_chunk(4, struct.pack("<I", sid) + struct.pack("<dd", when, offset)))
        n = len(s.stamps)
        footer = (
            '<?xml version="1.0"?><info>'
            f"<first_timestamp>{float(s.stamps[0]) if n else 0:.6f}</first_timestamp>"
            f"<last_timestamp>{float(s.stamps[-1]) if n else 0:.6f}</last_timestamp>"
            f"<sample_count>{n}</sample_count></info>"
        )
        parts.append(_chunk(6, struct.pack("<I", sid) + footer.encode()))
    path.write_bytes(b"".join(parts))
    return path
