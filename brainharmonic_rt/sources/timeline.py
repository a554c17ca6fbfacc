"""Timestamps of a live stream, checked against this machine's clock before anyone downstream sees them.

Why: the pipeline starts the music at the first sample's timestamp and plays each window's notes at
``origin + (stamp - t0) + lookahead`` on ``time.monotonic()`` (which is LSL's ``local_clock()``). A
source whose clock jumps would stop the music or make every note late: a device that resets its clock
on reconnect (timestamps step back 30 s: nothing plays for 30 s), a looping player that restamps a
whole pass in the past (a burst of old samples), a relay that resends what it already sent, a clock
far off ours. So a timestamp is only believed where it agrees with the sample's arrival here.

Per block of samples pulled together at ``arrival`` (``time.monotonic()``), the source's stamps are
shifted by an ``offset`` (0 until a fault) and then:

* **overlap** — a sample more than ``jitter`` older than the newest stamp already seen repeats time
  that was covered (a resend): it and the samples after it are dropped until the stream passes its
  newest stamp again; so is a sample whose stamp equals one of the last ``jitter`` seconds' (a
  duplicate). Other small overlaps are sender jitter (a late push stamped late): those samples are
  kept and moved just after their predecessor.
* **jump back** — a block wholly behind the newest stamp *and* older than ``late`` on arrival is a
  clock reset: the timeline is re-anchored (the offset changes) so the block continues it.
* **jump forward** — a block whose newest sample lies more than ``early`` ahead of its arrival:
  re-anchored the same way (a sample cannot come from the future).
* **lag** — stamps that stay more than ``late`` behind arrival for ``confirm`` seconds (a clock off
  ours): re-anchored onto arrival. A shorter lag is a network stall catching up, and kept.

Re-anchoring puts the block's newest sample at ``last + n / sfreq`` (continuous), or at its arrival
where that would lie in the future or more than ``late`` in the past (samples really were lost).
Output stamps are strictly increasing and never more than ``early`` ahead of arrival. Samples that
would land beyond that are one of two things, told apart by counting: a sender catching up after a
stall (it pushes its backlog back to back, each chunk stamped when pushed: the samples are real and
real time allowed them) is **squeezed** in under the ceiling, every sample kept; a burst of more
samples than real time can produce (a looping player restamping a whole pass) is **cut** there. The
count is a budget refilled at the nominal rate by arrival time, holding at most ``burst`` seconds.
Each kind is counted; :meth:`Timeline.admit` returns the first occurrence of each kind as one sentence
for the log.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

#: Seconds a sample may be older than the newest already seen and still count as sender jitter.
JITTER = 0.1
#: Seconds behind its arrival beyond which a stamp is stale.
LATE = 0.5
#: Seconds ahead of its arrival beyond which a stamp is impossible.
EARLY = 0.1
#: Seconds a lag beyond ``LATE`` must last before the timeline is moved onto arrival.
CONFIRM = 1.0
#: Seconds of samples a sender may deliver beyond real time at once (catching up after a stall) and keep.
BURST = 1.0


@dataclass
class TimelineCounts:
    """What the timeline corrected, for telemetry (``LSLSource.stats()``)."""

    overlap_samples: int = 0  #: dropped: they repeated covered time or exceeded real time
    squeezed_samples: int = 0  #: kept, stamps squeezed under the ceiling: a sender catching up after a stall
    jumps_back: int = 0  #: re-anchorings after the source clock stepped back (episodes)
    jumps_forward: int = 0  #: re-anchorings after it stepped forward (episodes)
    lag_reanchors: int = 0  #: re-anchorings onto arrival after a lasting lag
    told: set[str] = field(default_factory=set)  #: kinds already said in the log


class Timeline:
    """Turns a stream's timestamps into a continuous, strictly increasing timeline on the local clock.

    Parameters
    ----------
    sfreq : nominal sampling rate (Hz) of the stream.
    name : the stream's name, for the log sentences.
    jitter, late, early, confirm : seconds; see the module docstring.
    """

    def __init__(
        self,
        sfreq: float,
        name: str = "",
        *,
        jitter: float = JITTER,
        late: float = LATE,
        early: float = EARLY,
        confirm: float = CONFIRM,
        burst: float = BURST,
    ) -> None:
        self.dt = 1.0 / sfreq
        self.name = name
        self.jitter, self.late, self.early, self.confirm = jitter, late, early, confirm
        self.offset = 0.0  #: seconds added to the source's stamps
        self.counts = TimelineCounts()
        self._last: float | None = None  # newest output stamp
        self._newest = -np.inf  # newest shifted source stamp seen
        self._overlapping = False
        self._recent: collections.deque[np.ndarray] = collections.deque()  # source stamps of the last blocks
        self._n_recent = 0
        self._max_recent = max(1, round(jitter * sfreq))
        self._late_since: float | None = None
        self._late_min = np.inf
        self._episode_end = -np.inf  # arrival until which a further re-anchoring is the same episode
        self._capacity = burst * sfreq
        self._budget = self._capacity  # samples real time allows beyond those delivered (see the module notes)
        self._budget_at: float | None = None

    def admit(self, stamps: np.ndarray, arrival: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Check one block.

        stamps : array of shape (n,), the source's timestamps (s, LSL clock after clock sync).
        arrival : ``time.monotonic()`` when the block arrived.

        Returns ``keep`` (bool array of shape (n,): which samples go on), their timestamps (shape
        (keep.sum(),), strictly increasing, continuing the previous blocks) and the sentences to log
        (each kind of fault once per timeline).
        """
        said: list[str] = []
        c = stamps + self.offset
        if self._last is None:
            if c[-1] > arrival + self.early:
                self._shift(arrival - stamps[-1], arrival, "forward", c[-1] - arrival, said)
                c = stamps + self.offset
        else:
            if c[-1] > arrival + self.early:
                self._reanchor(stamps, arrival, "forward", c[-1] - arrival, said)
                c = stamps + self.offset
            elif c[-1] < self._newest - self.jitter and arrival - c[-1] > self.late:
                self._reanchor(stamps, arrival, "back", self._newest - c[-1], said)
                c = stamps + self.offset
        c = self._follow_lag(stamps, c, arrival, said)
        if self._last is not None and not self._overlapping and c[0] > self._last and np.all(np.diff(c) > 0):
            keep = np.ones(c.size, dtype=bool)  # the common case: nothing to correct
            out = c
            self._newest = max(self._newest, float(c[-1]))
        else:
            keep, out = self._correct(stamps, c, said)
        self._remember(stamps)
        ceiling = arrival + self.early
        if self._budget_at is None:  # the first block: the backlog read on subscribing came in real time too
            self._budget = self._capacity + max(0.0, arrival - float(c[0])) / self.dt
        else:
            self._budget = min(self._capacity, self._budget + (arrival - self._budget_at) / self.dt)
        self._budget_at = arrival
        if out.size and out[-1] > ceiling:
            keep, out = self._fit(keep, out, ceiling, said)
        self._budget = max(-self._capacity, self._budget - out.size)
        if out.size:
            self._last = float(out[-1])
        return keep, out, said

    def _fit(self, keep: np.ndarray, out: np.ndarray, ceiling: float, said: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Samples stamped beyond ``ceiling``: squeezed under it if real time allowed them, else cut."""
        fits = out <= ceiling
        over = int((~fits).sum())
        floor = float(out[fits][-1]) if fits.any() else (self._last if self._last is not None else ceiling - self.early)
        top = ceiling - self.early if floor < ceiling - self.early else ceiling - 1e-9  # the newest arrived now
        if over <= self._budget - fits.sum() and top - floor > over * 1e-8:  # catching up: every sample is real
            out = out.copy()
            out[~fits] = np.linspace(floor, top, over + 1)[1:]
            self.counts.squeezed_samples += over
            self._say("squeezed", said)
            return keep, out
        keep[np.flatnonzero(keep)[~fits]] = False  # more samples than real time: keep the oldest up to now
        self.counts.overlap_samples += over
        self._say("overlap", said)
        return keep, out[fits]

    # -- corrections ----------------------------------------------------------------------------
    def _remember(self, stamps: np.ndarray) -> None:
        """Keep the source stamps of the last ``jitter`` seconds (duplicates are looked up there)."""
        self._recent.append(stamps)
        self._n_recent += stamps.size
        while len(self._recent) > 1 and self._n_recent - self._recent[0].size >= self._max_recent:
            self._n_recent -= self._recent.popleft().size

    def _correct(self, stamps: np.ndarray, c: np.ndarray, said: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Sample by sample: drop overlap and duplicates, move jittered samples just after their predecessor."""
        seen = set(np.concatenate(self._recent).tolist()) if self._recent else set()
        keep = np.ones(c.size, dtype=bool)
        out = np.empty(c.size)
        newest = self._newest
        last = -np.inf if self._last is None else self._last
        step = self.dt / 2  # a moved sample sits half a period after its predecessor
        k = 0
        dropped = 0
        for i, (si, ci) in enumerate(zip(stamps.tolist(), c.tolist(), strict=True)):
            duplicate = si in seen
            seen.add(si)
            if ci <= newest:
                if self._overlapping or duplicate or ci < newest - self.jitter:
                    self._overlapping = True
                    keep[i] = False
                    dropped += 1
                    continue
            else:
                self._overlapping = False
                newest = ci
            last = max(ci, last + step)
            out[k] = last
            k += 1
        self._newest = newest
        if dropped:
            self.counts.overlap_samples += dropped
            self._say("overlap", said)
        return keep, out[:k]

    def _follow_lag(self, stamps: np.ndarray, c: np.ndarray, arrival: float, said: list[str]) -> np.ndarray:
        """Move onto arrival once stamps have lagged it by more than ``late`` for ``confirm`` seconds."""
        lag = arrival - float(c[-1])
        if lag <= self.late:
            self._late_since = None
            return c
        if self._late_since is None:
            self._late_since, self._late_min = arrival, lag
            return c
        self._late_min = min(self._late_min, lag)
        if arrival - self._late_since < self.confirm:
            return c
        self._shift(self.offset + self._late_min, arrival, "lag", self._late_min, said)
        self._late_since = None
        return stamps + self.offset

    def _reanchor(self, stamps: np.ndarray, arrival: float, kind: str, size: float, said: list[str]) -> None:
        """Shift the source clock so this block continues the timeline (never ahead of arrival)."""
        assert self._last is not None
        end = self._last + stamps.size * self.dt
        if not arrival - self.late <= end <= arrival:
            end = arrival
        self._shift(end - stamps[-1], arrival, kind, size, said)
        self._overlapping = False
        self._late_since = None

    def _shift(self, offset: float, arrival: float, kind: str, size: float, said: list[str]) -> None:
        self.offset = float(offset)
        if arrival >= self._episode_end:  # a burst of faulty blocks is one episode, counted (and said) once
            if kind == "back":
                self.counts.jumps_back += 1
            elif kind == "forward":
                self.counts.jumps_forward += 1
            else:
                self.counts.lag_reanchors += 1
            self._say(kind, said, size)
        self._episode_end = arrival + self.confirm

    def _say(self, kind: str, said: list[str], size: float = 0.0) -> None:
        if kind in self.counts.told:
            return
        self.counts.told.add(kind)
        stream = f"LSL stream '{self.name}'"
        said.append(
            {
                "overlap": f"{stream} sent samples whose timestamps repeat time it had already covered (a resend, "
                "duplicates) or more samples than real time allows; they are dropped and counted "
                "(overlap_samples) so the music keeps time.",
                "squeezed": f"{stream} delivered a backlog faster than real time (a sender catching up after a "
                "stall); every sample is kept, their timestamps squeezed up to now (counted as squeezed_samples).",
                "back": f"The timestamps of {stream} jumped back {size:.3g} s (was its clock reset?); the samples are "
                "re-anchored to continue the session's timeline, so the music keeps time (counted as jumps_back).",
                "forward": f"The timestamps of {stream} lie {size:.3g} s ahead of this machine's clock; the samples "
                "are re-anchored to continue the session's timeline, so the music keeps time (counted as "
                "jumps_forward).",
                "lag": f"The timestamps of {stream} stay {size:.3g} s behind this machine's clock (is its clock "
                "synchronised?); the timeline is moved onto arrival so notes are not late (counted as "
                "lag_reanchors).",
            }[kind]
        )
