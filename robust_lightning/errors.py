"""Errors that mean "the user's input is wrong", as opposed to a bug in the library.

The CLI prints a :class:`UserError` as one line (``error: <message>``) and exits with status 2;
any other exception is a bug and keeps its traceback. Every class also derives from the
built-in exception a Python caller would expect (``ValueError``, ``FileNotFoundError``, ...),
so ``except ValueError`` in user code keeps working.

A message names the argument or file (and the record, line or field) and says what was
expected; where a fix is known (run an earlier recipe first, install an extra) it says that too.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "DataFileError",
    "InvalidArgumentError",
    "InvalidArgumentKindError",
    "InvalidArgumentTypeError",
    "MissingExtraError",
    "MissingFileError",
    "PrerequisiteError",
    "UserError",
]


class UserError(Exception):
    """Base class: an input the user can fix. The CLI shows the message only and exits 2."""


class InvalidArgumentError(UserError, ValueError):
    """An argument has a value outside what is accepted (``eps must be >= 0, got -0.03``)."""


class InvalidArgumentTypeError(UserError, TypeError):
    """An argument has the wrong type (``backbone must be an nn.Module, got str``)."""


class InvalidArgumentKindError(InvalidArgumentError, InvalidArgumentTypeError):
    """A number or flag argument is not even that kind of value (``steps="ten"``, ``augment="yes"``).

    Both a ``ValueError`` (what ``int("ten")`` raises) and a ``TypeError`` (what an
    ``isinstance`` check raises): before the checks moved to ``_validation`` the package raised
    one or the other for the same mistake, and code catching either keeps working.
    """


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or a recipe needs) does not exist."""


class DataFileError(UserError, ValueError):
    """A data file exists but its content is wrong: name the file, the record and the field."""


class CheckpointError(UserError, ValueError):
    """A checkpoint cannot be loaded safely (corrupt, truncated, or not a weights-only file)."""


class PrerequisiteError(UserError, FileNotFoundError):
    """A chained recipe was run before the step that produces its input (say which to run)."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency is missing: ``pip install 'robust-lightning[<extra>]'``."""
