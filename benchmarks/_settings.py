"""``--set key=value`` overrides of an experiment's defaults, shared by the evidence scripts."""

from __future__ import annotations

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(key: str, value: str, default: object) -> object:
    if isinstance(default, bool):
        if value.lower() not in _TRUE + _FALSE:
            raise ValueError(f"expected true/false, got {value!r}")
        return value.lower() in _TRUE
    if isinstance(default, tuple):  # comma-separated ints, empty for ()
        return tuple(int(v) for v in value.split(",") if v.strip())
    if default is None:  # optional number
        return None if value.lower() == "none" else float(value)
    if isinstance(default, str):
        return value
    return type(default)(value)


def parse_settings(items: list[str], defaults: dict[str, object]) -> dict[str, object]:
    """Overrides for ``defaults``, each value converted to its default's type.

    Strings stay strings, booleans take true/false, tuples are comma-separated ints and a
    ``None`` default takes ``none`` or a number.

    Raises:
        SystemExit: On a malformed item, a key that ``defaults`` does not have, or a value
            that does not convert.
    """
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set: expected KEY=VALUE, got {item!r}")
        if key not in defaults:
            raise SystemExit(f"--set {key}: unknown; known: {sorted(defaults)}")
        try:
            out[key] = _convert(key, value, defaults[key])
        except ValueError as error:
            raise SystemExit(f"--set {key}: expected a value like {defaults[key]!r}, got {value!r} ({error})") from None
    return out
