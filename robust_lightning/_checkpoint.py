"""Safe reading of checkpoints and state files; atomic writing of the files we produce.

Every ``torch.load`` in the package goes through :func:`load_checkpoint`: ``weights_only=True``
(a checkpoint can hold tensors, containers and numbers, never a callable that runs on load),
and torch's own errors are turned into a :class:`~robust_lightning.errors.CheckpointError` that
names the file. torch's messages for a refused or unreadable file suggest retrying with
``weights_only=False``; for a file from an unknown source that is exactly the unsafe step, so
those messages are never shown.

Files the package writes for resuming (``last.ckpt``, search state, generated data) are written
to a temporary file beside the target and moved over it with :func:`os.replace`, so a kill
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from robust_lightning.errors import CheckpointError, MissingFileError

__all__ = ["atomic_write_bytes", "atomic_write_text", "check_checkpoint_file", "load_checkpoint",
           "read_json_state"]

# What torch raises for a file that is not a (complete) checkpoint: bad pickle bytes, a zip
# without its central directory, an archive cut short, random bytes read as a legacy file.
_UNREADABLE = (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, KeyError, IndexError, TypeError,
               AttributeError, ImportError, UnicodeDecodeError, struct.error, zipfile.BadZipFile, OverflowError,
               MemoryError)
# torch 2.6-2.11 word it as "Unsupported global: GLOBAL posix.system was not an allowed global"
# or "Trying to load unsupported GLOBAL posix.system whose module posix is blocked".
_GLOBAL = re.compile(r"unsupported\s+(?:global|class)\W+(?:GLOBAL\s+)?([A-Za-z_][\w.]*)", re.IGNORECASE)


def _disallowed_global(message: str) -> str | None:
    """The ``module.name`` a weights-only unpickler refused, if the message names one."""
    match = _GLOBAL.search(message)
    return match.group(1) if match else None


def load_checkpoint(path: str | os.PathLike[str], *, argument: str = "checkpoint",
                    map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and never
    suggest unsafe loading.

    Args:
        path: the checkpoint (a Lightning ``.ckpt``, a ``torch.save`` state dict or tensor).
        argument: the name of the argument that gave ``path``, used in messages.
        map_location: as in :func:`torch.load`.
        mmap: map the tensors' storage instead of reading it (for a check that keeps nothing).

    Returns:
        What the file holds (tensors, dicts, lists, numbers, strings).

    Raises:
        MissingFileError: ``path`` is not a file.
        CheckpointError: the file is not a valid checkpoint (truncated, corrupt, empty) or holds
            a pickled object a weights-only file may not hold; nothing of it was run.
    """
    file = Path(path)
    if not file.is_file():
        raise MissingFileError(f"{argument} {str(file)!r} does not exist (or is not a file)")
    try:
        return torch.load(file, map_location=map_location, weights_only=True, mmap=mmap)
    except _UNREADABLE as error:
        if mmap and "mmap" in str(error) and "zipfile" in str(error):
            # A legacy (pre-zip) file cannot be mapped; read it instead.
            return load_checkpoint(file, argument=argument, map_location=map_location)
        refused = _disallowed_global(str(error))
        if refused is not None:
            raise CheckpointError(
                f"{argument} {str(file)!r} holds a pickled object of type {refused!r} that is not allowed in a "
                "weights-only checkpoint; it was not loaded (a checkpoint may hold tensors, containers and "
                "numbers only)"
            ) from None
        raise CheckpointError(
            f"{argument} {str(file)!r} is not a valid PyTorch checkpoint (truncated or corrupt); it was not loaded"
        ) from None


def check_checkpoint_file(path: str | os.PathLike[str], *, argument: str = "ckpt_path") -> None:
    """Raise the :func:`load_checkpoint` errors for ``path`` without keeping what it holds.

    For paths handed on to code that loads them itself (Lightning's ``ckpt_path``), so a bad
    file is reported by name before that code shows torch's own message.
    """
    load_checkpoint(path, argument=argument, map_location="cpu", mmap=True)


def read_json_state(path: str | os.PathLike[str], *, required: tuple[str, ...] = (),
                    argument: str = "state file") -> dict[str, Any]:
    """Read a JSON object written by :func:`atomic_write_text`; refuse a corrupt one.

    Raises:
        MissingFileError: ``path`` is not a file.
        CheckpointError: the file is not a complete JSON object, or lacks a ``required`` key.
    """
    file = Path(path)
    if not file.is_file():
        raise MissingFileError(f"{argument} {str(file)!r} does not exist")
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{argument} {str(file)!r} is not valid JSON (truncated or corrupt: {error}); it was not used"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{argument} {str(file)!r} must hold a JSON object, got {type(state).__name__}; "
                              "it was not used")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{argument} {str(file)!r} lacks {missing} (truncated or corrupt); it was not used")
    return state


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader (or a kill) sees the old file or the new one."""
    target = Path(path)
    descriptor, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))
