"""Optional dependencies, grouped into the pip extras of ``pyproject.toml``.

The core (attacks, callbacks, :class:`~robust_lightning.RobustClassifier`, image datamodules)
needs only torch, torchvision, lightning, torchmetrics, jsonargparse, numpy, scikit-learn and
matplotlib. A method family that needs more imports it through :func:`require`, so a missing
package is one line saying which extra to install instead of a bare ``ModuleNotFoundError``
from deep inside the method.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType

from robust_lightning.errors import MissingExtraError

__all__ = ["EXTRAS", "Extra", "check_installed", "extra_for", "require"]


@dataclass(frozen=True)
class Extra:
    """One pip extra: the optional modules it provides and the parts of the package that need it.

    Attributes:
        modules: Top-level modules of the extra that the package imports (each is also the
            name of a requirement of that extra in ``pyproject.toml``; a test checks it). A
            method whose extra lacks one of them is reported missing before it is imported.
        needed_by: Dotted paths (packages or classes) that need the extra: a method's folder
            under ``lightning_modules/``, or one class where the rest of its folder does not.
            Configs and registry entries whose class lies under one of them need the extra.
    """

    modules: tuple[str, ...]
    needed_by: tuple[str, ...] = ()


_LM = "robust_lightning.lightning_modules"

#: The one table of pip extras (``pip install 'robust-lightning[<name>]'``). Its names are the
#: extras of ``[project.optional-dependencies]`` except the groups ``all`` and ``dev``;
#: ``METHODS[...].extra`` and ``robust-lightning configs`` read which extra a method needs here.
EXTRAS: Mapping[str, Extra] = MappingProxyType({
    "audio": Extra(("torchaudio",), needed_by=(f"{_LM}.audio_grl",)),
    "detection": Extra(("mmdet", "mmengine", "mmcv"), needed_by=(f"{_LM}.kgat", f"{_LM}.drsf.DRSFDetector")),
    "rl": Extra(("pandapower", "gymnasium"), needed_by=(f"{_LM}.voltage_rl", "robust_lightning.envs")),
    "text": Extra(("transformers", "tokenizers"), needed_by=(f"{_LM}.badllm_tg", f"{_LM}.sia")),
    "wandb": Extra(("wandb",)),
})


def extra_for(path: str) -> str | None:
    """The extra that the module or class at dotted ``path`` needs, or ``None`` (core only).

    ``path`` needs an extra when it is one of that extra's :attr:`Extra.needed_by` paths or lies
    under one (``robust_lightning.lightning_modules.kgat.KGATDetector`` -> ``"detection"``).
    """
    for name, extra in EXTRAS.items():
        if any(path == owner or path.startswith(f"{owner}.") for owner in extra.needed_by):
            return name
    return None


def _message(feature: str, module: str, extra: str, error: ImportError | None) -> str:
    top_level = module.split(".", 1)[0]
    hint = f"pip install 'robust-lightning[{extra}]'"
    missing = getattr(error, "name", None) if error is not None else top_level
    if missing is not None and missing.split(".", 1)[0] == top_level:
        return f"{feature} needs {top_level}: {hint}"
    return f"{feature} needs {module}, which is installed but failed to import ({error}): {hint}"


def _caller(depth: int = 2) -> str:
    return str(sys._getframe(depth).f_globals.get("__name__", "robust_lightning"))


def check_installed(module: str, extra: str, *, feature: str | None = None) -> None:
    """Raise :class:`~robust_lightning.errors.MissingExtraError` unless ``module`` can be found.

    Like :func:`require` but without importing it, for packages whose import is slow and
    deferred to first use (pandapower).
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; expected one of {sorted(EXTRAS)}")
    top_level = module.split(".", 1)[0]
    # A None entry in sys.modules is how Python spells "this import is blocked".
    blocked = top_level in sys.modules and sys.modules[top_level] is None
    if blocked or importlib.util.find_spec(top_level) is None:
        raise MissingExtraError(_message(feature or _caller(), module, extra, None))


def require(module: str, extra: str, *, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`~robust_lightning.errors.MissingExtraError`.

    Args:
        module: dotted module name, e.g. ``"torchaudio.functional"``.
        extra: the pip extra that provides it (a key of :data:`EXTRAS`).
        feature: what needs it, for the message; defaults to the calling module's name.

    Returns:
        The imported module.

    Raises:
        MissingExtraError: ``<feature> needs <module>: pip install 'robust-lightning[<extra>]'``.
            An installed package that fails to import (built for another torch, say) gets the
            same line plus the original error, chained as ``__cause__``.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; expected one of {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(_message(feature or _caller(), module, extra, error)) from error
