"""The web page and its API: see the brain and the ensemble live, steer them (``run --web``)."""
