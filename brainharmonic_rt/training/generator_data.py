"""The tokenised MIDI corpus for the generator: split by file, cached as one .npz.

Files are assigned to train / val / test by a hash of their path relative to the corpus root
(stable across machines and runs, never by track or segment, so no piece leaks across splits).
Style is the top folder (classical, jazz, motifs, videogames).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..music.tokens import build_tokenizer, save_tokenizer, tokenize_file

SPLITS = ("train", "val", "test")
MIDI_SUFFIXES = (".mid", ".midi")


def split_of(rel: str, val: float = 0.08, test: float = 0.08) -> str:
    """Split of a file from a hash of its relative path."""
    h = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test else ("val" if h < test + val else "train")


def midi_files(root: Path) -> list[Path]:
    """MIDI files under ``root`` (any case of .mid/.midi), sorted."""
    if not root.is_dir():
        raise DataError(f"MIDI folder {root} does not exist; pass --midi with the corpus folder.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)
    if not files:
        raise DataError(f"MIDI folder {root} holds no .mid/.midi files; pass --midi with the corpus folder.")
    return files


@dataclass
class Corpus:
    """Concatenated tracks. ``ids`` (n_tokens,) int16; per track: ``start``/``length`` into ids,
    ``program``, ``file`` (index into ``files``), ``split`` (index into SPLITS), ``style`` (index into
    ``styles``)."""

    ids: np.ndarray
    start: np.ndarray
    length: np.ndarray
    program: np.ndarray
    file: np.ndarray
    split: np.ndarray
    style: np.ndarray
    files: list[str]
    styles: list[str]

    def track(self, i: int) -> np.ndarray:
        return self.ids[self.start[i] : self.start[i] + self.length[i]]

    def tracks_in(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLITS.index(split))

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            ids=self.ids,
            start=self.start,
            length=self.length,
            program=self.program,
            file_idx=self.file,
            split=self.split,
            style=self.style,
            files=np.asarray(self.files),
            styles=np.asarray(self.styles),
        )

    @classmethod
    def load(cls, path: Path) -> Corpus:
        d = np.load(path)
        return cls(
            d["ids"],
            d["start"],
            d["length"],
            d["program"],
            d["file_idx"],
            d["split"],
            d["style"],
            [str(x) for x in d["files"]],
            [str(x) for x in d["styles"]],
        )


def build_corpus(root: Path, tokenizer_out: Path | None = None, limit: int | None = None) -> Corpus:
    """Tokenise every MIDI file under ``root``; write the tokenizer file when ``tokenizer_out``."""
    tok = build_tokenizer()
    if tokenizer_out is not None:
        tokenizer_out.parent.mkdir(parents=True, exist_ok=True)
        save_tokenizer(tok, tokenizer_out)
    files = midi_files(root)
    if limit is not None:
        files = files[:limit]
    styles = sorted({p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "" for p in files})
    chunks: list[np.ndarray] = []
    rows: list[tuple[int, int, int, int, int]] = []
    start = 0
    names: list[str] = []
    for fi, p in enumerate(files):
        rel = p.relative_to(root).as_posix()
        names.append(rel)
        style = styles.index(p.relative_to(root).parts[0] if "/" in rel else "")
        try:
            tracks = tokenize_file(tok, p)
        except DataError:
            continue
        for tr in tracks:
            chunks.append(tr.ids)
            rows.append((start, tr.ids.size, tr.program, fi, style))
            start += tr.ids.size
    if not rows:
        raise DataError(f"No track in {root} could be tokenised; check the files.")
    r = np.asarray(rows, dtype=np.int64)
    split = np.asarray([SPLITS.index(split_of(names[f])) for f in r[:, 3]], dtype=np.int8)
    return Corpus(np.concatenate(chunks), r[:, 0], r[:, 1], r[:, 2], r[:, 3], split, r[:, 4], names, styles)


def programs_seen(corpus: Corpus, min_tokens: int = 10_000) -> list[int]:
    """Programs with at least ``min_tokens`` training tokens, most tokens first (at least the top one)."""
    tr = corpus.tracks_in("train")
    totals = np.bincount(corpus.program[tr], weights=corpus.length[tr], minlength=129)
    order = [int(p) for p in np.argsort(-totals, kind="stable") if totals[p] > 0]
    return [p for p in order if totals[p] >= min_tokens] or order[:1]


def load_or_build(root: Path, cache: Path | None, tokenizer_out: Path | None = None) -> Corpus:
    """The corpus from ``cache`` when it exists, else tokenised (and cached)."""
    if cache is not None and cache.is_file():
        if tokenizer_out is not None and not tokenizer_out.is_file():
            save_tokenizer(build_tokenizer(), tokenizer_out)
        return Corpus.load(cache)
    corpus = build_corpus(root, tokenizer_out)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        corpus.save(cache)
    return corpus
