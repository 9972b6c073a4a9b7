"""Tests of packaging/: its scripts are loaded from their files (packaging/ is no package).

Tests marked `packaging` build the PyInstaller bundle (about 1 to 2 minutes and 900 MB on the
project's 2-core machine): they run only when asked for, `pytest -m packaging`, with PyInstaller
installed (`pip install -e '.[packaging]'`).
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "packaging" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="builds the bundle: run it with `pytest -m packaging`")
    for item in items:
        if item.get_closest_marker("packaging"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def load_packaging():
    """Import packaging/<name>.py as a module."""

    def load(name: str) -> ModuleType:
        qualified = f"moshi_desktop_packaging.{name}"  # apart from any installed `build` etc.
        if qualified not in sys.modules:
            spec = importlib.util.spec_from_file_location(qualified, PACKAGING / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[qualified] = module  # dataclasses look their module up while defined
            spec.loader.exec_module(module)
        return sys.modules[qualified]

    return load
