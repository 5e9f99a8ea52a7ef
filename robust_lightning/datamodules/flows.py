"""CICFlowMeter flow tables: one canonical schema, a CSV loader, and a synthetic flow generator.

Three public datasets ship CICFlowMeter features as CSV, under two spellings of the same ~77
features:

* **CIC-IDS2017** (``MachineLearningCVE``): long names with stray leading spaces
  (``" Flow Duration"``, ``"Total Length of Fwd Packets"``, ``" Label"``), ``" Fwd Header Length"``
  twice; the ``TrafficLabelling`` variant adds ``Flow ID``, IPs, ports, ``Protocol``, ``Timestamp``.
* **CIC-DDoS2019**: the 2017 names plus ``Unnamed: 0``, ``Flow ID``, ``Source IP``,
  ``Timestamp``, ``SimillarHTTP`` and ``Inbound``.
* **CSE-CIC-IDS2018**: short names (``Dst Port``, ``Tot Fwd Pkts``, ``TotLen Fwd Pkts``,
  ``Fwd Pkt Len Max``, ``Flow Byts/s``, ...), repeated header rows inside some files.

:func:`read_flow_csv` maps either spelling (whitespace stripped, case-insensitive) to the
canonical snake_case names of :data:`CANONICAL_FEATURES`, drops identifiers (flow id, IPs,
source port, timestamps, the 2019 extras), and refuses a header it does not know with an error
that lists the unknown columns. Only the ``csv`` module and numpy are used (no pandas).

**Non-finite and negative values (our policy).** CICFlowMeter writes ``Infinity``/``NaN`` in
``Flow Bytes/s`` and ``Flow Packets/s`` when a flow lasts 0 µs (a rate divided by a zero
duration). With ``nonfinite="recompute"`` (default) every *derived* feature (rates, means,
ratios, see :func:`derive_features`) is recomputed from the flow's totals with the duration
floored at :data:`MIN_DURATION_US`, which removes those values; a row that still holds a
non-finite value (in a measured column) is dropped. ``nonfinite="drop"`` drops every row with a
non-finite value first (the common practice), then recomputes. Rows with a negative value are
dropped (negative durations, IATs and header lengths are known CICFlowMeter glitches in
CIC-IDS2017/2018), except in the initial-window columns where ``-1`` means "no TCP window" and
is kept. Derived features are always recomputed, so the clean data, the detector and the
constrained attack (:mod:`robust_lightning.attacks.constrained`) share one definition of every
derived feature; dropped rows are counted in :attr:`FlowTable.stats`.

Features stay in their raw units (packets, bytes, µs, per second): unlike the image
DataModules they are not in ``[0, 1]``. Normalisation (signed ``log1p`` then standardisation) is
a layer of the detector, so the constrained attack works, and its constraints hold, in raw
feature space.

:func:`generate_flow_csvs` simulates flows packet by packet (benign web, DNS, bulk transfer and
interactive sessions; SYN, UDP and HTTP floods, DNS/NTP-style reflection, slowloris), computes
their CICFlowMeter features from the packets and writes them in one of the three families' CSV
layouts (headers, identifier columns, ``Infinity``/``NaN`` cells, repeated headers, a few glitch
rows), so every test exercises the real loader. Each family is a :class:`FlowProfile` with its
own network (RTT, MSS, TCP stacks) and tool parameters: training on one family and testing on
another is a cross-dataset test with a distribution shift.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import re
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from robust_lightning.datamodules._common import (
    EpochShuffleSampler,
    check_fraction,
    check_non_negative_int,
    check_optional_positive_int,
    check_positive_int,
    generate_once,
    stratified_permutation,
)

__all__ = [
    "BASE_FEATURES",
    "CANONICAL_FEATURES",
    "DEFAULT_FEATURES",
    "DERIVED_FEATURES",
    "FLOW_PROFILES",
    "MIN_DURATION_US",
    "FlowDataModule",
    "FlowProfile",
    "FlowTable",
    "derive_features",
    "generate_flow_csvs",
    "is_benign_label",
    "read_flow_csv",
    "read_flow_csvs",
]

# -- schema ---------------------------------------------------------------------------------------
# (canonical name, CIC-IDS2017 / CIC-DDoS2019 long name, CSE-CIC-IDS2018 short name), in the
# column order CICFlowMeter writes them.
_SCHEMA: tuple[tuple[str, str, str], ...] = (
    ("dst_port", "Destination Port", "Dst Port"),
    ("protocol", "Protocol", "Protocol"),
    ("flow_duration", "Flow Duration", "Flow Duration"),
    ("tot_fwd_pkts", "Total Fwd Packets", "Tot Fwd Pkts"),
    ("tot_bwd_pkts", "Total Backward Packets", "Tot Bwd Pkts"),
    ("totlen_fwd_pkts", "Total Length of Fwd Packets", "TotLen Fwd Pkts"),
    ("totlen_bwd_pkts", "Total Length of Bwd Packets", "TotLen Bwd Pkts"),
    ("fwd_pkt_len_max", "Fwd Packet Length Max", "Fwd Pkt Len Max"),
    ("fwd_pkt_len_min", "Fwd Packet Length Min", "Fwd Pkt Len Min"),
    ("fwd_pkt_len_mean", "Fwd Packet Length Mean", "Fwd Pkt Len Mean"),
    ("fwd_pkt_len_std", "Fwd Packet Length Std", "Fwd Pkt Len Std"),
    ("bwd_pkt_len_max", "Bwd Packet Length Max", "Bwd Pkt Len Max"),
    ("bwd_pkt_len_min", "Bwd Packet Length Min", "Bwd Pkt Len Min"),
    ("bwd_pkt_len_mean", "Bwd Packet Length Mean", "Bwd Pkt Len Mean"),
    ("bwd_pkt_len_std", "Bwd Packet Length Std", "Bwd Pkt Len Std"),
    ("flow_byts_s", "Flow Bytes/s", "Flow Byts/s"),
    ("flow_pkts_s", "Flow Packets/s", "Flow Pkts/s"),
    ("flow_iat_mean", "Flow IAT Mean", "Flow IAT Mean"),
    ("flow_iat_std", "Flow IAT Std", "Flow IAT Std"),
    ("flow_iat_max", "Flow IAT Max", "Flow IAT Max"),
    ("flow_iat_min", "Flow IAT Min", "Flow IAT Min"),
    ("fwd_iat_tot", "Fwd IAT Total", "Fwd IAT Tot"),
    ("fwd_iat_mean", "Fwd IAT Mean", "Fwd IAT Mean"),
    ("fwd_iat_std", "Fwd IAT Std", "Fwd IAT Std"),
    ("fwd_iat_max", "Fwd IAT Max", "Fwd IAT Max"),
    ("fwd_iat_min", "Fwd IAT Min", "Fwd IAT Min"),
    ("bwd_iat_tot", "Bwd IAT Total", "Bwd IAT Tot"),
    ("bwd_iat_mean", "Bwd IAT Mean", "Bwd IAT Mean"),
    ("bwd_iat_std", "Bwd IAT Std", "Bwd IAT Std"),
    ("bwd_iat_max", "Bwd IAT Max", "Bwd IAT Max"),
    ("bwd_iat_min", "Bwd IAT Min", "Bwd IAT Min"),
    ("fwd_psh_flags", "Fwd PSH Flags", "Fwd PSH Flags"),
    ("bwd_psh_flags", "Bwd PSH Flags", "Bwd PSH Flags"),
    ("fwd_urg_flags", "Fwd URG Flags", "Fwd URG Flags"),
    ("bwd_urg_flags", "Bwd URG Flags", "Bwd URG Flags"),
    ("fwd_header_len", "Fwd Header Length", "Fwd Header Len"),
    ("bwd_header_len", "Bwd Header Length", "Bwd Header Len"),
    ("fwd_pkts_s", "Fwd Packets/s", "Fwd Pkts/s"),
    ("bwd_pkts_s", "Bwd Packets/s", "Bwd Pkts/s"),
    ("pkt_len_min", "Min Packet Length", "Pkt Len Min"),
    ("pkt_len_max", "Max Packet Length", "Pkt Len Max"),
    ("pkt_len_mean", "Packet Length Mean", "Pkt Len Mean"),
    ("pkt_len_std", "Packet Length Std", "Pkt Len Std"),
    ("pkt_len_var", "Packet Length Variance", "Pkt Len Var"),
    ("fin_flag_cnt", "FIN Flag Count", "FIN Flag Cnt"),
    ("syn_flag_cnt", "SYN Flag Count", "SYN Flag Cnt"),
    ("rst_flag_cnt", "RST Flag Count", "RST Flag Cnt"),
    ("psh_flag_cnt", "PSH Flag Count", "PSH Flag Cnt"),
    ("ack_flag_cnt", "ACK Flag Count", "ACK Flag Cnt"),
    ("urg_flag_cnt", "URG Flag Count", "URG Flag Cnt"),
    ("cwe_flag_count", "CWE Flag Count", "CWE Flag Count"),
    ("ece_flag_cnt", "ECE Flag Count", "ECE Flag Cnt"),
    ("down_up_ratio", "Down/Up Ratio", "Down/Up Ratio"),
    ("pkt_size_avg", "Average Packet Size", "Pkt Size Avg"),
    ("fwd_seg_size_avg", "Avg Fwd Segment Size", "Fwd Seg Size Avg"),
    ("bwd_seg_size_avg", "Avg Bwd Segment Size", "Bwd Seg Size Avg"),
    ("fwd_byts_b_avg", "Fwd Avg Bytes/Bulk", "Fwd Byts/b Avg"),
    ("fwd_pkts_b_avg", "Fwd Avg Packets/Bulk", "Fwd Pkts/b Avg"),
    ("fwd_blk_rate_avg", "Fwd Avg Bulk Rate", "Fwd Blk Rate Avg"),
    ("bwd_byts_b_avg", "Bwd Avg Bytes/Bulk", "Bwd Byts/b Avg"),
    ("bwd_pkts_b_avg", "Bwd Avg Packets/Bulk", "Bwd Pkts/b Avg"),
    ("bwd_blk_rate_avg", "Bwd Avg Bulk Rate", "Bwd Blk Rate Avg"),
    ("subflow_fwd_pkts", "Subflow Fwd Packets", "Subflow Fwd Pkts"),
    ("subflow_fwd_byts", "Subflow Fwd Bytes", "Subflow Fwd Byts"),
    ("subflow_bwd_pkts", "Subflow Bwd Packets", "Subflow Bwd Pkts"),
    ("subflow_bwd_byts", "Subflow Bwd Bytes", "Subflow Bwd Byts"),
    ("init_fwd_win_byts", "Init_Win_bytes_forward", "Init Fwd Win Byts"),
    ("init_bwd_win_byts", "Init_Win_bytes_backward", "Init Bwd Win Byts"),
    ("fwd_act_data_pkts", "act_data_pkt_fwd", "Fwd Act Data Pkts"),
    ("fwd_seg_size_min", "min_seg_size_forward", "Fwd Seg Size Min"),
    ("active_mean", "Active Mean", "Active Mean"),
    ("active_std", "Active Std", "Active Std"),
    ("active_max", "Active Max", "Active Max"),
    ("active_min", "Active Min", "Active Min"),
    ("idle_mean", "Idle Mean", "Idle Mean"),
    ("idle_std", "Idle Std", "Idle Std"),
    ("idle_max", "Idle Max", "Idle Max"),
    ("idle_min", "Idle Min", "Idle Min"),
)
CANONICAL_FEATURES: tuple[str, ...] = tuple(name for name, _, _ in _SCHEMA)
LONG_NAMES: dict[str, str] = {name: long for name, long, _ in _SCHEMA}
SHORT_NAMES: dict[str, str] = {name: short for name, _, short in _SCHEMA}
FAMILIES: tuple[str, ...] = ("cicids2017", "cicddos2019", "csecicids2018")

# lower-cased header -> (canonical name, spelling); "both" when the families agree.
_ALIASES: dict[str, tuple[str, str]] = {}
for _name, _long, _short in _SCHEMA:
    _ALIASES[_long.lower()] = (_name, "both" if _long == _short else "long")
    if _short != _long:
        _ALIASES[_short.lower()] = (_name, "short")
# CSE-CIC-IDS2018 itself spells one flag column either way.
_ALIASES["cwe flag cnt"] = ("cwe_flag_count", "short")

# Columns that identify a flow rather than describe it; dropped on read.
IDENTIFIER_COLUMNS: tuple[str, ...] = (
    "Flow ID", "Source IP", "Src IP", "Source Port", "Src Port", "Destination IP", "Dst IP",
    "Timestamp", "SimillarHTTP", "Inbound",
)
_IDENTIFIERS = {name.lower() for name in IDENTIFIER_COLUMNS}
# pandas' index column and pandas' rename of CIC-IDS2017's duplicated "Fwd Header Length".
_PANDAS_INDEX = re.compile(r"^unnamed: \d+(\.\d+)?$")
_PANDAS_DUPLICATE = re.compile(r"^(.*)\.\d+$")
_DDOS2019_MARKERS = {"simillarhttp", "inbound"}
LABEL_COLUMN = "Label"

#: Totals every derived feature is computed from; every flow table holds them.
BASE_FEATURES: tuple[str, ...] = (
    "flow_duration", "tot_fwd_pkts", "tot_bwd_pkts", "totlen_fwd_pkts", "totlen_bwd_pkts",
)
#: Features :func:`derive_features` recomputes from the others (rates, means, ratios).
DERIVED_FEATURES: tuple[str, ...] = (
    "fwd_pkt_len_mean", "bwd_pkt_len_mean", "flow_byts_s", "flow_pkts_s", "fwd_pkts_s", "bwd_pkts_s",
    "flow_iat_mean", "fwd_iat_mean", "bwd_iat_mean", "pkt_len_mean", "pkt_len_var", "pkt_size_avg",
    "fwd_seg_size_avg", "bwd_seg_size_avg", "down_up_ratio",
)
# Beyond the base totals, a derived feature needs these measured columns.
DERIVED_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "fwd_iat_mean": ("fwd_iat_tot",),
    "bwd_iat_mean": ("bwd_iat_tot",),
    "pkt_len_var": ("pkt_len_std",),
}
#: Columns where -1 is CICFlowMeter's "no TCP window" value rather than a glitch.
SENTINEL_COLUMNS: tuple[str, ...] = ("init_fwd_win_byts", "init_bwd_win_byts")
#: Durations below this are floored when rates are computed (CICFlowMeter divides by zero there).
MIN_DURATION_US = 1.0

#: The detector's default input: every feature whose behaviour under the constrained attack is
#: modelled (see :mod:`robust_lightning.attacks.constrained`). Left out: the destination port and
#: protocol (categorical; CIC-IDS2017's MachineLearningCVE has no protocol column), the flag
#: counts (known to be unreliable in CIC-IDS2017), bulk, subflow and active/idle statistics.
DEFAULT_FEATURES: tuple[str, ...] = (
    "flow_duration", "tot_fwd_pkts", "tot_bwd_pkts", "totlen_fwd_pkts", "totlen_bwd_pkts",
    "fwd_pkt_len_max", "fwd_pkt_len_min", "fwd_pkt_len_mean", "fwd_pkt_len_std",
    "bwd_pkt_len_max", "bwd_pkt_len_min", "bwd_pkt_len_mean", "bwd_pkt_len_std",
    "flow_byts_s", "flow_pkts_s",
    "flow_iat_mean", "flow_iat_std", "flow_iat_max", "flow_iat_min",
    "fwd_iat_tot", "fwd_iat_mean", "fwd_iat_std", "fwd_iat_max", "fwd_iat_min",
    "bwd_iat_tot", "bwd_iat_mean", "bwd_iat_std", "bwd_iat_max", "bwd_iat_min",
    "fwd_header_len", "bwd_header_len", "fwd_pkts_s", "bwd_pkts_s",
    "pkt_len_min", "pkt_len_max", "pkt_len_mean", "pkt_len_std", "pkt_len_var",
    "down_up_ratio", "pkt_size_avg", "fwd_seg_size_avg", "bwd_seg_size_avg",
    "init_fwd_win_byts", "init_bwd_win_byts", "fwd_act_data_pkts", "fwd_seg_size_min",
)

# Statistic groups: (min, mean, max, std) column names of one quantity.
STAT_GROUPS: dict[str, tuple[str, str, str, str]] = {
    group: (f"{group}_min", f"{group}_mean", f"{group}_max", f"{group}_std")
    for group in ("fwd_pkt_len", "bwd_pkt_len", "pkt_len", "flow_iat", "fwd_iat", "bwd_iat")
}


def check_features(features: Sequence[str] | None, argument: str = "features") -> tuple[str, ...]:
    """Validated feature names (``None`` gives :data:`DEFAULT_FEATURES`).

    Raises:
        ValueError: naming ``argument`` on unknown or repeated names, or a missing base total.
    """
    if features is None:
        return DEFAULT_FEATURES
    if isinstance(features, str) or not isinstance(features, Sequence) or not features:
        raise ValueError(f"{argument} must be a non-empty list of canonical feature names, got {features!r}")
    unknown = [f for f in features if f not in CANONICAL_FEATURES]
    if unknown:
        raise ValueError(f"{argument} has unknown feature names {unknown}; canonical names are {list(CANONICAL_FEATURES)}")
    if len(set(features)) != len(features):
        raise ValueError(f"{argument} repeats a feature: {list(features)}")
    return tuple(features)


def _read_columns(features: Sequence[str]) -> tuple[str, ...]:
    """The measured columns a table needs to hold ``features`` with their derived values."""
    needed = list(BASE_FEATURES)
    for name in features:
        needed.extend(DERIVED_DEPENDENCIES.get(name, ()))
        needed.append(name)
    return tuple(dict.fromkeys(needed))


def is_benign_label(label: str) -> bool:
    """``True`` for the benign label of every family (``BENIGN``, ``Benign``, stray spaces)."""
    return label.strip().lower() == "benign"


# -- derived features (torch, differentiable: the constrained attack uses the same code) -----------
def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` where the denominator (a count) is positive, else 0."""
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1.0), torch.zeros_like(numerator))


def derive_features(columns: MutableMapping[str, Tensor]) -> MutableMapping[str, Tensor]:
    """Recompute every derived feature present in ``columns`` from the measured ones, in place.

    Our reading of CICFlowMeter's definitions (durations and IATs in µs, rates per second):

    * means: ``fwd_pkt_len_mean = totlen_fwd_pkts / tot_fwd_pkts`` (likewise bwd; ``pkt_len_mean``
      and ``pkt_size_avg`` over both directions), ``flow_iat_mean = flow_duration / (N - 1)``,
      ``fwd_iat_mean = fwd_iat_tot / (tot_fwd_pkts - 1)`` (likewise bwd), 0 when undefined;
      ``fwd_seg_size_avg``/``bwd_seg_size_avg`` equal the direction's mean packet length;
    * rates: ``flow_byts_s = (totlen_fwd + totlen_bwd) / d``, ``flow_pkts_s = N / d``,
      ``fwd_pkts_s``, ``bwd_pkts_s`` with ``d = max(flow_duration, 1 µs) / 1e6`` seconds;
    * ``down_up_ratio = floor(tot_bwd_pkts / tot_fwd_pkts)`` (CICFlowMeter's integer division);
      ``pkt_len_var = pkt_len_std ** 2``;
    * repairs: IAT totals and maxima are at most the duration, ``min <= mean <= max`` in every
      statistic group (the min/max move to the mean), standard deviations are ``>= 0``.

    Only keys already in ``columns`` are written; :data:`BASE_FEATURES` must be present.

    Args:
        columns: canonical name -> ``(B,)`` tensor, all on one device and dtype.

    Returns:
        ``columns`` itself.

    Raises:
        KeyError: naming a missing base total.
    """
    missing = [name for name in BASE_FEATURES if name not in columns]
    if missing:
        raise KeyError(f"derive_features needs the base totals {list(BASE_FEATURES)}; missing {missing}")
    duration = columns["flow_duration"]
    n_fwd, n_bwd = columns["tot_fwd_pkts"], columns["tot_bwd_pkts"]
    len_fwd, len_bwd = columns["totlen_fwd_pkts"], columns["totlen_bwd_pkts"]
    n_all = n_fwd + n_bwd
    for name in ("fwd_iat_tot", "bwd_iat_tot", "flow_iat_max", "fwd_iat_max", "bwd_iat_max"):
        if name in columns:
            columns[name] = torch.minimum(columns[name], duration)
    means = {
        "fwd_pkt_len": _ratio(len_fwd, n_fwd),
        "bwd_pkt_len": _ratio(len_bwd, n_bwd),
        "pkt_len": _ratio(len_fwd + len_bwd, n_all),
        "flow_iat": _ratio(duration, n_all - 1),
    }
    if "fwd_iat_tot" in columns:
        means["fwd_iat"] = _ratio(columns["fwd_iat_tot"], n_fwd - 1)
    if "bwd_iat_tot" in columns:
        means["bwd_iat"] = _ratio(columns["bwd_iat_tot"], n_bwd - 1)
    seconds = duration.clamp_min(MIN_DURATION_US) / 1e6
    values = {
        "flow_byts_s": (len_fwd + len_bwd) / seconds,
        "flow_pkts_s": n_all / seconds,
        "fwd_pkts_s": n_fwd / seconds,
        "bwd_pkts_s": n_bwd / seconds,
        "pkt_size_avg": means["pkt_len"],
        "fwd_seg_size_avg": means["fwd_pkt_len"],
        "bwd_seg_size_avg": means["bwd_pkt_len"],
        # floor has a zero gradient: the ratio is piecewise constant in the counts.
        "down_up_ratio": torch.where(n_fwd > 0, torch.floor(n_bwd / n_fwd.clamp_min(1.0)), torch.zeros_like(n_fwd)),
    }
    for group, mean in means.items():
        values[f"{group}_mean"] = mean
    for name, value in values.items():
        if name in columns:
            columns[name] = value
    for group, mean in means.items():
        low, _, high, std = STAT_GROUPS[group]
        if low in columns:
            columns[low] = torch.minimum(columns[low], mean)
        if high in columns:
            columns[high] = torch.maximum(columns[high], mean)
        if std in columns:
            columns[std] = columns[std].clamp_min(0.0)
    if "pkt_len_var" in columns and "pkt_len_std" in columns:
        columns["pkt_len_var"] = columns["pkt_len_std"] ** 2
    return columns


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
        alias = _ALIASES.get(key)
        if alias is None:
            duplicate = _PANDAS_DUPLICATE.match(key)
            if duplicate and duplicate.group(1) in _ALIASES:
                continue  # pandas' "Fwd Header Length.1": a copy of a column we already read
            unknown.append(name)
            continue
        canonical, spelling = alias
        if spelling != "both":
            spellings.add(spelling)
        # CIC-IDS2017 writes "Fwd Header Length" twice with the same values: keep the first.
        index.setdefault(canonical, position)
    if unknown:
        raise ValueError(
            f"{path}: unknown flow CSV schema: columns {unknown} are neither CICFlowMeter features nor "
            f"known identifiers. Known: CIC-IDS2017/CIC-DDoS2019 long names (e.g. 'Total Fwd Packets', "
            f"'Total Length of Fwd Packets'), CSE-CIC-IDS2018 short names (e.g. 'Tot Fwd Pkts', "
            f"'TotLen Fwd Pkts'); identifiers dropped: {list(IDENTIFIER_COLUMNS)} and 'Unnamed: N'"
        )
    if label_index is None:
        raise ValueError(f"{path}: no '{LABEL_COLUMN}' column (whitespace and case are ignored); flow CSVs must be labelled")
    if spellings == {"long", "short"}:
        raise ValueError(f"{path}: the header mixes CIC-IDS2017 long names and CSE-CIC-IDS2018 short names")
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
    needed = _read_columns(features)
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file (no header)")
        index, label_index, family = _map_header(header, path)
        missing = [name for name in needed if name not in index]
        if missing:
            spelled = [f"{name} ({LONG_NAMES[name]!r} / {SHORT_NAMES[name]!r})" for name in missing]
            raise ValueError(f"{path}: the {family} header has no column for {spelled}")
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
            for column, position in zip(cells, positions):
                column.append(row[position].strip())
            if max_rows is not None and stats["rows"] >= max_rows:
                break
    columns = {name: _to_float(column) for name, column in zip(needed, cells)}
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


# -- synthetic flows ------------------------------------------------------------------------------
_FIN, _SYN, _RST, _PSH, _ACK, _URG, _CWE, _ECE = 1, 2, 4, 8, 16, 32, 64, 128
_FLAG_COLUMNS = (("fin_flag_cnt", _FIN), ("syn_flag_cnt", _SYN), ("rst_flag_cnt", _RST), ("psh_flag_cnt", _PSH),
                 ("ack_flag_cnt", _ACK), ("urg_flag_cnt", _URG), ("cwe_flag_count", _CWE), ("ece_flag_cnt", _ECE))
_ACTIVITY_TIMEOUT_US = 5e6  # CICFlowMeter's activity timeout: longer gaps are "idle"
_FLOW_TIMEOUT_US = 120e6  # CICFlowMeter's flow timeout
BENIGN_KINDS: tuple[str, ...] = ("benign_web", "benign_dns", "benign_bulk", "benign_interactive")
ATTACK_KINDS: tuple[str, ...] = ("syn_flood", "udp_flood", "http_flood", "reflection", "slowloris")


@dataclass(frozen=True)
class FlowProfile:
    """Network and attack-tool parameters of one synthetic CSV family.

    Args:
        header: CSV layout written: ``"cicids2017"``, ``"csecicids2018"`` or ``"cicddos2019"``.
        kinds: flow kind -> share of flows (kinds in :data:`BENIGN_KINDS` + :data:`ATTACK_KINDS`).
        labels: flow kind -> label string written in the ``Label`` column.
        rtt_us: median and log-normal sigma of the round-trip time (µs).
        mss: TCP maximum segment size (payload bytes of a full segment).
        tcp_headers: benign TCP header sizes (bytes, options included) and their probabilities.
        windows: initial TCP windows of benign stacks (and of HTTP floods, which use the OS stack).
        syn_windows: initial windows written by SYN-flood tools.
        syn_header_20: probability a SYN-flood packet has a bare 20-byte TCP header.
        udp_flood_payload: payload range (bytes) of UDP-flood packets (one size per flow).
        reflection_payload: payload range (bytes) of reflected/amplified responses.
        flood_iat_us: log-uniform range of flood inter-arrival times (µs).
        http_request: payload range of benign HTTP requests (bytes).
        http_flood_request: payload range of HTTP-flood requests (bytes).
        response_median: median benign HTTP response (bytes).
        glitch_rate: share of rows written with a negative value (CICFlowMeter glitches).
    """

    header: Literal["cicids2017", "csecicids2018", "cicddos2019"]
    kinds: Mapping[str, float]
    labels: Mapping[str, str]
    rtt_us: tuple[float, float] = (20_000.0, 0.8)
    mss: int = 1460
    tcp_headers: tuple[tuple[int, float], ...] = ((32, 0.7), (20, 0.2), (40, 0.1))
    windows: tuple[int, ...] = (29200, 8192, 65535, 14600, 64240)
    syn_windows: tuple[int, ...] = (512, 1024, 2048, 8192)
    syn_header_20: float = 0.8
    udp_flood_payload: tuple[int, int] = (18, 64)
    reflection_payload: tuple[int, int] = (400, 1460)
    flood_iat_us: tuple[float, float] = (20.0, 2000.0)
    http_request: tuple[int, int] = (250, 900)
    http_flood_request: tuple[int, int] = (80, 260)
    response_median: float = 6000.0
    glitch_rate: float = 0.003

    def __post_init__(self) -> None:
        if self.header not in FAMILIES:
            raise ValueError(f"header must be one of {FAMILIES}, got {self.header!r}")
        unknown = [k for k in self.kinds if k not in BENIGN_KINDS + ATTACK_KINDS]
        if unknown:
            raise ValueError(f"kinds has unknown flow kinds {unknown}; known: {BENIGN_KINDS + ATTACK_KINDS}")
        unlabelled = [k for k, share in self.kinds.items() if share > 0 and k not in self.labels]
        if unlabelled:
            raise ValueError(f"labels has no label for kinds {unlabelled}")
        if not any(self.kinds.get(k, 0) > 0 for k in BENIGN_KINDS) or not any(self.kinds.get(k, 0) > 0 for k in ATTACK_KINDS):
            raise ValueError("kinds must give a positive share to at least one benign and one attack kind")


_LABELS_2017 = {**{k: "BENIGN" for k in BENIGN_KINDS}, "syn_flood": "DDoS", "udp_flood": "DDoS",
                "http_flood": "DDoS", "reflection": "DDoS", "slowloris": "DoS slowloris"}
_LABELS_2018 = {**{k: "Benign" for k in BENIGN_KINDS}, "syn_flood": "DDoS attacks-SYN",
                "udp_flood": "DDOS attack-LOIC-UDP", "http_flood": "DDoS attacks-LOIC-HTTP",
                "reflection": "DDoS attacks-DNS-reflection", "slowloris": "DoS attacks-Slowloris"}
_LABELS_2019 = {**{k: "BENIGN" for k in BENIGN_KINDS}, "syn_flood": "Syn", "udp_flood": "UDP",
                "http_flood": "WebDDoS", "reflection": "DrDoS_DNS", "slowloris": "Slowloris"}

#: The synthetic families. ``csecicids2018`` differs from ``cicids2017`` in the network (RTT x2,
#: MSS 1448, other TCP stacks and windows), the attack tools (payloads, rates, SYN windows) and
#: the traffic mix: a distribution shift for cross-dataset tests.
FLOW_PROFILES: dict[str, FlowProfile] = {
    "cicids2017": FlowProfile(
        header="cicids2017", labels=_LABELS_2017,
        kinds={"benign_web": 0.30, "benign_dns": 0.12, "benign_bulk": 0.05, "benign_interactive": 0.05,
               "syn_flood": 0.12, "udp_flood": 0.10, "http_flood": 0.12, "reflection": 0.08, "slowloris": 0.06},
    ),
    "csecicids2018": FlowProfile(
        header="csecicids2018", labels=_LABELS_2018,
        kinds={"benign_web": 0.35, "benign_dns": 0.08, "benign_bulk": 0.08, "benign_interactive": 0.04,
               "syn_flood": 0.08, "udp_flood": 0.12, "http_flood": 0.15, "reflection": 0.05, "slowloris": 0.05},
        rtt_us=(45_000.0, 0.9), mss=1448, tcp_headers=((32, 0.5), (40, 0.3), (20, 0.2)),
        windows=(26883, 64240, 65535, 8192, 62727), syn_windows=(512, 1024, 4096, 65535), syn_header_20=0.7,
        udp_flood_payload=(24, 120), reflection_payload=(350, 1448), flood_iat_us=(40.0, 5000.0),
        http_request=(300, 1100), http_flood_request=(120, 380), response_median=9000.0,
    ),
    "cicddos2019": FlowProfile(
        header="cicddos2019", labels=_LABELS_2019,
        kinds={"benign_web": 0.30, "benign_dns": 0.15, "benign_bulk": 0.03, "benign_interactive": 0.02,
               "syn_flood": 0.15, "udp_flood": 0.15, "http_flood": 0.05, "reflection": 0.15},
        rtt_us=(15_000.0, 0.7), windows=(29200, 65535, 8192, 64240), udp_flood_payload=(300, 1400),
        reflection_payload=(450, 1460), flood_iat_us=(5.0, 800.0),
    ),
}


class _Packets:
    """Packets of one simulated flow (times in µs, payload and header bytes, TCP flags)."""

    def __init__(self, tcp: bool) -> None:
        self.tcp = tcp
        self.rows: list[tuple[float, bool, int, int, int, int]] = []

    def add(self, time: float, forward: bool, payload: int, header: int, flags: int = 0, window: int = -1) -> None:
        self.rows.append((float(time), forward, int(payload), int(header), flags, window))


def _rtt(rng: np.random.Generator, profile: FlowProfile) -> float:
    median, sigma = profile.rtt_us
    return float(median * math.exp(sigma * rng.standard_normal()))


def _tcp_header(rng: np.random.Generator, profile: FlowProfile) -> int:
    sizes, probs = zip(*profile.tcp_headers)
    return int(rng.choice(sizes, p=np.asarray(probs) / sum(probs)))


def _lognormal(rng: np.random.Generator, median: float, sigma: float, low: float, high: float) -> float:
    return float(np.clip(median * math.exp(sigma * rng.standard_normal()), low, high))


def _handshake(rng: np.random.Generator, profile: FlowProfile, packets: _Packets, client: int, server: int,
               window: int, rtt: float) -> float:
    packets.add(0.0, True, 0, client, _SYN, window)
    packets.add(rtt, False, 0, server, _SYN | _ACK, int(rng.choice(profile.windows)))
    t = rtt + rng.uniform(30, 400)
    packets.add(t, True, 0, client, _ACK)
    return t


def _respond(rng: np.random.Generator, packets: _Packets, t: float, size: int, mss: int, server: int, client: int,
             rtt: float, max_segments: int) -> float:
    """Server sends ``size`` bytes in MSS segments (bursts of 10 per RTT); the client ACKs every 2nd."""
    segments = max(1, min(max_segments, math.ceil(size / mss)))
    remaining = size
    for i in range(segments):
        payload = min(mss, remaining) if i < segments - 1 else max(1, min(mss, remaining))
        remaining -= payload
        packets.add(t, False, payload, server, _ACK | (_PSH if i == segments - 1 else 0))
        if i % 2 == 1 or i == segments - 1:
            packets.add(t + rng.uniform(20, 200), True, 0, client, _ACK)
        t += rng.uniform(15, 150) if (i + 1) % 10 else rtt
    return t


def _close(rng: np.random.Generator, packets: _Packets, t: float, client: int, server: int, rtt: float) -> None:
    packets.add(t, True, 0, client, _FIN | _ACK)
    packets.add(t + rtt, False, 0, server, _FIN | _ACK)
    packets.add(t + rtt + rng.uniform(30, 300), True, 0, client, _ACK)


def _web(rng: np.random.Generator, p: FlowProfile, request: tuple[int, int], requests: int, response_median: float,
         think_us: float, window: int, max_segments: int) -> _Packets:
    packets = _Packets(tcp=True)
    rtt = _rtt(rng, p)
    client, server = _tcp_header(rng, p), _tcp_header(rng, p)
    t = _handshake(rng, p, packets, client, server, window, rtt)
    for r in range(requests):
        t += rng.uniform(50, 2000)
        packets.add(t, True, int(rng.integers(*request)), client, _PSH | _ACK)
        t += rtt * rng.uniform(1.0, 2.5)
        size = int(_lognormal(rng, response_median, 1.1, 200, 4e6))
        t = _respond(rng, packets, t, size, p.mss, server, client, rtt, max_segments)
        if r < requests - 1:
            t += _lognormal(rng, think_us, 1.0, 1e3, 2e7)
    _close(rng, packets, t + _lognormal(rng, think_us, 1.0, 1e3, 2e7), client, server, rtt)
    return packets


def _benign_web(rng, p):
    return _web(rng, p, p.http_request, int(rng.geometric(0.5)), p.response_median, 3e5,
                int(rng.choice(p.windows)), 60)


def _benign_bulk(rng, p):
    return _web(rng, p, p.http_request, 1, p.response_median * 40, 3e5, int(rng.choice(p.windows)), 160)


def _benign_dns(rng, p):
    packets = _Packets(tcp=False)
    rtt = _rtt(rng, p)
    query = int(rng.integers(20, 60))
    packets.add(0.0, True, query, 8)
    if rng.random() < 0.88:
        packets.add(rtt * rng.uniform(0.5, 1.5), False, int(rng.integers(40, 480)), 8)
    elif rng.random() < 0.5:  # no answer: the resolver retries after a second
        retry = rng.uniform(1e6, 2e6)
        packets.add(retry, True, query, 8)
        packets.add(retry + rtt, False, int(rng.integers(40, 480)), 8)
    return packets


def _benign_interactive(rng, p):
    packets = _Packets(tcp=True)
    rtt = _rtt(rng, p)
    client, server = _tcp_header(rng, p), _tcp_header(rng, p)
    t = _handshake(rng, p, packets, client, server, int(rng.choice(p.windows)), rtt)
    for _ in range(int(rng.integers(5, 40))):
        t += _lognormal(rng, 4e5, 1.2, 1e3, 8e6)
        packets.add(t, True, int(rng.integers(36, 120)), client, _PSH | _ACK)
        packets.add(t + rtt, False, int(rng.integers(36, 400)), server, _PSH | _ACK)
        t += rtt
    _close(rng, packets, t + rng.uniform(1e3, 1e5), client, server, rtt)
    return packets


def _syn_flood(rng, p):
    packets = _Packets(tcp=True)
    header = 20 if rng.random() < p.syn_header_20 else 40
    window = int(rng.choice(p.syn_windows))
    packets.add(0.0, True, 0, header, _SYN, window)
    if rng.random() < 0.25:  # tools reusing a source port: a second SYN of the same 5-tuple
        packets.add(rng.uniform(1, 3000), True, 0, header, _SYN, window)
    rtt = _rtt(rng, p)
    if rng.random() < 0.6:  # the victim answers and retransmits its SYN-ACK (no ACK ever comes)
        server = _tcp_header(rng, p)
        server_window = int(rng.choice(p.windows))
        t, delay = rtt, 1e6
        packets.add(t, False, 0, server, _SYN | _ACK, server_window)
        while rng.random() < 0.5 and t + delay < _FLOW_TIMEOUT_US:
            t += delay
            delay *= 2
            packets.add(t, False, 0, server, _SYN | _ACK)
    elif rng.random() < 0.3:
        packets.add(rtt, False, 0, 20, _RST | _ACK)
    return packets


def _flood_times(rng: np.random.Generator, count: int, low: float, high: float) -> np.ndarray:
    base = math.exp(rng.uniform(math.log(low), math.log(high)))  # one sending rate per flow
    gaps = base * np.exp(0.3 * rng.standard_normal(count - 1)) if count > 1 else np.zeros(0)
    return np.concatenate([[0.0], np.cumsum(gaps)])


def _udp_flood(rng, p):
    packets = _Packets(tcp=False)
    count = int(min(200, 1 + rng.geometric(1 / 30)))
    payload = int(rng.integers(*p.udp_flood_payload))
    for t in _flood_times(rng, count, *p.flood_iat_us):
        packets.add(t, True, payload, 8)
    return packets


def _http_flood(rng, p):
    # One to three requests per connection, tiny think times, small responses, fast close.
    return _web(rng, p, p.http_flood_request, int(rng.integers(1, 4)), 1500.0, 2e3, int(rng.choice(p.windows)), 20)


def _reflection(rng, p):
    packets = _Packets(tcp=False)
    count = int(min(120, rng.geometric(1 / 12)))
    size = int(rng.integers(*p.reflection_payload))
    low, high = p.flood_iat_us
    for t in _flood_times(rng, count, low, high * 3):
        packets.add(t, True, int(max(1, size - rng.integers(0, 40))), 8)
    return packets


def _slowloris(rng, p):
    packets = _Packets(tcp=True)
    rtt = _rtt(rng, p)
    client, server = _tcp_header(rng, p), _tcp_header(rng, p)
    t = _handshake(rng, p, packets, client, server, int(rng.choice(p.windows)), rtt)
    for _ in range(int(rng.integers(3, 12))):
        t += rng.uniform(5e6, 10e6)
        if t + rtt >= _FLOW_TIMEOUT_US:
            break
        packets.add(t, True, int(rng.integers(5, 40)), client, _PSH | _ACK)
        packets.add(t + rtt, False, 0, server, _ACK)
    return packets


_GENERATORS = {"benign_web": _benign_web, "benign_bulk": _benign_bulk, "benign_dns": _benign_dns,
               "benign_interactive": _benign_interactive, "syn_flood": _syn_flood, "udp_flood": _udp_flood,
               "http_flood": _http_flood, "reflection": _reflection, "slowloris": _slowloris}
_PORTS = {"benign_web": (80, 443), "benign_bulk": (443, 80), "benign_dns": (53,), "benign_interactive": (22,),
          "syn_flood": (80, 443, 21), "udp_flood": (80, 53, 1900, 0), "http_flood": (80,), "reflection": (0,),
          "slowloris": (80,)}


def _stats(values: np.ndarray) -> tuple[float, float, float, float]:
    """(max, min, mean, sample std) with CICFlowMeter's zeros for an empty set."""
    if values.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.max()), float(values.min()), float(values.mean()), std


def flow_features(packets: _Packets) -> dict[str, float]:
    """CICFlowMeter features of one simulated flow (our reading of the definitions)."""
    rows = sorted(packets.rows, key=lambda row: row[0])
    times = np.round(np.array([r[0] for r in rows]) - rows[0][0]).astype(np.float64)
    forward = np.array([r[1] for r in rows])
    payload = np.array([r[2] for r in rows], dtype=np.float64)
    header = np.array([r[3] for r in rows], dtype=np.float64)
    flags = np.array([r[4] for r in rows], dtype=np.int64)
    f: dict[str, float] = {}
    duration = float(times[-1] - times[0])
    f["flow_duration"] = duration
    f["tot_fwd_pkts"], f["tot_bwd_pkts"] = float(forward.sum()), float((~forward).sum())
    f["totlen_fwd_pkts"], f["totlen_bwd_pkts"] = float(payload[forward].sum()), float(payload[~forward].sum())
    for prefix, values in (("fwd_pkt_len", payload[forward]), ("bwd_pkt_len", payload[~forward]), ("pkt_len", payload)):
        f[f"{prefix}_max"], f[f"{prefix}_min"], f[f"{prefix}_mean"], f[f"{prefix}_std"] = _stats(values)
    f["pkt_len_var"] = f["pkt_len_std"] ** 2
    for prefix, ts in (("flow_iat", times), ("fwd_iat", times[forward]), ("bwd_iat", times[~forward])):
        gaps = np.diff(ts)
        f[f"{prefix}_max"], f[f"{prefix}_min"], f[f"{prefix}_mean"], f[f"{prefix}_std"] = _stats(gaps)
        if prefix != "flow_iat":
            f[f"{prefix}_tot"] = float(gaps.sum())
    seconds = max(duration, MIN_DURATION_US) / 1e6
    n_all = f["tot_fwd_pkts"] + f["tot_bwd_pkts"]
    f["flow_byts_s"] = (f["totlen_fwd_pkts"] + f["totlen_bwd_pkts"]) / seconds
    f["flow_pkts_s"] = n_all / seconds
    f["fwd_pkts_s"], f["bwd_pkts_s"] = f["tot_fwd_pkts"] / seconds, f["tot_bwd_pkts"] / seconds
    f["fwd_psh_flags"] = float(((flags & _PSH) > 0)[forward].sum())
    f["bwd_psh_flags"] = float(((flags & _PSH) > 0)[~forward].sum())
    f["fwd_urg_flags"] = float(((flags & _URG) > 0)[forward].sum())
    f["bwd_urg_flags"] = float(((flags & _URG) > 0)[~forward].sum())
    for name, bit in _FLAG_COLUMNS:
        f[name] = float(((flags & bit) > 0).sum())
    f["fwd_header_len"], f["bwd_header_len"] = float(header[forward].sum()), float(header[~forward].sum())
    f["down_up_ratio"] = float(f["tot_bwd_pkts"] // f["tot_fwd_pkts"]) if f["tot_fwd_pkts"] else 0.0
    f["pkt_size_avg"] = f["pkt_len_mean"]
    f["fwd_seg_size_avg"], f["bwd_seg_size_avg"] = f["fwd_pkt_len_mean"], f["bwd_pkt_len_mean"]
    for name in ("fwd_byts_b_avg", "fwd_pkts_b_avg", "fwd_blk_rate_avg", "bwd_byts_b_avg", "bwd_pkts_b_avg",
                 "bwd_blk_rate_avg"):
        f[name] = 0.0
    f["subflow_fwd_pkts"], f["subflow_fwd_byts"] = f["tot_fwd_pkts"], f["totlen_fwd_pkts"]
    f["subflow_bwd_pkts"], f["subflow_bwd_byts"] = f["tot_bwd_pkts"], f["totlen_bwd_pkts"]
    first_fwd = next((r for r in rows if r[1]), None)
    first_bwd = next((r for r in rows if not r[1]), None)
    f["init_fwd_win_byts"] = float(first_fwd[5]) if packets.tcp and first_fwd is not None else -1.0
    f["init_bwd_win_byts"] = float(first_bwd[5]) if packets.tcp and first_bwd is not None else -1.0
    f["fwd_act_data_pkts"] = float((payload[forward] >= 1).sum())
    f["fwd_seg_size_min"] = float(header[forward].min()) if forward.any() else 0.0
    gaps = np.diff(times)
    idle = gaps[gaps > _ACTIVITY_TIMEOUT_US]
    cuts = np.flatnonzero(gaps > _ACTIVITY_TIMEOUT_US)
    starts = np.concatenate([[0], cuts + 1])
    ends = np.concatenate([cuts, [len(times) - 1]])
    active = (times[ends] - times[starts]) if idle.size else np.zeros(0)
    f["active_max"], f["active_min"], f["active_mean"], f["active_std"] = _stats(active)
    f["idle_max"], f["idle_min"], f["idle_mean"], f["idle_std"] = _stats(idle)
    return f


# CIC-IDS2017 MachineLearningCVE header, verbatim: stray leading spaces, "Fwd Header Length" twice.
_HEADER_2017 = [
    " Destination Port", " Flow Duration", " Total Fwd Packets", " Total Backward Packets",
    "Total Length of Fwd Packets", " Total Length of Bwd Packets", " Fwd Packet Length Max", " Fwd Packet Length Min",
    " Fwd Packet Length Mean", " Fwd Packet Length Std", "Bwd Packet Length Max", " Bwd Packet Length Min",
    " Bwd Packet Length Mean", " Bwd Packet Length Std", "Flow Bytes/s", " Flow Packets/s", " Flow IAT Mean",
    " Flow IAT Std", " Flow IAT Max", " Flow IAT Min", "Fwd IAT Total", " Fwd IAT Mean", " Fwd IAT Std",
    " Fwd IAT Max", " Fwd IAT Min", "Bwd IAT Total", " Bwd IAT Mean", " Bwd IAT Std", " Bwd IAT Max", " Bwd IAT Min",
    "Fwd PSH Flags", " Bwd PSH Flags", " Fwd URG Flags", " Bwd URG Flags", " Fwd Header Length", " Bwd Header Length",
    "Fwd Packets/s", " Bwd Packets/s", " Min Packet Length", " Max Packet Length", " Packet Length Mean",
    " Packet Length Std", " Packet Length Variance", "FIN Flag Count", " SYN Flag Count", " RST Flag Count",
    " PSH Flag Count", " ACK Flag Count", " URG Flag Count", " CWE Flag Count", " ECE Flag Count", " Down/Up Ratio",
    " Average Packet Size", " Avg Fwd Segment Size", " Avg Bwd Segment Size", " Fwd Header Length",
    "Fwd Avg Bytes/Bulk", " Fwd Avg Packets/Bulk", " Fwd Avg Bulk Rate", " Bwd Avg Bytes/Bulk",
    " Bwd Avg Packets/Bulk", "Bwd Avg Bulk Rate", "Subflow Fwd Packets", " Subflow Fwd Bytes", " Subflow Bwd Packets",
    " Subflow Bwd Bytes", "Init_Win_bytes_forward", " Init_Win_bytes_backward", " act_data_pkt_fwd",
    " min_seg_size_forward", "Active Mean", " Active Std", " Active Max", " Active Min", "Idle Mean", " Idle Std",
    " Idle Max", " Idle Min", " Label",
]
_HEADER_2018 = ["Dst Port", "Protocol", "Timestamp"] + [SHORT_NAMES[n] for n in CANONICAL_FEATURES[2:]] + ["Label"]
_HEADER_2019 = (["Unnamed: 0", "Flow ID", " Source IP", " Source Port", " Destination IP", " Destination Port",
                 " Protocol", " Timestamp"] + _HEADER_2017[1:-1] + [" SimillarHTTP", " Inbound", " Label"])
_INTEGER_COLUMNS = {"dst_port", "protocol", "flow_duration", "tot_fwd_pkts", "tot_bwd_pkts", "totlen_fwd_pkts",
                    "totlen_bwd_pkts", "fwd_header_len", "bwd_header_len", "init_fwd_win_byts", "init_bwd_win_byts",
                    "fwd_act_data_pkts", "fwd_seg_size_min", "down_up_ratio", "subflow_fwd_pkts",
                    "subflow_fwd_byts", "subflow_bwd_pkts", "subflow_bwd_byts"} | {n for n, _ in _FLAG_COLUMNS}


def _format(name: str, value: float, header: str) -> str:
    if not math.isfinite(value):
        # CIC-IDS2017/CIC-DDoS2019 carry Java's spellings; our 2018 files use Python's.
        if header == "csecicids2018":
            return "inf" if value > 0 else "nan"
        return "Infinity" if value > 0 else "NaN"
    if name in _INTEGER_COLUMNS:
        return str(round(value))
    return f"{value:.10g}"


def _ip(rng: np.random.Generator, private: bool) -> str:
    if private:
        return f"192.168.{int(rng.integers(0, 20))}.{int(rng.integers(2, 254))}"
    return ".".join(str(int(v)) for v in rng.integers(1, 255, size=4))


def _timestamp(rng: np.random.Generator, header: str) -> str:
    """A timestamp in the family's own format (dropped on read, like every identifier)."""
    hour, minute, second = (int(v) for v in rng.integers((8, 0, 0), (18, 60, 60)))
    if header == "csecicids2018":
        return f"{int(rng.integers(14, 28)):02d}/02/2018 {hour:02d}:{minute:02d}:{second:02d}"
    if header == "cicddos2019":
        return f"2018-12-01 {hour}:{minute:02d}:{second:02d}.{int(rng.integers(0, 999999)):06d}"
    return f"7/7/2017 {hour % 12 + 1}:{minute:02d}"


def _write_family_csv(path: Path, flows: list[tuple[str, dict[str, float], int]], profile: FlowProfile,
                      rng: np.random.Generator) -> None:
    header = {"cicids2017": _HEADER_2017, "csecicids2018": _HEADER_2018, "cicddos2019": _HEADER_2019}[profile.header]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row_index, (label, feats, protocol) in enumerate(flows):
            values = dict(feats)
            # Flows that last 0 µs: CICFlowMeter divides by zero (x/0 -> Infinity, 0/0 -> NaN).
            if values["flow_duration"] == 0:
                numerators = {"flow_byts_s": values["totlen_fwd_pkts"] + values["totlen_bwd_pkts"],
                              "flow_pkts_s": values["tot_fwd_pkts"] + values["tot_bwd_pkts"],
                              "fwd_pkts_s": values["tot_fwd_pkts"], "bwd_pkts_s": values["tot_bwd_pkts"]}
                for name, numerator in numerators.items():
                    values[name] = math.inf if numerator > 0 else math.nan
            if rng.random() < profile.glitch_rate:
                values["flow_iat_min"] = -float(rng.integers(1, 20))
            src, dst = _ip(rng, True), _ip(rng, False)
            sport = int(rng.integers(1024, 65535))
            ids = {"flow id": f"{dst}-{src}-{values['dst_port']:.0f}-{sport}-{protocol}", "source ip": src,
                   "source port": str(sport), "destination ip": dst, "simillarhttp": "0",
                   "inbound": str(int(rng.integers(0, 2))), "unnamed: 0": str(row_index)}
            ids["timestamp"] = _timestamp(rng, profile.header)
            values["protocol"] = float(protocol)
            row = []
            seen: set[str] = set()
            for raw in header:
                key = raw.strip().lower()
                if key == "label":
                    row.append(label)
                elif key in ids:
                    row.append(ids[key])
                else:
                    canonical = _ALIASES[key][0]
                    seen.add(canonical)
                    row.append(_format(canonical, values[canonical], profile.header))
            writer.writerow(row)
            # CSE-CIC-IDS2018 files repeat their header now and then.
            if profile.header == "csecicids2018" and row_index == len(flows) // 2:
                writer.writerow(header)


def _simulate(profile: FlowProfile, num_flows: int, rng: np.random.Generator) -> list[tuple[str, dict[str, float], int]]:
    kinds = [k for k, share in profile.kinds.items() if share > 0]
    shares = np.array([profile.kinds[k] for k in kinds], dtype=np.float64)
    drawn = rng.choice(len(kinds), size=num_flows, p=shares / shares.sum())
    flows = []
    for index in drawn:
        kind = kinds[index]
        packets = _GENERATORS[kind](rng, profile)
        features = flow_features(packets)
        port = int(rng.choice(_PORTS[kind]))
        features["dst_port"] = float(port if port else rng.integers(1024, 65535))
        flows.append((profile.labels[kind], features, 6 if packets.tcp else 17))
    return flows


def generate_flow_csvs(
    root: str | os.PathLike[str],
    profile: str | FlowProfile = "cicids2017",
    num_flows: int = 6000,
    num_files: int = 2,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``num_flows`` simulated flows as ``num_files`` CSV files of one family into ``root``.

    Generated once per parameter set (a manifest records them; see ``generate_once``), so
    repeated calls, DDP ranks and test workers share one copy.

    Args:
        root: output folder.
        profile: a name in :data:`FLOW_PROFILES` or a :class:`FlowProfile`.
        num_flows: flows in total (split evenly over the files).
        num_files: CSV files written (``flows_<i>.csv``).
        seed: seed of the simulation (and of identifiers and glitches).
        overwrite: regenerate even when ``root`` holds this dataset.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    if isinstance(profile, str):
        if profile not in FLOW_PROFILES:
            raise ValueError(f"profile must be one of {sorted(FLOW_PROFILES)} or a FlowProfile, got {profile!r}")
        name, profile = profile, FLOW_PROFILES[profile]
    elif isinstance(profile, FlowProfile):
        name = "custom"
    else:
        raise TypeError(f"profile must be a profile name or a FlowProfile, got {type(profile).__name__}")
    num_flows = check_positive_int("num_flows", num_flows)
    num_files = check_positive_int("num_files", num_files)
    if num_files > num_flows:
        raise ValueError(f"num_files={num_files} exceeds num_flows={num_flows}")
    fingerprint = {"profile": name, "spec": repr(profile), "num_flows": num_flows, "num_files": num_files,
                   "seed": int(seed), "version": 1}

    def write(tmp: Path) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        flows = _simulate(profile, num_flows, rng)
        bounds = np.linspace(0, num_flows, num_files + 1).astype(int)
        for i in range(num_files):
            _write_family_csv(tmp / f"flows_{i}.csv", flows[bounds[i]:bounds[i + 1]], profile, rng)
        return {"family": profile.header}

    return generate_once(root, fingerprint, write, overwrite=overwrite)


# -- DataModule -----------------------------------------------------------------------------------
class FlowDataModule(LightningDataModule):
    """Labelled CICFlowMeter flows for binary DDoS detection (``0`` benign, ``1`` attack).

    Reads every CSV matching ``pattern`` in ``data_dir`` (any mix of the three families), keeps
    benign flows and the attack labels asked for, and splits them into train/val/test
    (stratified on the binary label, seeded). Batches are ``[features (B, F) float32 in raw
    units, target (B,) int64]``. With ``synthetic`` set, ``data_dir`` is first filled by
    :func:`generate_flow_csvs` (once per parameter set) and read back through the same loader.

    Args:
        data_dir: folder of CSV files (for real data, e.g. CIC-IDS2017's ``MachineLearningCVE``).
        pattern: glob pattern of the files inside ``data_dir``.
        features: canonical features in model-input order (``None``: :data:`DEFAULT_FEATURES`).
        synthetic: generate a synthetic family first (a name in :data:`FLOW_PROFILES`).
        synthetic_flows: flows generated.
        synthetic_files: files generated.
        synthetic_seed: seed of the generator.
        attack_labels: attack labels kept (case and whitespace ignored); ``None`` keeps every
            attack. Benign flows are always kept.
        max_rows_per_file: read at most this many rows of each file.
        nonfinite: ``"recompute"`` or ``"drop"`` (see the module docstring).
        val_fraction: share of flows in the validation split.
        test_fraction: share of flows in the test split.
        seed: seed of the split and of the shuffle.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (``None``: ``batch_size``).
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        data_dir: str,
        pattern: str = "*.csv",
        features: Sequence[str] | None = None,
        synthetic: str | None = None,
        synthetic_flows: int = 6000,
        synthetic_files: int = 2,
        synthetic_seed: int = 0,
        attack_labels: Sequence[str] | None = None,
        max_rows_per_file: int | None = None,
        nonfinite: Literal["recompute", "drop"] = "recompute",
        val_fraction: float = 0.15,
        test_fraction: float = 0.25,
        seed: int = 0,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(data_dir, (str, os.PathLike)) or not os.fspath(data_dir):
            raise ValueError(f"data_dir must be a folder path, got {data_dir!r}")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"pattern must be a glob pattern such as '*.csv', got {pattern!r}")
        if synthetic is not None and synthetic not in FLOW_PROFILES:
            raise ValueError(f"synthetic must be None or one of {sorted(FLOW_PROFILES)}, got {synthetic!r}")
        if attack_labels is not None and (isinstance(attack_labels, str) or not all(isinstance(a, str) for a in attack_labels)):
            raise ValueError(f"attack_labels must be None or a list of label strings, got {attack_labels!r}")
        self.data_dir = os.fspath(data_dir)
        self.pattern = pattern
        self.features = check_features(features)
        self.synthetic = synthetic
        self.synthetic_flows = check_positive_int("synthetic_flows", synthetic_flows)
        self.synthetic_files = check_positive_int("synthetic_files", synthetic_files)
        self.synthetic_seed = int(synthetic_seed)
        self.attack_labels = None if attack_labels is None else {a.strip().lower() for a in attack_labels}
        self.max_rows_per_file = check_optional_positive_int("max_rows_per_file", max_rows_per_file)
        self.nonfinite = _check_nonfinite(nonfinite)
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be < 1, got {self.val_fraction} + {self.test_fraction}")
        self.seed = int(seed)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.eval_batch_size = self.batch_size if eval_batch_size is None else check_positive_int("eval_batch_size", eval_batch_size)
        self.num_workers = check_non_negative_int("num_workers", num_workers)
        self.table: FlowTable | None = None
        self.splits: dict[str, tuple[Tensor, Tensor, np.ndarray]] = {}

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def num_features(self) -> int:
        return len(self.features)

    def files(self) -> list[str]:
        """The CSV files read, sorted."""
        return sorted(glob.glob(os.path.join(self.data_dir, self.pattern)))

    def prepare_data(self) -> None:
        """Generates the synthetic family when ``synthetic`` is set."""
        if self.synthetic is not None:
            generate_flow_csvs(self.data_dir, self.synthetic, self.synthetic_flows, self.synthetic_files,
                               self.synthetic_seed)

    def setup(self, stage: str | None = None) -> None:
        """Reads the files once and builds the three splits."""
        if self.splits:
            return
        self.prepare_data()  # idempotent; DDP ranks and DomainGeneralizationDataModule targets need it too
        files = self.files()
        if not files:
            raise ValueError(f"data_dir {self.data_dir!r} holds no files matching {self.pattern!r}")
        table = read_flow_csvs(files, self.features, self.max_rows_per_file, self.nonfinite)
        attack = table.is_attack
        if self.attack_labels is not None:
            keep = ~attack | np.array([label.strip().lower() in self.attack_labels for label in table.labels])
            table = table.select(keep)
            attack = attack[keep]
        if len(table) == 0 or attack.all() or not attack.any():
            raise ValueError(f"{self.data_dir}: need benign and attack flows, got {int((~attack).sum())} benign and "
                             f"{int(attack.sum())} attack flows")
        self.table = table
        x = torch.from_numpy(table.matrix(self.features).astype(np.float32))
        y = torch.from_numpy(attack.astype(np.int64))
        order = stratified_permutation(attack.astype(np.int64), self.seed)
        n_val = round(self.val_fraction * len(order))
        n_test = round(self.test_fraction * len(order))
        parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
        self.splits = {split: (x[idx], y[idx], table.labels[idx]) for split, idx in parts.items()}

    def train_features(self) -> Tensor:
        """``(N, F)`` raw training features (what the detector's normaliser is fitted on)."""
        return self._split("train")[0]

    def _split(self, split: str) -> tuple[Tensor, Tensor, np.ndarray]:
        if split not in self.splits:
            raise RuntimeError(f"{type(self).__name__} has no {split} split yet: call setup() first")
        return self.splits[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        x, y, _ = self._split(split)
        dataset = TensorDataset(x, y)
        return DataLoader(dataset, batch_size=self.batch_size if shuffle else self.eval_batch_size,
                          sampler=EpochShuffleSampler(dataset, self.seed) if shuffle else None,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
