"""The multi-track corpus of the ensemble model: real ensemble music as monophonic lines on an eighth grid.

``brainharmonic train ensemble-corpus --out DIR`` reads music21's bundled corpus (it ships inside
the music21 wheel: Bach chorales, Palestrina, Monteverdi madrigals, string quartets, Trecento,
Essen / Ryan's Mammoth / O'Neill folk tunes) and the MIDI folder (``--midi``, piano-heavy
classical and jazz: each track split into its top, bottom and middle lines), converts every
piece once and writes ``DIR/ensemble-corpus.npz`` plus ``DIR/ensemble-corpus.json`` (the data
card's counts). Later runs reuse it unless ``--rebuild``.

Conversion (see :mod:`brainharmonic_rt.music.ensemble_grid` for the grid):

* each part → its top line (chords keep their highest note; ties merged; a note is cut at the next
  onset of its line); onsets quantised to eighths (two notes on one step: the first kept);
* time: pieces notated with a half-note or whole-note beat (x/2, x/1 meters: Palestrina, Trecento,
  some folk tunes) are read at double speed, so a half note is one beat as in modern transcriptions;
* key: music21's Krumhansl-Schmuckler estimate; the piece is transposed (by −6..+5 semitones) so
  the key's collection is C major / A minor, and the mode (major / minor centre) is kept;
* roles by mean pitch: lowest = bass, highest = melody, between = inner; MIDI middle lines =
  texture; programs from the part's instrument name (voices → 52 choir, violin 40, viola 41, cello
  42), else the source's default (fiddle tunes 40, sung folk songs 52), MIDI tracks their own;
* split by piece (sha1 of source + file + index in the file): 84 % train, 8 % val, 8 % test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..evaluation.music_metrics import PieceNotes
from ..music.ensemble_grid import LOW_PITCH, MAX_DUR, N_PITCH, N_POS, ROLES, STEPS_PER_BEAT

DEFAULT_DIR = Path.home() / ".cache" / "brainharmonic" / "ensemble-corpus"
DEFAULT_MIDI = Path(__file__).resolve().parents[3] / "shared" / "data" / "midi"
SPLITS = ("train", "val", "test")
MIN_NOTES = 16  # a line with fewer notes is dropped
MAX_VOICES = 6

#: music21 corpus folders → (source name, default program, licence note of the encodings)
SOURCES: dict[str, tuple[str, int, str]] = {
    "bach": ("bach", 52, "music21 corpus (BSD-licensed distribution; encodings by the music21 project / Humdrum)"),
    "palestrina": ("palestrina", 52, "kern encodings (c) 2000 John Miller, in music21 by permission"),
    "monteverdi": ("monteverdi", 52, "MusicXML encodings shipped with music21 (permission of the encoders)"),
    "trecento": ("trecento", 52, "Cuthbert's Trecento encodings shipped with music21 (permission of the encoder)"),
    "beethoven": ("quartets", 40, "MusicXML encodings shipped with music21 (permission of the encoders)"),
    "haydn": ("quartets", 40, "MusicXML encodings shipped with music21 (permission of the encoders)"),
    "mozart": ("quartets", 40, "MusicXML encodings shipped with music21 (permission of the encoders)"),
    "essenFolksong": ("essen", 52, "Essen Folksong Collection (EsAC) as ABC shipped with music21"),
    "ryansMammoth": ("ryans", 40, "Ryan's Mammoth Collection (1883, public domain) ABC shipped with music21"),
    "oneills1850": ("oneills", 40, "O'Neill's Music of Ireland (1903, public domain) ABC shipped with music21"),
}
MIDI_SOURCE = "midi"
MIDI_LICENCE = "DeepSymphony collection shipped with the Brainharmonic seed repository (../shared/data/midi)"
_SUFFIXES = {".mxl", ".xml", ".krn", ".abc", ".musicxml"}
_NAME_PROGRAMS = (
    ("violoncello", 42),
    ("cello", 42),
    ("viola", 41),
    ("violin", 40),
    ("piano", 0),
)
_VOCAL = (
    "soprano", "alto", "tenor", "bass", "cantus", "canto", "quinto", "basso", "sesto", "motetus", "triplum",
    "contratenor", "superius", "altus", "bassus", "discantus", "voice", "tenore",
)  # fmt: skip


def split_of(key: str) -> str:
    """Split of a piece from a hash of its identifier (stable across machines and runs)."""
    h = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < 0.08 else ("val" if h < 0.16 else "train")


@dataclass
class Line:
    """One monophonic line: onsets and lengths in grid steps, pitches (already transposed)."""

    onset: np.ndarray
    dur: np.ndarray
    pitch: np.ndarray
    program: int
    role: int = 0


@dataclass
class Piece:
    source: str
    name: str
    lines: list[Line]
    downbeats: np.ndarray  # grid steps of bar lines
    mode: int  # 0 major, 1 minor (after transposition: C major / A minor)
    transpose: int
    n_steps: int


def monophonic(onset: np.ndarray, dur: np.ndarray, pitch: np.ndarray) -> tuple[np.ndarray, ...]:
    """Quantised notes (steps) → one line: first note per step kept, each cut at the next onset, ≥ 1 step."""
    order = np.lexsort((-pitch, onset))
    onset, dur, pitch = onset[order], dur[order], pitch[order]
    keep = np.r_[True, np.diff(onset) > 0]
    onset, dur, pitch = onset[keep], dur[keep], pitch[keep]
    nxt = np.r_[onset[1:], np.iinfo(np.int64).max]
    dur = np.clip(np.minimum(dur, nxt - onset), 1, MAX_DUR)
    return onset, dur, pitch


def _quantise(on_q: np.ndarray, du_q: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Quarter lengths → grid steps (onset rounded, length rounded, at least 1)."""
    s = STEPS_PER_BEAT * scale
    on = np.round(on_q * s).astype(np.int64)
    end = np.round((on_q + du_q) * s).astype(np.int64)
    return on, np.maximum(end - on, 1)


def _program(part: Any, default: int) -> int:
    name = " ".join(str(x or "") for x in (part.partName, getattr(part.getInstrument(), "instrumentName", ""))).lower()
    for key, prog in _NAME_PROGRAMS:
        if key in name:
            return prog
    if any(v in name for v in _VOCAL):
        return 52
    return default


def assign_roles(lines: list[Line]) -> None:
    """Lowest mean pitch → bass, highest → melody, others inner; a single line is a melody."""
    if len(lines) == 1:
        lines[0].role = ROLES.index("melody")
        return
    order = np.argsort([float(np.mean(li.pitch)) for li in lines])
    for rank, i in enumerate(order):
        lines[i].role = ROLES.index("bass" if rank == 0 else "melody" if rank == len(lines) - 1 else "inner")


def transpose_to_c(tonic_pc: int, mode: str) -> int:
    """Semitones (−6..5) that bring a key's collection onto C major / A minor."""
    shift = (-(tonic_pc - (9 if mode == "minor" else 0))) % 12
    return shift - 12 if shift > 5 else shift


def _fit_range(lines: list[Line]) -> list[Line]:
    """Keep lines with enough notes; notes outside the model's pitch range are dropped."""
    out = []
    for li in lines:
        ok = (li.pitch >= LOW_PITCH) & (li.pitch < LOW_PITCH + N_PITCH)
        if ok.sum() >= MIN_NOTES:
            out.append(Line(li.onset[ok], li.dur[ok], li.pitch[ok], li.program, li.role))
    return out


def score_to_piece(score: Any, source: str, name: str, default_program: int) -> Piece | None:
    """A music21 score → a :class:`Piece` (None when it holds too little)."""
    from music21 import meter

    ts = score.recurse().getElementsByClass(meter.TimeSignature).first()
    scale = 0.5 if ts is not None and ts.denominator <= 2 else 1.0
    key = score.analyze("key")
    shift = transpose_to_c(key.tonic.pitchClass, key.mode)
    lines: list[Line] = []
    downbeats: list[float] = []
    for k, part in enumerate(score.parts):
        if k == 0:
            for m in part.getElementsByClass("Measure"):
                downbeats.append(float(m.offset) - float(getattr(m, "paddingLeft", 0.0) or 0.0))
        flat = part.stripTies().flatten()
        on, du, pi = [], [], []
        for n in flat.notes:
            q = float(n.quarterLength)
            if q <= 0:
                continue  # grace notes
            pitches = [p.midi for p in n.pitches]
            if not pitches:
                continue
            on.append(float(n.offset))
            du.append(q)
            pi.append(max(pitches) + shift)
        if len(on) < MIN_NOTES:
            continue
        o, d = _quantise(np.asarray(on), np.asarray(du), scale)
        o, d, p = monophonic(o, d, np.asarray(pi, np.int64))
        lines.append(Line(o, d, p, _program(part, default_program)))
    lines = _fit_range(lines)
    if not lines:
        return None
    if len(lines) > MAX_VOICES:  # keep the outer voices and the busiest inner ones
        lines.sort(key=lambda li: float(np.mean(li.pitch)))
        inner = sorted(lines[1:-1], key=lambda li: -li.onset.size)[: MAX_VOICES - 2]
        lines = [lines[0], *inner, lines[-1]]
    assign_roles(lines)
    steps = int(max(int((li.onset + li.dur).max()) for li in lines))
    db = np.unique(np.round(np.asarray(downbeats or [0.0]) * STEPS_PER_BEAT * scale).astype(np.int64))
    return Piece(source, name, lines, db, 1 if key.mode == "minor" else 0, shift, steps)


def midi_to_piece(path: Path, root: Path) -> Piece | None:
    """A MIDI file → top (melody), bottom (bass) and middle (texture) lines of its pitched tracks."""
    from symusic import Score

    from ..music.ensemble_grid import ROLES as R

    try:
        score: Any = Score(str(path))
    except Exception:
        return None
    tpq = float(score.ticks_per_quarter) or 480.0
    all_on, all_pi = [], []
    per_track = []
    for tr in score.tracks:
        if tr.is_drum or len(tr.notes) == 0:
            continue
        a = tr.notes.numpy()
        per_track.append((a["time"] / tpq, a["duration"] / tpq, a["pitch"].astype(np.int64), int(tr.program)))
        all_on.append(a["time"] / tpq)
        all_pi.append(a["pitch"].astype(np.int64))
    if not per_track:
        return None
    pcs = np.bincount(np.concatenate(all_pi) % 12, minlength=12).astype(float)
    tonic, mode = _key_of_histogram(pcs)
    shift = transpose_to_c(tonic, mode)
    lines: list[Line] = []
    for on_q, du_q, pi, prog in per_track:
        o, d = _quantise(on_q, du_q, 1.0)
        pi = pi + shift
        order = np.lexsort((pi, o))
        o, d, pi = o[order], d[order], pi[order]
        starts = np.r_[0, np.flatnonzero(np.diff(o) > 0) + 1]
        ends = np.r_[starts[1:], o.size]
        top, bottom, middle = [], [], []
        for a, b in zip(starts, ends, strict=True):
            top.append(b - 1)
            if b - a >= 2:
                bottom.append(a)
            if b - a >= 3:
                middle.append(b - 2)
        for idx, role in ((top, "melody"), (bottom, "bass"), (middle, "texture")):
            if len(idx) >= MIN_NOTES:
                ii = np.asarray(idx)
                lo, ld, lp = monophonic(o[ii], d[ii], pi[ii])
                lines.append(Line(lo, ld, lp, prog, R.index(role)))
    lines = _fit_range(lines)[:MAX_VOICES]
    if not lines:
        return None
    steps = int(max(int((li.onset + li.dur).max()) for li in lines))
    bar = 4 * STEPS_PER_BEAT  # MIDI files: 4/4 from the start (most of this corpus)
    return Piece(
        MIDI_SOURCE,
        path.relative_to(root).as_posix(),
        lines,
        np.arange(0, steps + bar, bar),
        1 if mode == "minor" else 0,
        shift,
        steps,
    )


_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def _key_of_histogram(pcs: np.ndarray) -> tuple[int, str]:
    """Krumhansl-Kessler key estimate of a pitch-class histogram: (tonic pc, 'major' | 'minor')."""
    best = (-2.0, 0, "major")
    for mode, prof in (("major", _MAJOR_PROFILE), ("minor", _MINOR_PROFILE)):
        for t in range(12):
            r = float(np.corrcoef(pcs, np.roll(prof, t))[0, 1]) if pcs.std() > 0 else 0.0
            if r > best[0]:
                best = (r, t, mode)
    return best[1], best[2]


def music21_files(corpus_root: Path, folders: Sequence[str] = tuple(SOURCES)) -> list[tuple[str, Path]]:
    """(folder, file) of every score of the sources (music21 corpus folders), sorted."""
    out = []
    for folder in folders:
        base = corpus_root / folder
        if base.is_dir():
            out += [(folder, p) for p in sorted(base.rglob("*")) if p.suffix.lower() in _SUFFIXES]
    return out


@dataclass
class CorpusArrays:
    """Every piece flattened. Per note: ``note_line`` (line index), onset, dur, pitch. Per line:
    ``line_piece``, role, program. Per piece: source (index into ``sources``), mode, n_steps, split,
    ``name``, and its downbeats (``db_start`` into ``downbeats``)."""

    note_line: np.ndarray
    onset: np.ndarray
    dur: np.ndarray
    pitch: np.ndarray
    line_piece: np.ndarray
    role: np.ndarray
    program: np.ndarray
    piece_source: np.ndarray
    mode: np.ndarray
    n_steps: np.ndarray
    split: np.ndarray
    downbeats: np.ndarray
    db_start: np.ndarray
    names: list[str]
    sources: list[str]

    @classmethod
    def of(cls, pieces: list[Piece]) -> CorpusArrays:
        sources = sorted({p.source for p in pieces})
        nl, on, du, pi, lp, ro, pr, db, dbs = [], [], [], [], [], [], [], [], [0]
        line = 0
        for k, p in enumerate(pieces):
            for li in p.lines:
                nl.append(np.full(li.onset.size, line, np.int32))
                on.append(li.onset)
                du.append(li.dur)
                pi.append(li.pitch)
                lp.append(k)
                ro.append(li.role)
                pr.append(li.program)
                line += 1
            db.append(p.downbeats)
            dbs.append(dbs[-1] + p.downbeats.size)
        return cls(
            np.concatenate(nl),
            np.concatenate(on).astype(np.int32),
            np.concatenate(du).astype(np.int16),
            np.concatenate(pi).astype(np.int16),
            np.asarray(lp, np.int32),
            np.asarray(ro, np.int8),
            np.asarray(pr, np.int16),
            np.asarray([sources.index(p.source) for p in pieces], np.int8),
            np.asarray([p.mode for p in pieces], np.int8),
            np.asarray([p.n_steps for p in pieces], np.int32),
            np.asarray([SPLITS.index(split_of(f"{p.source}/{p.name}")) for p in pieces], np.int8),
            np.concatenate(db).astype(np.int32),
            np.asarray(dbs, np.int64),
            [f"{p.source}/{p.name}" for p in pieces],
            sources,
        )

    def save(self, path: Path) -> None:
        d: dict[str, Any] = {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        d |= {"names": np.asarray(self.names), "sources": np.asarray(self.sources)}
        np.savez_compressed(path, **d)

    @classmethod
    def load(cls, path: Path) -> CorpusArrays:
        if not path.is_file():
            raise DataError(
                f"Ensemble corpus {path} does not exist; build it with `brainharmonic train ensemble-corpus`."
            )
        d = np.load(path)
        kw = {k: d[k] for k in d.files if k not in ("names", "sources")}
        return cls(**kw, names=[str(x) for x in d["names"]], sources=[str(x) for x in d["sources"]])

    def pieces_in(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLITS.index(split))

    def piece_lines(self, k: int) -> np.ndarray:
        return np.flatnonzero(self.line_piece == k)

    def line_notes(self, line: int) -> slice:
        """The notes of one line (notes are stored line by line, in line order)."""
        if not hasattr(self, "_line_start"):
            counts = np.bincount(self.note_line, minlength=self.line_piece.size)
            self._line_start = np.r_[0, np.cumsum(counts)]
        return slice(int(self._line_start[line]), int(self._line_start[line + 1]))

    def piece_downbeats(self, k: int) -> np.ndarray:
        return self.downbeats[self.db_start[k] : self.db_start[k + 1]]


def bar_positions(downbeats: np.ndarray, n_steps: int) -> np.ndarray:
    """Position of every grid step in its bar (n_steps,), clipped to N_POS − 1 (0 before the first bar line)."""
    pos = np.arange(n_steps, dtype=np.int64)
    db = np.sort(downbeats[(downbeats >= 0) & (downbeats < n_steps)])
    if db.size == 0:
        return pos % (4 * STEPS_PER_BEAT)
    last = np.searchsorted(db, pos, side="right") - 1
    base = np.where(last >= 0, db[np.maximum(last, 0)], db[0] - 4 * STEPS_PER_BEAT * ((db[0] - pos) // 8 + 1))
    return np.clip(pos - base, 0, N_POS - 1)


def data_card(c: CorpusArrays, seconds: float, failures: dict[str, int]) -> dict[str, Any]:
    """Counts per source and split, voices per piece, roles and programs, licences."""
    out: dict[str, Any] = {"build_seconds": round(seconds, 1), "sources": {}}
    voices = np.bincount(c.line_piece, minlength=c.n_steps.size)
    for si, s in enumerate(c.sources):
        pk = np.flatnonzero(c.piece_source == si)
        lines = np.flatnonzero(np.isin(c.line_piece, pk))
        notes = int(np.isin(c.note_line, lines).sum())
        licence = MIDI_LICENCE if s == MIDI_SOURCE else next(v[2] for v in SOURCES.values() if v[0] == s)
        out["sources"][s] = {
            "pieces": int(pk.size),
            "split": {sp: int((c.split[pk] == i).sum()) for i, sp in enumerate(SPLITS)},
            "voices_per_piece": {str(k): int(v) for k, v in sorted(Counter(voices[pk].tolist()).items())},
            "lines": int(lines.size),
            "notes": notes,
            "beats": int(c.n_steps[pk].sum() // STEPS_PER_BEAT),
            "roles": {ROLES[k]: int(v) for k, v in sorted(Counter(c.role[lines].tolist()).items())},
            "programs": {str(k): int(v) for k, v in Counter(c.program[lines].tolist()).most_common(6)},
            "minor_share": round(float(c.mode[pk].mean()), 3) if pk.size else 0.0,
            "failed_to_parse": failures.get(s, 0),
            "licence": licence,
        }
    return out


def build(
    corpus_root: Path,
    midi: Path | None,
    limit: int | None = None,
    progress: bool = True,
    folders: Sequence[str] = tuple(SOURCES),
) -> tuple[CorpusArrays, dict[str, Any]]:
    """Convert every piece (``limit``: at most this many files per source, and scores per file, for tests)."""
    import warnings

    from music21 import converter, environment, stream

    environment.UserSettings  # noqa: B018  (music21 reads its settings lazily; nothing to configure)
    warnings.filterwarnings("ignore")
    t0 = time.monotonic()
    pieces: list[Piece] = []
    failures: Counter[str] = Counter()
    per_folder: Counter[str] = Counter()
    files = music21_files(corpus_root, folders)
    for i, (folder, path) in enumerate(files):
        source, program, _ = SOURCES[folder]
        if limit is not None and per_folder[folder] >= limit:
            continue
        per_folder[folder] += 1
        rel = path.relative_to(corpus_root / folder).as_posix()
        try:
            parsed = converter.parse(str(path))
            scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
            scores = scores[:limit] if limit is not None else scores
        except Exception:
            failures[source] += 1
            continue
        for j, sc in enumerate(scores):
            try:
                piece = score_to_piece(sc, source, f"{rel}#{j}" if len(scores) > 1 else rel, program)
            except Exception:
                failures[source] += 1
                continue
            if piece is not None:
                pieces.append(piece)
        if progress and i % 100 == 0:
            print(f"{i}/{len(files)} files, {len(pieces)} pieces, {time.monotonic() - t0:.0f} s", flush=True)
    if midi is not None:
        from .generator_data import midi_files

        mf = midi_files(midi)
        for path in mf[:limit] if limit is not None else mf:
            piece = midi_to_piece(path, midi)
            if piece is None:
                failures[MIDI_SOURCE] += 1
            else:
                pieces.append(piece)
    if not pieces:
        raise DataError(f"No piece could be converted from {corpus_root} or {midi}; check the music21 install.")
    arrays = CorpusArrays.of(pieces)
    return arrays, data_card(arrays, time.monotonic() - t0, dict(failures))


def music21_corpus_root() -> Path:
    try:
        import music21
    except ImportError:
        raise DataError("Building the ensemble corpus needs music21; install the [train] extra.") from None
    root = Path(music21.__file__).parent / "corpus"
    if not (root / "bach").is_dir():
        raise DataError(f"music21's bundled corpus is missing under {root}; reinstall music21 from its wheel.")
    return root


def add_corpus_args(p: argparse.ArgumentParser) -> None:
    """Options of ``brainharmonic train ensemble-corpus``."""
    p.add_argument(
        "--out", type=Path, default=DEFAULT_DIR, help="folder for ensemble-corpus.npz/.json (outside the repo)"
    )
    p.add_argument("--midi", type=Path, default=DEFAULT_MIDI, help="MIDI folder to add (e.g. ../shared/data/midi)")
    p.add_argument("--no-midi", action="store_true", help="only music21's corpus")
    p.add_argument("--limit", type=int, default=None, help="at most N files per source (quick runs, tests)")
    p.add_argument("--rebuild", action="store_true", help="convert again even if the cache exists")
    p.add_argument(
        "--sources", default=",".join(SOURCES), help="music21 corpus folders to read (comma-separated; default all)"
    )


def corpus_paths(folder: Path) -> tuple[Path, Path]:
    return folder / "ensemble-corpus.npz", folder / "ensemble-corpus.json"


def build_corpus_command(args: argparse.Namespace) -> int:
    """``brainharmonic train ensemble-corpus``: convert once, write the arrays and the data card's counts."""
    npz, card = corpus_paths(args.out)
    if npz.is_file() and card.is_file() and not args.rebuild:
        print(f"{npz} exists (pass --rebuild to convert again)")
        print(card.read_text())
        return 0
    midi = None if args.no_midi else args.midi
    if midi is not None and not midi.is_dir():
        raise DataError(f"MIDI folder {midi} does not exist; pass --midi DIR or --no-midi.")
    folders = [f.strip() for f in args.sources.split(",") if f.strip()]
    unknown = sorted(set(folders) - set(SOURCES))
    if unknown:
        raise DataError(f"--sources names unknown music21 folders {unknown}; use some of {', '.join(SOURCES)}.")
    arrays, info = build(music21_corpus_root(), midi, args.limit, folders=folders)
    args.out.mkdir(parents=True, exist_ok=True)
    arrays.save(npz)
    card.write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    print(f"wrote {npz} ({arrays.n_steps.size} pieces, {arrays.line_piece.size} lines)")
    return 0


def piece_notes(c: CorpusArrays, k: int) -> PieceNotes:
    """Piece ``k`` as :class:`~brainharmonic_rt.evaluation.music_metrics.PieceNotes` in beats, one track per line."""
    lines = c.piece_lines(k)
    sel = np.r_[tuple(c.line_notes(int(li)) for li in lines)] if lines.size else np.zeros(0, np.int64)
    return PieceNotes.build(
        c.onset[sel] / STEPS_PER_BEAT,
        c.dur[sel] / STEPS_PER_BEAT,
        c.pitch[sel].astype(np.int64),
        np.zeros(sel.size, bool),
        c.note_line[sel].astype(np.int64),
    )
