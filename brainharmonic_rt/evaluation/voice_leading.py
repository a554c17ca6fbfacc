"""Voice leading of a multi-track piece: parallel perfect intervals, voice crossing, wide leaps.

Voices are each track's *top line*: at every onset of a track its highest starting pitch, sounding
until the track's next onset or the note's end (drum tracks are left out). Then:

* **motions**: for every pair of voices, each time point at which either starts a note while both
  sound, compared with the previous such point of the pair; a motion is a change in which at least
  one voice moved. **Parallel perfect** motions move both voices in the same direction from a fifth
  to a fifth or from an octave/unison to an octave/unison (interval classes 7 → 7 or 0 → 0,
  compound intervals included). Reported per 100 motions.
* **crossing**: the share of onsets at which the starting voice is above a voice that is higher on
  average over the piece (or below a lower one) while both sound.
* **leaps**: the share of melodic moves (consecutive notes of one voice) wider than an octave.

Times are in beats (any unit works); :class:`~.evaluate.PieceNotes` is the input.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..music.arbiter import merge_veto_stats
from .music_metrics import TIME_EPS, PieceNotes


@dataclass(frozen=True, slots=True)
class VoiceLeading:
    motions: int
    parallel_perfect: int
    onsets: int
    crossings: int
    moves: int
    leaps: int

    @property
    def parallel_per_100(self) -> float:
        return 100.0 * self.parallel_perfect / self.motions if self.motions else float("nan")

    @property
    def crossing_share(self) -> float:
        return self.crossings / self.onsets if self.onsets else float("nan")

    @property
    def leap_share(self) -> float:
        return self.leaps / self.moves if self.moves else float("nan")

    def __add__(self, other: VoiceLeading) -> VoiceLeading:
        return VoiceLeading(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    def as_dict(self) -> dict[str, float]:
        return {
            **{k: float(v) for k, v in asdict(self).items()},
            "parallel_per_100": self.parallel_per_100,
            "crossing_share": self.crossing_share,
            "leap_share": self.leap_share,
        }


EMPTY = VoiceLeading(0, 0, 0, 0, 0, 0)


def top_lines(notes: PieceNotes) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per pitched track: (onset, end, pitch) of its top line, arrays of shape (n,), sorted by onset."""
    lines = []
    for tr in np.unique(notes.track[~notes.drum]):
        sel = (notes.track == tr) & ~notes.drum
        on, du, pi = notes.onset[sel], notes.duration[sel], notes.pitch[sel]
        order = np.lexsort((-pi, on))
        on, du, pi = on[order], du[order], pi[order]
        first = np.r_[True, np.diff(on) > TIME_EPS]
        on, du, pi = on[first], du[first], pi[first]
        end = np.minimum(on + du, np.r_[on[1:], np.inf])
        lines.append((on, end, pi))
    return lines


def _sounding(line: tuple[np.ndarray, np.ndarray, np.ndarray], t: np.ndarray) -> np.ndarray:
    """Pitch of ``line`` sounding at each time of ``t`` (-1 where silent)."""
    on, end, pi = line
    k = np.searchsorted(on, t + TIME_EPS, side="right") - 1
    ok = (k >= 0) & (end[np.maximum(k, 0)] > t + TIME_EPS)
    return np.where(ok, pi[np.maximum(k, 0)], -1)


def voice_leading(notes: PieceNotes) -> VoiceLeading:
    """Counts of motions, parallel perfect motions, onsets, crossings, moves and leaps over the piece."""
    lines = [li for li in top_lines(notes) if li[0].size]
    motions = parallel = crossings = onsets = moves = leaps = 0
    for _, _, pi in lines:
        d = np.abs(np.diff(pi))
        moves += d.size
        leaps += int((d > 12).sum())
    means = [float(li[2].mean()) for li in lines]
    for a, b in itertools.combinations(range(len(lines)), 2):
        t = np.unique(np.concatenate([lines[a][0], lines[b][0]]))
        pa, pb = _sounding(lines[a], t), _sounding(lines[b], t)
        both = (pa >= 0) & (pb >= 0)
        pa, pb = pa[both], pb[both]
        if pa.size < 2:
            continue
        da, db = np.diff(pa), np.diff(pb)
        moved = (da != 0) | (db != 0)
        motions += int(moved.sum())
        ic_prev, ic_new = np.abs(pa[:-1] - pb[:-1]) % 12, np.abs(pa[1:] - pb[1:]) % 12
        perfect = (ic_prev == ic_new) & np.isin(ic_new, (0, 7))
        parallel += int((perfect & (np.sign(da) == np.sign(db)) & (da != 0)).sum())
    for i, (on, _, pi) in enumerate(lines):
        onsets += on.size
        crossed = np.zeros(on.size, bool)
        for j, other in enumerate(lines):
            if j == i:
                continue
            q = _sounding(other, on)
            here = q >= 0
            if means[j] > means[i]:
                crossed |= here & (pi > q)
            elif means[j] < means[i]:
                crossed |= here & (pi < q)
        crossings += int(crossed.sum())
    return VoiceLeading(motions, parallel, onsets, crossings, moves, leaps)


def guard_summary(notes: PieceNotes, composer_stats: Mapping[str, Any]) -> list[str]:
    """What the model did, for a person (the demo summary): the arbiter's veto rate by reason and the
    voice-leading figures of the notes that sounded."""
    v = merge_veto_stats([composer_stats])
    vl = voice_leading(notes)
    if not composer_stats.get("arbiter", True):
        guard = "arbiter off: only the polyphony cap and the registers guarded the model"
    elif v["checked"]:
        reasons = ", ".join(f"{k} {100 * x:.1f} %" for k, x in v["by_reason"].items()) or "none"
        guard = (
            f"arbiter vetoed {v['refused']} of {v['checked']} sampled pitches ({100 * v['rate']:.1f} %: {reasons}); "
            f"{v['dropped']} notes dropped at admission"
        )
    else:
        guard = f"arbiter: {v['dropped']} notes dropped at admission (rule-based notes, nothing sampled)"
    return [
        guard,
        f"voice leading: {vl.parallel_per_100:.2f} parallel fifths/octaves per 100 two-voice motions, "
        f"{100 * vl.crossing_share:.1f} % of onsets crossed, {100 * vl.leap_share:.2f} % of moves leap over an octave",
    ]
