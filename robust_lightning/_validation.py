"""Argument checks shared by every part of the package (one place, one message format).

Every check takes the argument's ``name`` and its ``value``, returns the value normalised
(``int``, ``float``, ``bool``, ``tuple``) and otherwise raises an error from
:mod:`robust_lightning.errors` whose message names the argument, says what was expected and
shows what was given: ``batch_size must be a positive int, got 0``.

This module is the one place argument values are checked: a module that needs a check calls
one of these (and a check two modules need is added here, with a docstring), never an inline
``isinstance(x, bool) or not isinstance(x, int) ...`` of its own.

Which error: a value out of range raises :class:`~robust_lightning.errors.InvalidArgumentError`
(a ``ValueError``). A value of the wrong kind for a number or flag (``batch_size=2.5``,
``steps="ten"``, ``augment="yes"``) raises
:class:`~robust_lightning.errors.InvalidArgumentKindError`, which is that ``ValueError`` and
also an :class:`~robust_lightning.errors.InvalidArgumentTypeError` (a ``TypeError``), so
``except ValueError`` catches every bad number and ``except TypeError`` every wrong kind.
:func:`check_instance` (an object of the wrong class) raises ``InvalidArgumentTypeError``.
``bool`` is never accepted as a number: ``batch_size=True`` is a bug, not a batch of one.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any, TypeGuard, TypeVar

import numpy as np

from robust_lightning.errors import InvalidArgumentError, InvalidArgumentKindError, InvalidArgumentTypeError

__all__ = [
    "check_bool",
    "check_bool_or_non_negative",
    "check_choice",
    "check_fraction",
    "check_instance",
    "check_int",
    "check_int_at_least",
    "check_int_range",
    "check_names",
    "check_non_negative",
    "check_non_negative_int",
    "check_number",
    "check_optional_positive_int",
    "check_positive",
    "check_positive_int",
    "check_positive_ints",
    "check_probability",
    "check_range",
    "is_int",
    "is_number",
]

T = TypeVar("T")


def is_int(value: Any) -> TypeGuard[int | np.integer]:
    """Whether ``value`` is an integer (Python or NumPy), ``bool`` excluded."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> TypeGuard[int | float | np.integer | np.floating]:
    """Whether ``value`` is a real number (Python or NumPy int/float), ``bool`` excluded."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _invalid(message: str, right_kind: bool) -> InvalidArgumentError:
    """The error for a bad value: out of range, or (``right_kind=False``) not that kind at all."""
    return InvalidArgumentError(message) if right_kind else InvalidArgumentKindError(message)


# -- integers ------------------------------------------------------------------------------
def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None,
              reason: str = "") -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (either bound may be ``None``).

    Args:
        name: Argument name, used in the error message.
        value: Value to check.
        minimum: Smallest allowed value (``None``: no lower bound).
        maximum: Largest allowed value (``None``: no upper bound).
        reason: Optional explanation appended to the error message.

    Returns:
        ``int(value)``.

    Raises:
        InvalidArgumentError: If ``value`` is not an int in range.
    """
    if not is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            bound = f" in [{minimum}, {maximum}]"
        elif minimum is not None:
            bound = f" >= {minimum}"
        elif maximum is not None:
            bound = f" <= {maximum}"
        else:
            bound = ""
        suffix = f" ({reason})" if reason else ""
        raise _invalid(f"{name} must be an int{bound}{suffix}, got {value!r}", is_int(value))
    return int(value)


def check_int_at_least(name: str, value: Any, minimum: int, reason: str = "") -> int:
    """``value`` as an ``int >= minimum`` (message: ``<name> must be an int >= <minimum>``).

    Raises:
        InvalidArgumentError: If ``value`` is not an int greater than or equal to ``minimum``.
    """
    return check_int(name, value, minimum=minimum, reason=reason)


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int > 0``.

    Raises:
        InvalidArgumentError: If ``value`` is not an int greater than zero.
    """
    if not is_int(value) or value <= 0:
        raise _invalid(f"{name} must be a positive int, got {value!r}", is_int(value))
    return int(value)


def check_non_negative_int(name: str, value: Any) -> int:
    """``value`` as an ``int >= 0``.

    Raises:
        InvalidArgumentError: If ``value`` is not an int greater than or equal to zero.
    """
    if not is_int(value) or value < 0:
        raise _invalid(f"{name} must be a non-negative int, got {value!r}", is_int(value))
    return int(value)


def check_optional_positive_int(name: str, value: Any) -> int | None:
    """``None``, or ``value`` as an ``int > 0``.

    Raises:
        InvalidArgumentError: If ``value`` is neither ``None`` nor a positive int.
    """
    if value is None:
        return None
    if not is_int(value) or value <= 0:
        raise _invalid(f"{name} must be a positive int or None, got {value!r}", is_int(value))
    return int(value)


# -- real numbers --------------------------------------------------------------------------
def check_number(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, finite: bool = True, reason: str = "") -> float:
    """``value`` as a ``float`` between ``low`` and ``high`` (closed unless ``*_open``).

    Args:
        name: Argument name, used in the error message.
        value: Value to check.
        low: Lower bound (``None``: none).
        high: Upper bound (``None``: none).
        low_open: Exclude ``low`` itself.
        high_open: Exclude ``high`` itself.
        finite: Reject ``inf`` and ``nan`` (``nan`` fails every bound anyway).
        reason: Optional explanation (a unit, why the bound) appended to the error message.

    Returns:
        ``float(value)``.

    Raises:
        InvalidArgumentError: If ``value`` is not a real number within the bounds, e.g.
            ``tau must be a finite number > 0 and <= 1, got 0``.
    """
    ok = is_number(value) and not math.isnan(float(value))
    if ok:
        x = float(value)
        ok = not (finite and math.isinf(x))
        ok = ok and (low is None or (x > low if low_open else x >= low))
        ok = ok and (high is None or (x < high if high_open else x <= high))
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high:g}")
        kind = "a finite number" if finite else "a number"
        detail = f" {' and '.join(bounds)}" if bounds else ""
        suffix = f" ({reason})" if reason else ""
        raise _invalid(f"{name} must be {kind}{detail}{suffix}, got {value!r}", is_number(value))
    return float(value)


def check_positive(name: str, value: Any) -> float:
    """``value`` as a finite ``float > 0`` (learning rates, temperatures, step sizes).

    Raises:
        InvalidArgumentError: If ``value`` is not a finite number greater than zero.
    """
    return check_number(name, value, 0.0, low_open=True)


def check_non_negative(name: str, value: Any) -> float:
    """``value`` as a finite ``float >= 0`` (loss weights, budgets).

    Raises:
        InvalidArgumentError: If ``value`` is not a finite number greater than or equal to zero.
    """
    return check_number(name, value, 0.0)


def check_probability(name: str, value: Any) -> float:
    """``value`` as a ``float`` in ``[0, 1]``.

    Raises:
        InvalidArgumentError: If ``value`` is not a number in ``[0, 1]``.
    """
    if not is_number(value) or not 0.0 <= float(value) <= 1.0:
        raise _invalid(f"{name} must be a number in [0, 1], got {value!r}", is_number(value))
    return float(value)


def check_fraction(name: str, value: Any) -> float:
    """``value`` as a ``float`` in ``[0, 1)`` (a share that must leave something over).

    Raises:
        InvalidArgumentError: If ``value`` is not a real number in ``[0, 1)``.
    """
    if not is_number(value) or not 0.0 <= float(value) < 1.0:
        raise _invalid(f"{name} must be a float in [0, 1), got {value!r}", is_number(value))
    return float(value)


# -- kinds and choices ---------------------------------------------------------------------
def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a ``bool`` (``1``, ``"yes"`` and ``None`` are not).

    Raises:
        InvalidArgumentKindError: If ``value`` is not a bool (a ``ValueError`` and a ``TypeError``).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgumentKindError(f"{name} must be a bool (true or false), got {value!r}")
    return bool(value)


def check_bool_or_non_negative(name: str, value: Any, number: str = "a number") -> bool | float:
    """``value`` as a ``bool``, or as a finite ``float >= 0`` (a switch that may carry a size).

    PGD's ``random_start`` is the example: ``True`` / ``False`` (uniform start in the ball or
    none) or a float, the std of a Gaussian start.

    Args:
        name: Argument name, used in the error message.
        value: Value to check.
        number: What the number means, for the message (``"a noise std"``).

    Raises:
        InvalidArgumentError: ``<name> must be a bool or <number> >= 0, got <value>``.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if not is_number(value) or not math.isfinite(float(value)) or float(value) < 0:
        raise _invalid(f"{name} must be a bool or {number} >= 0, got {value!r}", is_number(value))
    return float(value)


def check_choice(name: str, value: Any, choices: Collection[T]) -> T:
    """``value`` if it is one of ``choices``.

    Raises:
        InvalidArgumentError: ``<name> must be one of (<choices>), got <value>``.
    """
    try:
        known = value in choices
    except TypeError:  # an unhashable value against a set of names
        known = False
    # ``True in (1, 3)`` holds in Python (True == 1), but a flag is never one of numeric choices.
    if known and isinstance(value, (bool, np.bool_)):
        known = any(isinstance(c, (bool, np.bool_)) for c in choices)
    if not known:
        raise InvalidArgumentError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_instance(name: str, value: Any, types: type | tuple[type, ...], expected: str | None = None) -> Any:
    """``value`` if it is an instance of ``types``.

    Args:
        name: Argument name, used in the error message.
        value: Value to check.
        types: Accepted type(s).
        expected: What to call them in the message (default: the type names), e.g.
            ``"an nn.Module (e.g. SmallCNN)"``.

    Raises:
        InvalidArgumentTypeError: ``<name> must be <expected>, got <type of value>``.
    """
    if not isinstance(value, types):
        if expected is None:
            names = [t.__name__ for t in (types if isinstance(types, tuple) else (types,))]
            expected = "an instance of " + " or ".join(names)
        raise InvalidArgumentTypeError(f"{name} must be {expected}, got {type(value).__name__}")
    return value


def check_names(name: str, value: Any, what: str = "names", allow_repeats: bool = False) -> tuple[str, ...]:
    """``value`` as a tuple of strings (a list in YAML; a bare string is rejected, not split).

    Args:
        name: Argument name, used in the error message.
        value: Value to check.
        what: What the strings are, for the message (``"level names"``).
        allow_repeats: Accept the same string twice.

    Raises:
        InvalidArgumentError: If ``value`` is not a sequence of strings, or repeats one.
    """
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise InvalidArgumentError(f"{name} must be a list of {what}, got {value!r}")
    if not allow_repeats and len(set(value)) != len(value):
        raise InvalidArgumentError(f"{name} must not repeat a {what.removesuffix('s')}, got {list(value)}")
    return tuple(value)


# -- sequences -----------------------------------------------------------------------------
def _is_list(value: Any) -> bool:
    # A YAML list arrives as a list or tuple; a string is a sequence too but never a list here.
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def check_positive_ints(name: str, value: Any, *, non_empty: bool = False) -> tuple[int, ...]:
    """``value`` as a tuple of ``int > 0`` (layer widths, hidden sizes).

    Args:
        name: Argument name, used in the error message.
        value: Value to check: a list or tuple (a bare int or string is rejected).
        non_empty: Reject an empty list.

    Raises:
        InvalidArgumentError: ``<name> must be a [non-empty ]list of positive ints, got <value>``.
    """
    if not _is_list(value) or (non_empty and not value) or not all(is_int(v) and v > 0 for v in value):
        what = "a non-empty list" if non_empty else "a list"
        raise _invalid(f"{name} must be {what} of positive ints, got {value!r}", _is_list(value))
    return tuple(int(v) for v in value)


def _check_pair(name: str, value: Any, low: float | None, high: float | None, integer: bool) -> tuple[Any, Any]:
    kind, is_kind = ("ints", is_int) if integer else ("finite numbers", is_number)
    if not _is_list(value) or len(value) != 2 or not all(is_kind(v) and math.isfinite(v) for v in value):
        raise _invalid(f"{name} must be a pair (min, max) of {kind}, got {value!r}", _is_list(value))
    lo, hi = (int(v) for v in value) if integer else (float(v) for v in value)
    if not (lo <= hi and (low is None or low <= lo) and (high is None or hi <= high)):
        lower = f"{low:g} <= " if low is not None else ""
        upper = f" <= {high:g}" if high is not None else ""
        raise InvalidArgumentError(f"{name} must satisfy {lower}min <= max{upper}, got {value!r}")
    return lo, hi


def check_range(name: str, value: Any, low: float | None = None, high: float | None = None) -> tuple[float, float]:
    """``value`` as a ``(min, max)`` pair of finite floats with ``low <= min <= max <= high``.

    Args:
        name: Argument name, used in the error message.
        value: Value to check: a list or tuple of two numbers.
        low: Smallest allowed ``min`` (``None``: no lower bound).
        high: Largest allowed ``max`` (``None``: no upper bound).

    Raises:
        InvalidArgumentError: ``<name> must be a pair (min, max) of finite numbers`` or
            ``<name> must satisfy <low> <= min <= max <= <high>``, with what was given.
    """
    return _check_pair(name, value, low, high, integer=False)


def check_int_range(name: str, value: Any, low: int | None = None, high: int | None = None) -> tuple[int, int]:
    """``value`` as a ``(min, max)`` pair of ints with ``low <= min <= max <= high``.

    Raises:
        InvalidArgumentError: ``<name> must be a pair (min, max) of ints`` or
            ``<name> must satisfy <low> <= min <= max <= <high>``, with what was given.
    """
    return _check_pair(name, value, low, high, integer=True)
