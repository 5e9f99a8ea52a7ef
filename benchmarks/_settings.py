"""``--set key=value`` overrides of an experiment's defaults, shared by the evidence scripts."""

from __future__ import annotations


def parse_settings(items: list[str], defaults: dict[str, object]) -> dict[str, object]:
    """Overrides for ``defaults``, each value converted to its default's type (strings stay strings).

    Raises:
        SystemExit: On a key that ``defaults`` does not have.
    """
    out: dict[str, object] = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in defaults:
            raise SystemExit(f"--set {key}: unknown; known: {sorted(defaults)}")
        default = defaults[key]
        out[key] = type(default)(value) if not isinstance(default, str) else value
    return out
