"""Every module of the package imports.

mypy runs with ``ignore_missing_imports`` (many dependencies ship no stubs), which also hides an import of
one of our own modules that moved; this test does not.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import brainharmonic_rt

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(brainharmonic_rt.__path__, "brainharmonic_rt.")
    if not m.name.endswith(".__main__")  # runs the command line when imported
)


def test_the_package_has_its_rooms() -> None:
    for room in ("cli", "control", "web", "sinks", "music", "brain", "signal", "sources", "evaluation", "training"):
        assert f"brainharmonic_rt.{room}" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    if name.startswith("brainharmonic_rt.training"):
        pytest.importorskip("torch", reason="training modules need the [train] extra")
    importlib.import_module(name)
