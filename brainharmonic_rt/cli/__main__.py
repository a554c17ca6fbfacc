"""``python -m brainharmonic_rt.cli``."""

import sys

from . import main

sys.exit(main())
