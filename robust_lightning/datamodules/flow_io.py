"""Reading CICFlowMeter CSV files of the three public families into one canonical table.

See :mod:`robust_lightning.datamodules.flows` for the families, the header spellings and the
non-finite/negative value policy; the schema itself is :mod:`robust_lightning.flow_schema`.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from robust_lightning.datamodules._common import check_optional_positive_int
from robust_lightning.errors import DataFileError, MissingFileError
from robust_lightning.flow_schema import (
    HEADER_ALIASES,
    IDENTIFIER_COLUMNS,
    LABEL_COLUMN,
    LONG_NAMES,
    SENTINEL_COLUMNS,
    SHORT_NAMES,
    check_features,
    derive_features,
    is_benign_label,
    required_columns,
)

__all__ = ["FlowTable", "read_flow_csv", "read_flow_csvs"]

_IDENTIFIERS = {name.lower() for name in IDENTIFIER_COLUMNS}
# pandas' index column and pandas' rename of CIC-IDS2017's duplicated "Fwd Header Length".
_PANDAS_INDEX = re.compile(r"^unnamed: \d+(\.\d+)?$")
_PANDAS_DUPLICATE = re.compile(r"^(.*)\.\d+$")
_DDOS2019_MARKERS = {"simillarhttp", "inbound"}


# -- reading --------------------------------------------------------------------------------------
@dataclass
class FlowTable:
    """Flows of one or more CSV files in the canonical schema.

    Attributes:
        columns: canonical name -> ``(N,)`` float64 array (the columns that were read).
        labels: ``(N,)`` label strings as written in the files (stripped).
        families: the header family of each file read (``cicids2017``, ``cicddos2019`` or
            ``csecicids2018``).
        stats: counts of rows read and dropped, by reason.
    """

    columns: dict[str, np.ndarray]
    labels: np.ndarray
    families: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def is_attack(self) -> np.ndarray:
        """``(N,)`` bool: ``True`` for every non-benign flow."""
        return np.array([not is_benign_label(label) for label in self.labels], dtype=bool)

    def matrix(self, features: Sequence[str]) -> np.ndarray:
        """``(N, F)`` float64 array of ``features`` in that order."""
        missing = [name for name in features if name not in self.columns]
        if missing:
            raise KeyError(f"the flow table has no columns {missing}; it holds {sorted(self.columns)}")
        return np.stack([self.columns[name] for name in features], axis=1) if len(self) else np.zeros((0, len(features)))

    def select(self, keep: np.ndarray) -> FlowTable:
        """The rows where ``keep`` is ``True``."""
        return FlowTable({k: v[keep] for k, v in self.columns.items()}, self.labels[keep], list(self.families),
                         dict(self.stats))

    @staticmethod
    def concatenate(tables: Sequence[FlowTable]) -> FlowTable:
        """Rows of every table, in order; the tables must hold the same columns."""
        if not tables:
            raise ValueError("nothing to concatenate: no flow tables")
        names = set(tables[0].columns)
        for table in tables[1:]:
            if set(table.columns) != names:
                raise ValueError(f"flow tables hold different columns: {sorted(names ^ set(table.columns))}")
        stats: dict[str, int] = {}
        for table in tables:
            for key, value in table.stats.items():
                stats[key] = stats.get(key, 0) + value
        return FlowTable({n: np.concatenate([t.columns[n] for t in tables]) for n in tables[0].columns},
                         np.concatenate([t.labels for t in tables]), [f for t in tables for f in t.families], stats)


def _map_header(header: Sequence[str], path: str) -> tuple[dict[str, int], int, str]:
    """Column index of every canonical feature in ``header``, the label's index and the family."""
    index: dict[str, int] = {}
    label_index: int | None = None
    unknown: list[str] = []
    spellings: set[str] = set()
    markers: set[str] = set()
    for position, raw in enumerate(header):
        name = raw.strip()
        key = name.lower()
        if key == LABEL_COLUMN.lower():
            label_index = position
            continue
        if key in _IDENTIFIERS or _PANDAS_INDEX.match(key):
            if key in _DDOS2019_MARKERS or _PANDAS_INDEX.match(key):
                markers.add(key)
            continue
        alias = HEADER_ALIASES.get(key)
        if alias is None:
            duplicate = _PANDAS_DUPLICATE.match(key)
            if duplicate and duplicate.group(1) in HEADER_ALIASES:
                continue  # pandas' "Fwd Header Length.1": a copy of a column we already read
            unknown.append(name)
            continue
        canonical, spelling = alias
        if spelling != "both":
            spellings.add(spelling)
        # CIC-IDS2017 writes "Fwd Header Length" twice with the same values: keep the first.
        index.setdefault(canonical, position)
    if unknown:
        raise DataFileError(
            f"{path}: unknown flow CSV schema: columns {unknown} are neither CICFlowMeter features nor "
            f"known identifiers. Known: CIC-IDS2017/CIC-DDoS2019 long names (e.g. 'Total Fwd Packets', "
            f"'Total Length of Fwd Packets'), CSE-CIC-IDS2018 short names (e.g. 'Tot Fwd Pkts', "
            f"'TotLen Fwd Pkts'); identifiers dropped: {list(IDENTIFIER_COLUMNS)} and 'Unnamed: N'"
        )
    if label_index is None:
        raise DataFileError(f"{path}: no '{LABEL_COLUMN}' column (whitespace and case are ignored); flow CSVs must be labelled")
    if spellings == {"long", "short"}:
        raise DataFileError(f"{path}: the header mixes CIC-IDS2017 long names and CSE-CIC-IDS2018 short names")
    if "short" in spellings:
        family = "csecicids2018"
    else:
        family = "cicddos2019" if markers & _DDOS2019_MARKERS else "cicids2017"
    return index, label_index, family


def _to_float(cells: list[str]) -> np.ndarray:
    """Strings to float64; unparsable cells (empty, text) become NaN."""
    try:
        return np.asarray(cells, dtype=str).astype(np.float64)
    except ValueError:
        out = np.empty(len(cells), dtype=np.float64)
        for i, cell in enumerate(cells):
            try:
                out[i] = float(cell)
            except ValueError:
                out[i] = np.nan
        return out


def _check_nonfinite(value: Any) -> str:
    if value not in ("recompute", "drop"):
        raise ValueError(f"nonfinite must be 'recompute' or 'drop', got {value!r}")
    return value


def read_flow_csv(
    path: str | os.PathLike[str],
    features: Sequence[str] | None = None,
    max_rows: int | None = None,
    nonfinite: Literal["recompute", "drop"] = "recompute",
) -> FlowTable:
    """Read one CICFlowMeter CSV (any of the three families) into the canonical schema.

    Args:
        path: the CSV file.
        features: canonical features to keep (``None``: :data:`DEFAULT_FEATURES`); the base
            totals and what derived features need are read as well.
        max_rows: stop after this many data rows (``None``: read all).
        nonfinite: ``"recompute"`` or ``"drop"`` (module docstring, "Non-finite and negative
            values").

    Returns:
        A :class:`FlowTable` with the requested columns, derived features recomputed.

    Raises:
        ValueError: on an unknown schema, a missing label or feature column (naming it in both
            spellings), or bad arguments.
    """
    features = check_features(features)
    max_rows = check_optional_positive_int("max_rows", max_rows)
    _check_nonfinite(nonfinite)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"flow CSV {path!r} does not exist")
    needed = required_columns(features)
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataFileError(f"{path}: empty file (no header)")
        index, label_index, family = _map_header(header, path)
        missing = [name for name in needed if name not in index]
        if missing:
            spelled = [f"{name} ({LONG_NAMES[name]!r} / {SHORT_NAMES[name]!r})" for name in missing]
            raise DataFileError(f"{path}: the {family} header has no column for {spelled}")
        positions = [index[name] for name in needed]
        width = len(header)
        cells: list[list[str]] = [[] for _ in needed]
        labels: list[str] = []
        stats = {"rows": 0, "repeated_headers": 0, "dropped_malformed": 0}
        for row in reader:
            if not row:
                continue
            if len(row) != width:
                stats["dropped_malformed"] += 1
                continue
            label = row[label_index].strip()
            if label.lower() == LABEL_COLUMN.lower():
                # CSE-CIC-IDS2018 repeats the header inside some files.
                stats["repeated_headers"] += 1
                continue
            if not label:
                stats["dropped_malformed"] += 1
                continue
            stats["rows"] += 1
            labels.append(label)
            for column, position in zip(cells, positions, strict=False):
                column.append(row[position].strip())
            if max_rows is not None and stats["rows"] >= max_rows:
                break
    if stats["rows"] == 0:
        raise DataFileError(f"{path}: no data rows with {width} columns and a label "
                            f"({stats['dropped_malformed']} malformed row(s) dropped)")
    columns = {name: _to_float(column) for name, column in zip(needed, cells, strict=False)}
    table = FlowTable(columns, np.asarray(labels, dtype=object), [family], stats)
    return _clean(table, nonfinite)


def _clean(table: FlowTable, nonfinite: str) -> FlowTable:
    """Apply the non-finite/negative policy and recompute derived features."""
    stats = dict(table.stats)
    matrix = np.stack(list(table.columns.values()), axis=1) if table.columns else np.zeros((len(table), 0))
    keep = np.ones(len(table), dtype=bool)
    if nonfinite == "drop":
        finite = np.isfinite(matrix).all(axis=1)
        stats["dropped_nonfinite"] = int((~finite).sum())
        keep &= finite
    sentinel = np.array([name in SENTINEL_COLUMNS for name in table.columns])
    with np.errstate(invalid="ignore"):
        negative = (matrix[:, ~sentinel] < 0).any(axis=1) if matrix.size else np.zeros(len(table), dtype=bool)
    stats["dropped_negative"] = int((negative & keep).sum())
    keep &= ~negative
    table = FlowTable({k: v[keep] for k, v in table.columns.items()}, table.labels[keep], table.families, stats)
    tensors = {name: torch.from_numpy(values.copy()) for name, values in table.columns.items()}
    derive_features(tensors)
    table.columns = {name: tensors[name].numpy() for name in table.columns}
    finite = np.isfinite(np.stack(list(table.columns.values()), axis=1)).all(axis=1) if len(table) else np.ones(0, bool)
    stats["dropped_nonfinite"] = stats.get("dropped_nonfinite", 0) + int((~finite).sum())
    table = table.select(finite)
    table.stats = stats
    return table


def read_flow_csvs(
    paths: Sequence[str | os.PathLike[str]],
    features: Sequence[str] | None = None,
    max_rows_per_file: int | None = None,
    nonfinite: Literal["recompute", "drop"] = "recompute",
) -> FlowTable:
    """:func:`read_flow_csv` over several files (any mix of families), concatenated."""
    if not paths:
        raise ValueError("paths must name at least one CSV file")
    return FlowTable.concatenate([read_flow_csv(p, features, max_rows_per_file, nonfinite) for p in paths])
