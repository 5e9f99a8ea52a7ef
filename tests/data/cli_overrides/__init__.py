"""Per-datamodule CLI overrides that point configs at small generated data.

Each module in this package defines ``OVERRIDES: dict[str, Callable[[Path], list[str]]]``,
keyed by the datamodule class name (the last part of ``data.class_path``); the callable gets a
fresh temporary directory and returns extra CLI arguments. A method adds its own module here
instead of editing ``tests/test_cli.py``. ``EXTRA_SETUP`` (optional) maps a config's path
relative to ``configs/`` to a callable run in the test's working directory before the CLI
(e.g. to write a surrogate checkpoint the config refers to).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

Override = Callable[[Path], list[str]]
Setup = Callable[[Path], None]


def _collect() -> tuple[dict[str, Override], dict[str, Setup]]:
    overrides: dict[str, Override] = {}
    setups: dict[str, Setup] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for key, value in getattr(module, "OVERRIDES", {}).items():
            if key in overrides:
                raise RuntimeError(f"two override modules claim datamodule {key!r}")
            overrides[key] = value
        setups.update(getattr(module, "EXTRA_SETUP", {}))
    return overrides, setups


OVERRIDES, EXTRA_SETUP = _collect()
