"""Lazy re-exports for the package ``__init__`` files (PEP 562).

``import robust_lightning`` must not import every method's stack (mmdet, transformers,
torchaudio, pandapower...): a user who only wants :class:`~robust_lightning.AdversarialTraining`
would pay seconds of import time and need every extra installed. Each ``__init__`` names its
exports as ``{"Name": "defining.module"}``; the module is imported when the name is first used.
Type checkers and IDEs read the same names from an ``if TYPE_CHECKING:`` import block.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` for ``package`` that import ``exports`` on use.

    Args:
        package: the package's ``__name__``.
        exports: public name -> module that defines it.
        namespace: the package's ``globals()``; a resolved name is cached there, so the next
            access is a plain attribute lookup.
    """

    def __getattr__(name: str) -> Any:
        module_name = exports.get(name)
        if module_name is None:
            # AttributeError (not ImportError) lets `from package import submodule` fall back
            # to importing the submodule, as for any package.
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
