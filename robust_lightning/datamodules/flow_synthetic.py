"""Synthetic CICFlowMeter flows, simulated packet by packet and written in a family's CSV layout.

Benign web, DNS, bulk transfer and interactive sessions; SYN, UDP and HTTP floods, DNS/NTP-style
reflection and slowloris. Features are computed from the packets as CICFlowMeter does and written
with the family's headers, identifier columns, ``Infinity``/``NaN`` cells, repeated headers and a
few glitch rows, so tests exercise the real loader (:mod:`robust_lightning.datamodules.flow_io`).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from robust_lightning.datamodules._common import check_positive_int, generate_once
from robust_lightning.flow_schema import (
    CANONICAL_FEATURES,
    FAMILIES,
    HEADER_ALIASES,
    MIN_DURATION_US,
    SHORT_NAMES,
)

__all__ = ["ATTACK_KINDS", "BENIGN_KINDS", "FLOW_PROFILES", "FlowProfile", "flow_features", "generate_flow_csvs"]

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
    sizes, probs = zip(*profile.tcp_headers, strict=False)
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
                    canonical = HEADER_ALIASES[key][0]
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
