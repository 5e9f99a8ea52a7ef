"""Constrained PGD on CICFlowMeter flow features: only what the attacker's traffic can change moves.

**Threat model (our reading of "constrained feature-space attacks" for flow detectors).** The
attacker owns the forward direction of a malicious flow and may, within a budget ``eps``:

1. **append** ``k`` forward packets after the flow's last packet (padding/dummy packets), each
   with ``s`` payload bytes (``0 <= s <= max_payload``) and the header size of the flow's own
   forward packets, ``g`` µs apart (``0 <= g <= max_gap_us``); the packet count may grow at most
   by the log-factor ``eps``: ``n' <= (1 + n) e^eps - 1``, ``n'`` an integer;
2. **slow the exchange down**: every time interval of the flow (its duration and all IATs, the
   victim's replies following the attacker's pacing) is stretched by ``tau in [1, e^eps]``.

It cannot remove or shrink packets, touch the victim's packets (backward counts, lengths and
headers, the initial windows) or set TCP flags (appended packets carry none we count). Each
feasible feature vector therefore comes from a concrete traffic change: counts are integers
and only grow, totals only grow, min/max/std are the exact pooled statistics of the old packets
and the appended ones (sample std, as CICFlowMeter's), and every derived feature (means, rates,
ratios) is recomputed by :func:`~robust_lightning.flow_schema.derive_features`, the same
code that canonicalises the clean data.

**Optimisation.** The four controls live in a box ``u in [0, eps]^4``: ``u_0`` sets the packet
count (``n' = floor((1 + n) e^{u_0} - 1)``), ``u_1/eps`` the payload as a fraction of
``max_payload`` (rounded to whole bytes), ``u_2/eps`` the gap as a fraction of ``max_gap_us``,
``u_3`` the stretch ``tau = e^{u_3}``. The box is the L-inf ball of radius ``eps/2`` around
``eps/2``, so :func:`~robust_lightning.attacks.core.pgd` runs unchanged in control space: its
sign step, ball projection, random start, generator and NaN checks are the attack's. The loss
is evaluated on ``apply(x, u)``, the feasible flow of the controls, so every iterate the model
sees satisfies the constraints: the projection after each step is the core's box projection
followed by this map. Integer rounding (packets, bytes) passes the gradient straight through.
The core's own projection (a ball around ``x`` in feature space) cannot express integer,
grow-only and coupled constraints, which is why the attack steps in control space.

Features whose change under these operations is not modelled (ACK counts, bulk, subflow and
active/idle statistics) are refused, rather than silently left unchanged.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor
from typing_extensions import override

from robust_lightning._validation import check_bool, check_int, check_number
from robust_lightning.attacks.base import Attack
from robust_lightning.attacks.core import LossFn, eps_tag, parse_budget, pgd
from robust_lightning.flow_schema import (
    BASE_FEATURES,
    DERIVED_DEPENDENCIES,
    STAT_GROUPS,
    check_features,
    derive_features,
    safe_ratio,
)

__all__ = [
    "CONTROLS",
    "FIXED_FEATURES",
    "UNSUPPORTED_FEATURES",
    "ConstrainedPGD",
    "FlowConstraints",
    "constrained_pgd",
]

#: The attacker's controls, in the order of the control vector ``u``.
CONTROLS: tuple[str, ...] = ("packets", "payload", "gap", "stretch")
#: Features no attacker operation changes.
FIXED_FEATURES: tuple[str, ...] = (
    "dst_port", "protocol", "tot_bwd_pkts", "totlen_bwd_pkts", "bwd_pkt_len_max", "bwd_pkt_len_min",
    "bwd_pkt_len_std", "bwd_header_len", "init_fwd_win_byts", "init_bwd_win_byts", "fwd_seg_size_min",
    "fwd_psh_flags", "bwd_psh_flags", "fwd_urg_flags", "bwd_urg_flags", "fin_flag_cnt", "syn_flag_cnt",
    "rst_flag_cnt", "psh_flag_cnt", "urg_flag_cnt", "cwe_flag_count", "ece_flag_cnt",
)
#: Features whose change the threat model does not describe; the attack refuses them.
UNSUPPORTED_FEATURES: tuple[str, ...] = (
    "ack_flag_cnt", "fwd_byts_b_avg", "fwd_pkts_b_avg", "fwd_blk_rate_avg", "bwd_byts_b_avg", "bwd_pkts_b_avg",
    "bwd_blk_rate_avg", "subflow_fwd_pkts", "subflow_fwd_byts", "subflow_bwd_pkts", "subflow_bwd_byts",
    "active_mean", "active_std", "active_max", "active_min", "idle_mean", "idle_std", "idle_max", "idle_min",
)
# Time features the stretch scales (their means are derived).
_STRETCHED: tuple[str, ...] = (
    "flow_duration", "flow_iat_std", "flow_iat_max", "flow_iat_min", "fwd_iat_tot", "fwd_iat_std", "fwd_iat_max",
    "fwd_iat_min", "bwd_iat_tot", "bwd_iat_std", "bwd_iat_max", "bwd_iat_min",
)
# Measured columns the pooled statistics need beyond the base totals.
_POOLED_DEPENDENCIES: dict[str, tuple[str, ...]] = {"fwd_iat_std": ("fwd_iat_tot",)}
_INTEGER_FEATURES: tuple[str, ...] = (
    "tot_fwd_pkts", "tot_bwd_pkts", "totlen_fwd_pkts", "totlen_bwd_pkts", "fwd_header_len", "fwd_act_data_pkts",
)
_GROW_ONLY: tuple[str, ...] = (
    "flow_duration", "tot_fwd_pkts", "totlen_fwd_pkts", "fwd_header_len", "fwd_act_data_pkts", "fwd_iat_tot",
    "bwd_iat_tot",
)
_ROUNDING_SLACK = 1e-9  # keeps floor() from dropping a whole packet to float error at the budget's edge


def _straight_through(value: Tensor, rounded: Tensor) -> Tensor:
    """``rounded`` in the forward pass, the identity's gradient in the backward pass."""
    return value + (rounded - value).detach()


def _safe_sqrt(value: Tensor) -> Tensor:
    # sqrt'(0) is infinite; torch.where would turn inf * 0 into NaN gradients.
    positive = value > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, value, torch.ones_like(value))), torch.zeros_like(value))


def _pooled_std(count: Tensor, mean: Tensor, std: Tensor, extra: Tensor, value: Tensor) -> Tensor:
    """Sample std of ``count`` values (``mean``, sample ``std``) plus ``extra`` copies of ``value``."""
    m2 = torch.where(count > 1, (count - 1).clamp_min(0) * std**2, torch.zeros_like(std))
    total = count + extra
    m2 = m2 + torch.where(total > 0, count.clamp_min(0) * extra / total.clamp_min(1.0) * (mean - value) ** 2,
                          torch.zeros_like(std))
    return torch.where(total > 1, _safe_sqrt(m2 / (total - 1).clamp_min(1.0)), torch.zeros_like(std))


def _extended(bound: Tensor, count: Tensor, extra: Tensor, value: Tensor, op) -> Tensor:
    """Min (``op=torch.minimum``) or max of a set after ``extra`` copies of ``value`` join it."""
    joined = torch.where(count > 0, op(bound, value), value)
    return torch.where(extra > 0, joined, bound)


class FlowConstraints:
    """The feasible set of the constrained flow attack over a feature layout.

    Args:
        features: canonical features in model-input order (``None``: the default set).
        max_payload: largest payload of an appended packet (bytes; 1460 = Ethernet MSS).
        max_gap_us: largest gap between appended packets (µs).

    Raises:
        ValueError: on unknown or unsupported features, or a layout missing what the derived
            and pooled features are computed from (the message lists them).
    """

    def __init__(self, features: Sequence[str] | None = None, max_payload: int = 1460,
                 max_gap_us: float = 1e6) -> None:
        self.features = check_features(features)
        unsupported = [f for f in self.features if f in UNSUPPORTED_FEATURES]
        if unsupported:
            raise ValueError(
                f"features {unsupported} are not modelled by the constrained flow attack (their change under "
                f"appended packets and delays is not described); drop them from the feature list"
            )
        needed = set(BASE_FEATURES)
        for name in self.features:
            needed.update(DERIVED_DEPENDENCIES.get(name, ()))
            needed.update(_POOLED_DEPENDENCIES.get(name, ()))
        missing = sorted(needed - set(self.features))
        if missing:
            raise ValueError(
                f"features lacks {missing}: the constrained attack recomputes derived and pooled features from "
                f"them, so they must be model inputs too"
            )
        self.max_payload = check_int("max_payload", max_payload, minimum=0, reason="bytes")
        self.max_gap_us = check_number("max_gap_us", max_gap_us, 0.0, reason="µs")
        self.index = {name: i for i, name in enumerate(self.features)}

    def __repr__(self) -> str:
        return (f"FlowConstraints({len(self.features)} features, max_payload={self.max_payload}, "
                f"max_gap_us={self.max_gap_us:g})")

    # -- layout ------------------------------------------------------------------------------------
    def columns(self, x: Tensor) -> dict[str, Tensor]:
        """Name -> ``(B,)`` float64 column of a ``(B, F)`` batch."""
        if x.dim() != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"expected flows of shape (B, {len(self.features)}), got {tuple(x.shape)}")
        return {name: x[:, i].double() for i, name in enumerate(self.features)}

    def stack(self, columns: dict[str, Tensor], like: Tensor) -> Tensor:
        """The ``(B, F)`` batch of ``columns`` in layout order, in ``like``'s dtype."""
        return torch.stack([columns[name] for name in self.features], dim=1).to(like.dtype)

    # -- the feasible map --------------------------------------------------------------------------
    def controls(self, x: Tensor, u: Tensor, eps: Tensor) -> dict[str, Tensor]:
        """Physical controls ``k`` (packets), ``s`` (bytes), ``g`` (µs), ``tau`` of ``u in [0, eps]^4``.

        ``k`` and ``s`` are whole numbers in the forward pass with straight-through gradients.
        """
        u = u.double()
        eps = eps.double().expand(x.shape[0]) if eps.dim() == 0 else eps.double()
        u = torch.minimum(u.clamp_min(0.0), eps[:, None])
        n_fwd = x[:, self.index["tot_fwd_pkts"]].double()
        fraction = torch.where(eps[:, None] > 0, u / eps[:, None].clamp_min(1e-12), torch.zeros_like(u))
        extra = ((1 + n_fwd) * torch.exp(u[:, 0]) - 1 - n_fwd).clamp_min(0.0)
        packets = _straight_through(extra, torch.floor(extra + _ROUNDING_SLACK))
        payload_cont = self.max_payload * fraction[:, 1]
        payload = _straight_through(payload_cont, torch.round(payload_cont))
        return {"k": packets, "s": payload, "g": self.max_gap_us * fraction[:, 2], "tau": torch.exp(u[:, 3])}

    def perturb(self, x: Tensor, k: Tensor, s: Tensor, g: Tensor, tau: Tensor) -> Tensor:
        """Flows after appending ``k`` packets of ``s`` bytes ``g`` µs apart and stretching time by ``tau``.

        All four are ``(B,)`` tensors (``k`` whole, ``tau >= 1``); the result is in ``x``'s dtype.
        """
        clean = self.columns(x)
        c = dict(clean)
        for name in _STRETCHED:
            if name in c:
                c[name] = clean[name] * tau
        n_fwd, n_bwd = clean["tot_fwd_pkts"], clean["tot_bwd_pkts"]
        len_fwd, len_bwd = clean["totlen_fwd_pkts"], clean["totlen_bwd_pkts"]
        n_all = n_fwd + n_bwd
        c["tot_fwd_pkts"] = n_fwd + k
        c["totlen_fwd_pkts"] = len_fwd + k * s
        c["flow_duration"] = clean["flow_duration"] * tau + k * g
        # (group, packets or gaps already in it, their mean, the appended value)
        pools = [("fwd_pkt_len", n_fwd, safe_ratio(len_fwd, n_fwd), s),
                 ("pkt_len", n_all, safe_ratio(len_fwd + len_bwd, n_all), s),
                 ("flow_iat", (n_all - 1).clamp_min(0), safe_ratio(clean["flow_duration"] * tau, n_all - 1), g)]
        if "fwd_iat_tot" in c:
            pools.append(("fwd_iat", (n_fwd - 1).clamp_min(0), safe_ratio(c["fwd_iat_tot"], n_fwd - 1), g))
            c["fwd_iat_tot"] = c["fwd_iat_tot"] + k * g
        else:  # min/max of forward IATs still pool without the total
            pools.append(("fwd_iat", (n_fwd - 1).clamp_min(0), torch.zeros_like(n_fwd), g))
        for group, count, mean, value in pools:
            low, _, high, std = STAT_GROUPS[group]
            if low in c:
                c[low] = _extended(c[low], count, k, value, torch.minimum)
            if high in c:
                c[high] = _extended(c[high], count, k, value, torch.maximum)
            if std in c:
                c[std] = _pooled_std(count, mean, c[std], k, value)
        if "fwd_header_len" in c:
            # Appended packets carry the flow's own (mean) forward header size, a whole byte count;
            # it is >= the flow's smallest header, so fwd_seg_size_min is unchanged.
            per_packet = torch.where(n_fwd > 0, torch.round(safe_ratio(clean["fwd_header_len"], n_fwd)),
                                     torch.full_like(n_fwd, 20.0))
            c["fwd_header_len"] = clean["fwd_header_len"] + k * per_packet
        if "fwd_act_data_pkts" in c:
            c["fwd_act_data_pkts"] = clean["fwd_act_data_pkts"] + k * (s >= 1).double()
        derive_features(c)
        return self.stack(c, x)

    def apply(self, x: Tensor, u: Tensor, eps: float | Tensor) -> Tensor:
        """The feasible flows of controls ``u`` (``(B, 4)``, clipped into ``[0, eps]``)."""
        eps_t = torch.as_tensor(eps, dtype=torch.float64, device=x.device)
        controls = self.controls(x, u, eps_t)
        return self.perturb(x, controls["k"], controls["s"], controls["g"], controls["tau"])

    def canonicalize(self, x: Tensor) -> Tensor:
        """``x`` with derived features recomputed (the attack's output at zero controls)."""
        c = self.columns(x)
        derive_features(c)
        return self.stack(c, x)

    # -- auditing ----------------------------------------------------------------------------------
    def violations(self, x_adv: Tensor, x: Tensor, eps: float | Tensor, rtol: float = 1e-5,
                   atol: float = 1e-3) -> dict[str, int]:
        """Number of flows breaking each constraint (all zeros for a valid attack).

        Audits any attack's output against the clean flows ``x``: fixed features, integer and
        grow-only counts, the packet/payload/time budgets, ``mean = total / count``, recomputed
        rates and ratios, ``min <= mean <= max``, ``std >= 0``, ``var = std^2``, IAT totals
        within the duration.
        """
        a, c = self.columns(x_adv), self.columns(x)
        eps_t = torch.as_tensor(eps, dtype=torch.float64, device=x.device)
        growth = torch.exp(eps_t)
        out: dict[str, int] = {}

        def close(value: Tensor, expected: Tensor) -> Tensor:
            return (value - expected).abs() <= atol + rtol * expected.abs()

        def count(name: str, bad: Tensor) -> None:
            out[name] = out.get(name, 0) + int(bad.sum())

        count("fixed", torch.stack([a[f] != c[f] for f in self.features if f in FIXED_FEATURES] or
                                   [torch.zeros_like(a["flow_duration"], dtype=torch.bool)]).any(0))
        count("integer", torch.stack([(a[f] - a[f].round()).abs() > 1e-6 * a[f].abs().clamp_min(1.0)
                                      for f in _INTEGER_FEATURES if f in a]).any(0))
        count("grow_only", torch.stack([a[f] < c[f] - atol - rtol * c[f].abs() for f in _GROW_ONLY if f in a]).any(0))
        extra = a["tot_fwd_pkts"] - c["tot_fwd_pkts"]
        count("packet_budget", a["tot_fwd_pkts"] > (1 + c["tot_fwd_pkts"]) * growth - 1 + 1e-6)
        count("payload_budget", a["totlen_fwd_pkts"] - c["totlen_fwd_pkts"] > extra * self.max_payload + atol)
        time_bound = c["flow_duration"] * growth + extra * self.max_gap_us
        count("time_budget", a["flow_duration"] > time_bound + atol + rtol * time_bound)
        n_fwd, n_bwd = a["tot_fwd_pkts"], a["tot_bwd_pkts"]
        n_all = n_fwd + n_bwd
        len_all = a["totlen_fwd_pkts"] + a["totlen_bwd_pkts"]
        seconds = a["flow_duration"].clamp_min(1.0) / 1e6
        expected = {
            "fwd_pkt_len_mean": safe_ratio(a["totlen_fwd_pkts"], n_fwd), "bwd_pkt_len_mean": safe_ratio(a["totlen_bwd_pkts"], n_bwd),
            "pkt_len_mean": safe_ratio(len_all, n_all), "pkt_size_avg": safe_ratio(len_all, n_all),
            "fwd_seg_size_avg": safe_ratio(a["totlen_fwd_pkts"], n_fwd), "bwd_seg_size_avg": safe_ratio(a["totlen_bwd_pkts"], n_bwd),
            "flow_iat_mean": safe_ratio(a["flow_duration"], n_all - 1),
        }
        if "fwd_iat_tot" in a:
            expected["fwd_iat_mean"] = safe_ratio(a["fwd_iat_tot"], n_fwd - 1)
        if "bwd_iat_tot" in a:
            expected["bwd_iat_mean"] = safe_ratio(a["bwd_iat_tot"], n_bwd - 1)
        rates = {"flow_byts_s": len_all / seconds, "flow_pkts_s": n_all / seconds, "fwd_pkts_s": n_fwd / seconds,
                 "bwd_pkts_s": n_bwd / seconds}
        for rule, table in (("mean_equals_total_over_count", expected), ("rates_recomputed", rates)):
            checks = [~close(a[name], value) for name, value in table.items() if name in a]
            if checks:
                count(rule, torch.stack(checks).any(0))
        if "down_up_ratio" in a:
            count("down_up_ratio", a["down_up_ratio"] != torch.where(n_fwd > 0, torch.floor(n_bwd / n_fwd.clamp_min(1)), 0))
        for low, mean_name, high, _ in STAT_GROUPS.values():
            mean = a.get(mean_name)
            if mean is None:
                continue
            if low in a:
                count("min_le_mean_le_max", a[low] > mean + atol + rtol * mean.abs())
            if high in a:
                count("min_le_mean_le_max", a[high] < mean - atol - rtol * mean.abs())
        stds = [a[s] < 0 for _, _, _, s in STAT_GROUPS.values() if s in a]
        if stds:
            count("std_nonnegative", torch.stack(stds).any(0))
        if "pkt_len_var" in a and "pkt_len_std" in a:
            count("var_equals_std_squared", ~close(a["pkt_len_var"], a["pkt_len_std"] ** 2))
        totals = [a[t] > a["flow_duration"] + atol + rtol * a["flow_duration"] for t in ("fwd_iat_tot", "bwd_iat_tot") if t in a]
        if totals:
            count("iat_total_le_duration", torch.stack(totals).any(0))
        return out


def _search(x: Tensor, constraints: FlowConstraints, loss_fn: LossFn, eps_b: Tensor, samples: int,
            generator: torch.Generator | None, keep_best) -> Tensor:
    """Best of the box corners and ``samples`` uniform control points, per flow (no gradients)."""
    corners = torch.tensor(list(itertools.product((0.0, 1.0), repeat=len(CONTROLS))), dtype=x.dtype, device=x.device)
    best_u = torch.zeros(x.shape[0], len(CONTROLS), dtype=x.dtype, device=x.device)
    best = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
    for i in range(len(corners) + samples):
        if i < len(corners):
            fraction = corners[i].expand(x.shape[0], -1)
        else:
            fraction = torch.rand(x.shape[0], len(CONTROLS), generator=generator, device=x.device, dtype=x.dtype)
        u = fraction * eps_b[:, None]
        flows = constraints.apply(x, u, eps_b)
        loss = loss_fn(flows).detach()
        keep_best(flows, loss)
        better = loss.double() > best
        best = torch.where(better, loss.double(), best)
        best_u[better] = u[better]
    return best_u


def constrained_pgd(
    loss_fn: LossFn,
    x: Tensor,
    constraints: FlowConstraints,
    eps: float | Tensor = 0.7,
    alpha: float | None = None,
    steps: int = 10,
    random_start: bool = True,
    restarts: int = 1,
    search: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD in the attacker's control space; every iterate and the output are feasible flows.

    Args:
        loss_fn: maps flows ``(B, F)`` (raw units) to the per-sample loss ``(B,)`` to maximise.
        x: clean flows ``(B, F)`` in ``constraints.features`` order.
        constraints: the feasible set (:class:`FlowConstraints`).
        eps: log-growth budget (float or per-sample ``(B,)``): packets and the time scale grow
            at most by the factor ``e^eps`` (``eps = ln 2`` allows doubling).
        alpha: step in control space (``None``: ``eps / 4``).
        steps: PGD steps (0 returns ``x``).
        random_start: start uniformly in the control box (else the first run starts at the
            clean flow).
        restarts: PGD runs (runs after the first start at random points).
        search: random control points evaluated (with the 16 corners of the box) before the
            first run, which then starts from each flow's best point; the landscape over packet
            counts is a staircase where gradient steps alone stall (0 = no search).
        generator: the only source of randomness.

    Returns:
        Per flow, the feasible flow of highest loss among every iterate of every run (the
        clean flow when none beats it), detached, same shape/dtype/device as ``x``.
    """
    check_int("restarts", restarts, minimum=1)
    check_int("search", search, minimum=0)
    if not isinstance(constraints, FlowConstraints):
        raise TypeError(f"constraints must be a FlowConstraints, got {type(constraints).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor of flows, got {type(x).__name__}")
    # Lightning evaluates under inference_mode; the clean flows and the budget enter the
    # autograd graph, so everything is built outside it.
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone()
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or inf values; clean flows must be finite (see FlowDataModule's nonfinite policy)")
        eps_t = eps.detach().clone().to(torch.float64) if isinstance(eps, Tensor) else torch.tensor(float(eps), dtype=torch.float64)
        eps_t = eps_t.to(x.device)
        if eps_t.dim() not in (0, 1) or (eps_t.dim() == 1 and eps_t.shape[0] != x.shape[0]):
            raise ValueError(f"eps must be a float or a per-sample tensor of shape ({x.shape[0]},), got shape {tuple(eps_t.shape)}")
        if bool((eps_t < 0).any()) or not bool(torch.isfinite(eps_t).all()):
            raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
        eps_max = float(eps_t.max())
        if steps == 0 or eps_max == 0:
            return x
        step = eps_max / 4 if alpha is None else float(alpha)
        eps_b = eps_t.expand(x.shape[0]).to(x.dtype) if eps_t.dim() == 0 else eps_t.to(x.dtype)
        center = (eps_b / 2)[:, None].expand(-1, len(CONTROLS)).contiguous()
        best_loss = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
        best_x = x.clone()

        def keep_best(flows: Tensor, loss: Tensor) -> None:
            # The loss landscape over packet counts is a staircase: an earlier iterate (or another
            # restart) is often better than the last one, so the best feasible flow seen is kept.
            nonlocal best_loss
            loss = loss.detach().double()
            better = loss > best_loss
            best_loss = torch.where(better, loss, best_loss)
            best_x[better] = flows.detach()[better]

        def control_loss(u: Tensor) -> Tensor:
            flows = constraints.apply(x, u, eps_t)
            loss = loss_fn(flows)
            if isinstance(loss, Tensor) and loss.shape == (x.shape[0],):
                keep_best(flows, loss)
            return loss

        first_start: Tensor | None = None if random_start else torch.zeros_like(center)
        with torch.no_grad():
            keep_best(x, loss_fn(x))  # the clean flow is feasible too
            if search > 0:
                first_start = _search(x, constraints, loss_fn, eps_b, search, generator, keep_best)
        for restart in range(restarts):
            start = first_start if restart == 0 else None
            u = pgd(control_loss, center, eps=eps_b / 2, alpha=step, steps=steps, norm="linf", random_start=True,
                    bounds=(0.0, eps_max), generator=generator, x_init=start)
            with torch.no_grad():
                flows = constraints.apply(x, u, eps_t)
                keep_best(flows, loss_fn(flows))
        return best_x


class ConstrainedPGD(Attack):
    """Config-friendly constrained flow attack: ``x_adv = attack(loss_fn, x, generator=g)``.

    Works with :class:`~robust_lightning.callbacks.AdversarialTraining` and
    :class:`~robust_lightning.callbacks.RobustnessEvaluation` like any :class:`Attack`.

    Args:
        features: canonical features in model-input order (``None``: the default set).
        eps: log-growth budget (``0.7`` ~ doubling packets and time scale).
        alpha: control-space step (``None``: ``eps / 4``).
        steps: PGD steps per run.
        random_start: uniform start in the control box.
        restarts: PGD runs; the best feasible flow over all iterates is returned.
        search: random control points (plus the box corners) tried before the first run.
        max_payload: largest payload of an appended packet (bytes).
        max_gap_us: largest gap between appended packets (µs).
        name: metric-name override (default ``cpgd<steps>_eps<k>``).
    """

    def __init__(
        self,
        features: Sequence[str] | None = None,
        eps: float | str = 0.7,
        alpha: float | str | None = None,
        steps: int = 10,
        random_start: bool = True,
        restarts: int = 1,
        search: int = 0,
        max_payload: int = 1460,
        max_gap_us: float = 1e6,
        name: str | None = None,
    ) -> None:
        super().__init__(eps=eps, norm="linf", bounds=(-math.inf, math.inf), name=name)
        self.constraints = FlowConstraints(features, max_payload=max_payload, max_gap_us=max_gap_us)
        self.alpha = None if alpha is None else parse_budget(alpha, "alpha")
        if self.alpha is not None and self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        check_int("steps", steps, minimum=0)
        check_bool("random_start", random_start)
        check_int("restarts", restarts, minimum=1)
        check_int("search", search, minimum=0)
        self.steps = steps
        self.random_start = random_start
        self.restarts = restarts
        self.search = search

    @override
    @property
    def kind(self) -> str:  # type: ignore[override]
        return f"cpgd{self.steps}"

    @override
    @property
    def name(self) -> str:
        """``cpgd<steps>_eps<k>``: the budget is not an L-p ball, so no norm in the name."""
        return self._name or f"{self.kind}_{eps_tag(self.eps)}"

    def __call__(self, loss_fn: LossFn, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return constrained_pgd(loss_fn, x, self.constraints, eps=self.eps, alpha=self.alpha, steps=self.steps,
                               random_start=self.random_start, restarts=self.restarts, search=self.search,
                               generator=generator)
