"""The CICFlowMeter feature schema: canonical names, header spellings and derived features.

One definition shared by the flow loader (:mod:`robust_lightning.datamodules.flow_io`), the
synthetic generator (:mod:`robust_lightning.datamodules.flow_synthetic`), the DDoS detector and
the constrained attack (:mod:`robust_lightning.attacks.constrained`). It lives outside
``datamodules/`` because attacks never import DataModules; it imports only torch.

:func:`derive_features` is written in torch and is differentiable, so the clean data and the
attack compute every derived feature (rates, means, ratios) with the same code.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "BASE_FEATURES",
    "CANONICAL_FEATURES",
    "DEFAULT_FEATURES",
    "DERIVED_DEPENDENCIES",
    "DERIVED_FEATURES",
    "FAMILIES",
    "HEADER_ALIASES",
    "IDENTIFIER_COLUMNS",
    "LABEL_COLUMN",
    "LONG_NAMES",
    "MIN_DURATION_US",
    "SENTINEL_COLUMNS",
    "SHORT_NAMES",
    "STAT_GROUPS",
    "check_features",
    "derive_features",
    "is_benign_label",
    "required_columns",
    "safe_ratio",
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
HEADER_ALIASES: dict[str, tuple[str, str]] = {}
for _name, _long, _short in _SCHEMA:
    HEADER_ALIASES[_long.lower()] = (_name, "both" if _long == _short else "long")
    if _short != _long:
        HEADER_ALIASES[_short.lower()] = (_name, "short")
# CSE-CIC-IDS2018 itself spells one flag column either way.
HEADER_ALIASES["cwe flag cnt"] = ("cwe_flag_count", "short")

# Columns that identify a flow rather than describe it; dropped on read.
IDENTIFIER_COLUMNS: tuple[str, ...] = (
    "Flow ID", "Source IP", "Src IP", "Source Port", "Src Port", "Destination IP", "Dst IP",
    "Timestamp", "SimillarHTTP", "Inbound",
)
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


def required_columns(features: Sequence[str]) -> tuple[str, ...]:
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
def safe_ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
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
        "fwd_pkt_len": safe_ratio(len_fwd, n_fwd),
        "bwd_pkt_len": safe_ratio(len_bwd, n_bwd),
        "pkt_len": safe_ratio(len_fwd + len_bwd, n_all),
        "flow_iat": safe_ratio(duration, n_all - 1),
    }
    if "fwd_iat_tot" in columns:
        means["fwd_iat"] = safe_ratio(columns["fwd_iat_tot"], n_fwd - 1)
    if "bwd_iat_tot" in columns:
        means["bwd_iat"] = safe_ratio(columns["bwd_iat_tot"], n_bwd - 1)
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
