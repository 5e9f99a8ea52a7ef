"""robust_lightning._validation: every check names the argument, says what it expected, and
raises the package's error types (which are also the built-in ones callers catch)."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest

from robust_lightning._validation import (
    check_bool,
    check_bool_or_non_negative,
    check_choice,
    check_fraction,
    check_instance,
    check_int,
    check_int_at_least,
    check_int_range,
    check_names,
    check_non_negative,
    check_non_negative_int,
    check_number,
    check_optional_positive_int,
    check_positive,
    check_positive_int,
    check_positive_ints,
    check_probability,
    check_range,
)
from robust_lightning.errors import InvalidArgumentError, InvalidArgumentKindError, InvalidArgumentTypeError


@pytest.mark.parametrize(("check", "args", "expected"), [
    (check_positive_int, (3,), 3),
    (check_positive_int, (np.int64(2),), 2),
    (check_non_negative_int, (0,), 0),
    (check_int_at_least, (2, 2), 2),
    (check_int, (5, 1, 5), 5),
    (check_optional_positive_int, (None,), None),
    (check_number, (0.5, 0.0, 1.0), 0.5),
    (check_positive, (1e-3,), 1e-3),
    (check_non_negative, (0,), 0.0),
    (check_probability, (1.0,), 1.0),
    (check_fraction, (0.0,), 0.0),
    (check_bool, (np.bool_(True),), True),
    (check_choice, ("b", ("a", "b")), "b"),
    (check_names, (["x", "y"],), ("x", "y")),
    (check_bool_or_non_negative, (False,), False),
    (check_bool_or_non_negative, (1,), 1.0),
    (check_positive_ints, ([3, np.int64(4)],), (3, 4)),
    (check_positive_ints, ((),), ()),
    (check_range, ([0, 1],), (0.0, 1.0)),
    (check_int_range, ((2, 2), 1), (2, 2)),
])
def test_valid_values_come_back_normalised(check, args, expected) -> None:
    value = check("arg", *args)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("check", "args", "message"), [
    (check_positive_int, (0,), "arg must be a positive int, got 0"),
    (check_positive_int, (True,), "arg must be a positive int, got True"),
    (check_positive_int, (2.0,), "arg must be a positive int, got 2.0"),
    (check_non_negative_int, (-1,), "arg must be a non-negative int, got -1"),
    (check_int_at_least, (1, 2, "two classes at least"), r"arg must be an int >= 2 \(two classes at least\), got 1"),
    (check_int, (0, 1, 200), r"arg must be an int in \[1, 200\], got 0"),
    (check_int, ("3",), "arg must be an int, got '3'"),
    (check_optional_positive_int, (0,), "arg must be a positive int or None, got 0"),
    (check_number, (0.0, 0.0, 1.0), None),  # valid: closed bounds
    (check_number, (2, 0.0, 1.0), "arg must be a finite number >= 0 and <= 1, got 2"),
    (partial(check_number, reason="degrees"), (200, 0, 180), r"arg must be a finite number >= 0 and <= 180 \(degrees\), got 200"),
    (check_positive, (0,), "arg must be a finite number > 0, got 0"),
    (check_positive, (math.inf,), "arg must be a finite number > 0, got inf"),
    (check_non_negative, (math.nan,), "arg must be a finite number >= 0, got nan"),
    (check_non_negative, (False,), "arg must be a finite number >= 0, got False"),
    (check_probability, (1.5,), r"arg must be a number in \[0, 1\], got 1.5"),
    (check_fraction, (1.0,), r"arg must be a float in \[0, 1\), got 1.0"),
    (check_choice, ("c", ("a", "b")), r"arg must be one of \('a', 'b'\), got 'c'"),
    (check_choice, ([1], ("a",)), r"arg must be one of \('a',\), got \[1\]"),
    (check_choice, (True, (1, 3)), r"arg must be one of \(1, 3\), got True"),
    (check_names, ("ab",), "arg must be a list of names, got 'ab'"),
    (check_names, (["a", "a"], "level names"), r"arg must not repeat a level name, got \['a', 'a'\]"),
    (check_bool_or_non_negative, (-0.1, "a noise std"), "arg must be a bool or a noise std >= 0, got -0.1"),
    (check_bool_or_non_negative, (math.nan,), "arg must be a bool or a number >= 0, got nan"),
    (check_bool_or_non_negative, ("yes",), "arg must be a bool or a number >= 0, got 'yes'"),
    (check_positive_ints, ([2, 0],), r"arg must be a list of positive ints, got \[2, 0\]"),
    (check_positive_ints, ([2, True],), r"arg must be a list of positive ints, got \[2, True\]"),
    (check_positive_ints, (8,), "arg must be a list of positive ints, got 8"),
    (check_positive_ints, ("12",), "arg must be a list of positive ints, got '12'"),
    (partial(check_positive_ints, non_empty=True), ([],), r"arg must be a non-empty list of positive ints, got \[\]"),
    (check_range, ([0, 1, 2],), r"arg must be a pair \(min, max\) of finite numbers, got \[0, 1, 2\]"),
    (check_range, ([0, math.inf],), r"arg must be a pair \(min, max\) of finite numbers, got \[0, inf\]"),
    (check_range, ([2, 1],), r"arg must satisfy min <= max, got \[2, 1\]"),
    (check_range, ([-1, 1], 0.0, 4.0), r"arg must satisfy 0 <= min <= max <= 4, got \[-1, 1\]"),
    (check_int_range, ([1.0, 2],), r"arg must be a pair \(min, max\) of ints, got \[1.0, 2\]"),
    (check_int_range, ([0, 2], 1), r"arg must satisfy 1 <= min <= max, got \[0, 2\]"),
])
def test_bad_values_raise_invalid_argument_error_naming_the_argument(check, args, message) -> None:
    if message is None:
        check("arg", *args)
        return
    with pytest.raises(InvalidArgumentError, match=f"^{message}$") as info:
        check("arg", *args)
    assert isinstance(info.value, ValueError)  # callers' `except ValueError` keeps working


@pytest.mark.parametrize(("check", "args"), [
    (check_positive_int, ("3",)), (check_int, (2.5,)), (check_number, ("x",)), (check_probability, (None,)),
    (check_fraction, (True,)), (check_bool, ("yes",)), (check_bool_or_non_negative, ([],)),
    (check_positive_ints, (3,)), (check_range, ("01",)),
])
def test_a_value_of_the_wrong_kind_is_both_a_value_and_a_type_error(check, args) -> None:
    """The package raised ValueError for some wrong kinds and TypeError for others; both still catch."""
    with pytest.raises(InvalidArgumentKindError, match="^arg must be ") as info:
        check("arg", *args)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
    assert isinstance(info.value, InvalidArgumentError) and isinstance(info.value, InvalidArgumentTypeError)


def test_a_value_out_of_range_is_a_value_error_only() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        check_positive_int("arg", 0)
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize(("check", "args", "message"), [
    (check_bool, (1,), r"arg must be a bool \(true or false\), got 1"),
    (check_bool, ("yes",), r"arg must be a bool \(true or false\), got 'yes'"),
    (check_instance, ("x", int), "arg must be an instance of int, got str"),
    (check_instance, ("x", (int, float), "a number"), "arg must be a number, got str"),
])
def test_wrong_kinds_raise_invalid_argument_type_error(check, args, message) -> None:
    with pytest.raises(InvalidArgumentTypeError, match=f"^{message}$") as info:
        check("arg", *args)
    assert isinstance(info.value, TypeError)


def test_infinite_numbers_pass_only_when_asked() -> None:
    assert check_number("arg", math.inf, 0.0, finite=False) == math.inf
    with pytest.raises(InvalidArgumentError, match="must be a number >= 0, got nan"):
        check_number("arg", math.nan, 0.0, finite=False)
