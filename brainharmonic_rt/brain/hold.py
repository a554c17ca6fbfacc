"""Keeping blinks and jaw clenches out of the brain state: touched channels hold their last clean powers.

Why hold rather than drop: a blink reaches every frontal channel at once. Dropping those channels would
empty the frontal group for two seconds (a window's length after each blink), and the instrument would
fall silent as if the electrodes had come off. Dropping only some channels would change which channels
make up the group mean, and the mean would jump with it. Holding each touched channel's band powers from
its last clean window keeps every group continuous: a blink reads as "nothing changed", which is the
truth about the brain. The normaliser sees the held values too, so artifacts never enter the baseline.
A channel touched before it was ever clean is left out for that window (like a bad channel).
"""

from __future__ import annotations

import numpy as np


class ArtifactHold:
    """Last clean band powers of each channel row, substituted for rows an artifact touched."""

    def __init__(self, n_rows: int, n_bands: int) -> None:
        self._clean = np.full((n_rows, n_bands), np.nan)
        self.held = 0  #: rows held so far (for telemetry)

    def apply(self, power: np.ndarray, good: np.ndarray, touched: dict[int, str]) -> list[str]:
        """Hold ``power`` rows (n_rows, n_bands) in ``touched`` (row → kind) in place; remember clean ones.

        Returns the artifact kind per row ("" when fresh). Rows without a clean past are set not ``good``.
        """
        kinds = [""] * power.shape[0]
        for row, kind in touched.items():
            if not good[row]:
                continue
            if np.isfinite(self._clean[row]).all():
                power[row] = self._clean[row]
                kinds[row] = kind
                self.held += 1
            else:
                good[row] = False
        fresh = good.copy()
        if touched:
            fresh[list(touched)] = False
        self._clean[fresh] = power[fresh]
        return kinds

    @staticmethod
    def group_kind(kinds: list[str], rows: np.ndarray) -> str:
        """The artifact kinds held in a group's rows, joined ("blink", "clench", "blink+clench" or "")."""
        return "+".join(sorted({kinds[r] for r in rows if kinds[r]}))
