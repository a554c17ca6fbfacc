"""The two private parts of mne-lsl we use, in one place (``tests/test_mne_lsl_private.py`` notices a change).

* ``LostError``: what a pull raises once the outlet is gone. mne-lsl 1.14 raises it from
  ``mne_lsl.lsl._utils`` and exports it nowhere public; catching ``Exception`` instead would also
  swallow real faults.
* ``destroy``: ``StreamInlet._del`` / ``StreamOutlet._del`` free the liblsl object now. The public way is
  to drop the last reference and let ``__del__`` run, which happens at the garbage collector's leisure:
  a replayed stream would stay visible on the network, and an inlet would keep its connection, for as
  long as a reference cycle holds it.
"""

from __future__ import annotations

from typing import Any

from mne_lsl.lsl._utils import LostError

__all__ = ["LostError", "destroy"]


def destroy(obj: Any) -> None:
    """Free an mne-lsl ``StreamInlet`` or ``StreamOutlet`` now (idempotent)."""
    obj._del()
