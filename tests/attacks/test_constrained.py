"""Constrained flow attack: feasibility invariants, exactness against packet-level simulation, PGD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robust_lightning.attacks.base import Attack
from robust_lightning.attacks.constrained import (
    FIXED_FEATURES,
    ConstrainedPGD,
    FlowConstraints,
    constrained_pgd,
)
from robust_lightning.datamodules.flow_io import read_flow_csvs
from robust_lightning.datamodules.flow_synthetic import (
    _GENERATORS,
    FLOW_PROFILES,
    _Packets,
    flow_features,
    generate_flow_csvs,
)
from robust_lightning.flow_schema import BASE_FEATURES, DEFAULT_FEATURES

EPS = (0.2, 0.7, 1.5)


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    root = generate_flow_csvs(tmp_path_factory.mktemp("flows") / "d", "cicids2017", num_flows=400, num_files=1, seed=11)
    table = read_flow_csvs(sorted(root.glob("*.csv")))
    return torch.from_numpy(table.matrix(DEFAULT_FEATURES).astype(np.float32))


def _clean_violations(report: dict[str, int]) -> dict[str, int]:
    return {rule: count for rule, count in report.items() if count}


@pytest.mark.parametrize("eps", EPS)
def test_random_controls_give_feasible_flows(flows: torch.Tensor, eps: float) -> None:
    constraints = FlowConstraints()
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        u = torch.rand(flows.shape[0], 4, generator=generator) * eps
        x_adv = constraints.apply(flows, u, eps)
        assert _clean_violations(constraints.violations(x_adv, flows, eps)) == {}
    # Box corners, where the budget is tight.
    for corner in ((1, 1, 1, 1), (1, 0, 0, 1), (0, 1, 1, 0), (1, 1, 0, 0)):
        x_adv = constraints.apply(flows, torch.tensor(corner, dtype=torch.float32).expand(len(flows), 4) * eps, eps)
        assert _clean_violations(constraints.violations(x_adv, flows, eps)) == {}


def test_only_controllable_features_move(flows: torch.Tensor) -> None:
    constraints = FlowConstraints()
    x_adv = constraints.apply(flows, torch.full((len(flows), 4), 0.7), 0.7)
    moved = {f for i, f in enumerate(DEFAULT_FEATURES) if not torch.equal(x_adv[:, i], flows[:, i])}
    assert moved.isdisjoint(FIXED_FEATURES)
    assert {"tot_fwd_pkts", "totlen_fwd_pkts", "flow_duration", "fwd_iat_tot", "flow_byts_s"} <= moved
    for name in ("tot_bwd_pkts", "totlen_bwd_pkts", "bwd_pkt_len_max", "init_fwd_win_byts", "fwd_seg_size_min"):
        i = DEFAULT_FEATURES.index(name)
        assert torch.equal(x_adv[:, i], flows[:, i]), name


def test_counts_are_integers_that_only_grow_up_to_the_budget(flows: torch.Tensor) -> None:
    constraints = FlowConstraints()
    n = DEFAULT_FEATURES.index("tot_fwd_pkts")
    for eps in EPS:
        x_adv = constraints.apply(flows, torch.full((len(flows), 4), eps), eps)
        counts = x_adv[:, n].double()
        assert torch.equal(counts, counts.round())
        # At the box's top corner the count is exactly floor((1 + n) e^eps - 1).
        expected = torch.floor((1 + flows[:, n].double()) * np.exp(eps) - 1 + 1e-9)
        assert torch.equal(counts, expected)
        assert bool((counts >= flows[:, n]).all())


def test_zero_controls_return_the_clean_flows(flows: torch.Tensor) -> None:
    constraints = FlowConstraints()
    x_adv = constraints.apply(flows, torch.zeros(len(flows), 4), 0.7)
    torch.testing.assert_close(x_adv, flows, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(constraints.canonicalize(flows), flows, rtol=1e-6, atol=1e-6)


def _integer_times(packets: _Packets) -> _Packets:
    rows = sorted(packets.rows, key=lambda r: r[0])
    out = _Packets(packets.tcp)
    for t, forward, payload, header, flags, window in rows:
        out.add(round(t - rows[0][0]), forward, payload, header, flags, window)
    return out


def _simulated_attack(packets: _Packets, k: int, s: int, g: float, tau: int) -> _Packets:
    """Stretch every time by ``tau`` and append ``k`` forward packets of ``s`` bytes ``g`` µs apart."""
    out = _Packets(packets.tcp)
    for t, forward, payload, header, flags, window in packets.rows:
        out.add(t * tau, forward, payload, header, flags, window)
    last = max(r[0] for r in out.rows)
    header = next(r[3] for r in packets.rows if r[1])
    for j in range(1, k + 1):
        out.add(last + j * g, True, s, header)
    return out


@pytest.mark.parametrize("kind", ["benign_web", "udp_flood", "http_flood", "reflection", "benign_interactive"])
def test_perturbation_equals_recomputing_features_from_modified_packets(kind: str) -> None:
    """The feasible map is exact: it equals CICFlowMeter features of the modified packet trace."""
    rng = np.random.default_rng(4)
    constraints = FlowConstraints()
    checked = 0
    while checked < 4:
        packets = _integer_times(_GENERATORS[kind](rng, FLOW_PROFILES["cicids2017"]))
        if not max(packets.rows, key=lambda r: r[0])[1]:
            continue  # the threat model appends after the flow's last packet, taken to be forward
        clean = flow_features(packets)
        x = torch.tensor([[clean[f] for f in DEFAULT_FEATURES]], dtype=torch.float64)
        for k, s, g, tau in ((3, 200, 5000.0, 2), (1, 0, 0.0, 1), (5, 1460, 100.0, 3)):
            expected = flow_features(_simulated_attack(packets, k, s, g, tau))
            out = constraints.perturb(x, *(torch.tensor([float(v)], dtype=torch.float64) for v in (k, s, g, tau)))
            for i, name in enumerate(DEFAULT_FEATURES):
                np.testing.assert_allclose(float(out[0, i]), expected[name], rtol=1e-9, atol=1e-6,
                                           err_msg=f"{kind} k={k} s={s} g={g} tau={tau}: {name}")
        checked += 1


def _toy_detector(width: int) -> nn.Module:
    torch.manual_seed(0)
    # Signed-log input, then a small MLP: what the DDoS detector's first layers do.
    return nn.Sequential(_SignedLog(), nn.Linear(width, 16), nn.Tanh(), nn.Linear(16, 2))


class _SignedLog(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x) * torch.log1p(x.abs()) / 10


def test_every_pgd_iterate_is_feasible_and_the_loss_never_drops(flows: torch.Tensor) -> None:
    constraints = FlowConstraints()
    model = _toy_detector(len(DEFAULT_FEATURES)).eval()
    seen: list[torch.Tensor] = []

    def margin(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return logits[:, 0] - logits[:, 1]

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.detach().clone())
        return margin(x)

    x_adv = constrained_pgd(loss_fn, flows, constraints, eps=0.7, steps=5, restarts=2, search=8,
                            generator=torch.Generator().manual_seed(0))
    assert len(seen) == 1 + 16 + 8 + 2 * (5 + 1)  # clean, corners, search, 2 runs of (steps + final)
    for x in seen:
        assert _clean_violations(constraints.violations(x, flows, 0.7)) == {}
    with torch.no_grad():
        before, after = margin(flows), margin(x_adv)
        best_seen = torch.stack([margin(x) for x in seen]).max(0).values
    assert bool((after >= before - 1e-6).all())
    torch.testing.assert_close(after, best_seen)  # the best feasible flow seen is returned
    assert bool((after > before + 1e-3).any())


def test_pgd_is_deterministic_and_handles_per_sample_budgets(flows: torch.Tensor) -> None:
    constraints = FlowConstraints()
    model = _toy_detector(len(DEFAULT_FEATURES)).eval()

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        return model(x)[:, 0]

    a = constrained_pgd(loss_fn, flows, constraints, eps=0.7, steps=3, generator=torch.Generator().manual_seed(1))
    b = constrained_pgd(loss_fn, flows, constraints, eps=0.7, steps=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    eps = torch.full((len(flows),), 0.7)
    eps[::2] = 0.0
    c = constrained_pgd(loss_fn, flows, constraints, eps=eps, steps=3, search=4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(c[::2], flows[::2], rtol=1e-6, atol=1e-6)  # no budget: canonical clean flow
    assert not torch.allclose(c[1::2], flows[1::2])
    assert torch.equal(constrained_pgd(loss_fn, flows, constraints, eps=0.0), flows)
    assert torch.equal(constrained_pgd(loss_fn, flows, constraints, steps=0), flows)


def test_gradients_are_finite_and_reach_every_control(flows: torch.Tensor) -> None:
    constraints = FlowConstraints()
    model = _toy_detector(len(DEFAULT_FEATURES))
    u = (torch.rand(len(flows), 4, generator=torch.Generator().manual_seed(2)) * 0.7).requires_grad_()
    model(constraints.apply(flows, u, 0.7))[:, 0].sum().backward()
    assert bool(torch.isfinite(u.grad).all())
    assert bool((u.grad != 0).any(0).all())


def test_attack_runs_under_inference_mode(flows: torch.Tensor) -> None:
    model = _toy_detector(len(DEFAULT_FEATURES)).eval()
    attack = ConstrainedPGD(eps=0.7, steps=2)
    with torch.inference_mode():
        x = flows.clone()
        x_adv = attack(lambda z: model(z)[:, 0], x, generator=torch.Generator().manual_seed(0))
    assert x_adv.shape == flows.shape and not x_adv.is_inference()


def test_constrained_pgd_class() -> None:
    attack = ConstrainedPGD(eps=0.7, steps=10)
    assert isinstance(attack, Attack)
    assert attack.name == "cpgd10_eps0.7"
    assert attack.with_eps(0.35).name == "cpgd10_eps0.35"
    assert ConstrainedPGD(name="mine").name == "mine"
    with pytest.raises(ValueError, match="restarts"):
        ConstrainedPGD(restarts=0)
    with pytest.raises(ValueError, match="search"):
        ConstrainedPGD(search=-1)
    with pytest.raises(ValueError, match="alpha"):
        ConstrainedPGD(alpha=0)
    with pytest.raises(ValueError, match="eps"):
        ConstrainedPGD(eps=-1)


def test_constraint_layout_errors() -> None:
    with pytest.raises(ValueError, match=r"ack_flag_cnt.*not modelled"):
        FlowConstraints([*DEFAULT_FEATURES, "ack_flag_cnt"])
    with pytest.raises(ValueError, match=r"lacks \['totlen_bwd_pkts'\]"):
        FlowConstraints([f for f in DEFAULT_FEATURES if f != "totlen_bwd_pkts"])
    with pytest.raises(ValueError, match=r"lacks \['fwd_iat_tot'\]"):
        FlowConstraints([*BASE_FEATURES, "fwd_iat_mean"])
    with pytest.raises(ValueError, match=r"max_payload must be an int >= 0 \(bytes\), got -1"):
        FlowConstraints(max_payload=-1)
    with pytest.raises(ValueError, match=r"max_gap_us must be a finite number >= 0 \(µs\), got inf"):
        FlowConstraints(max_gap_us=float("inf"))
    constraints = FlowConstraints([*BASE_FEATURES, "flow_byts_s"])
    with pytest.raises(ValueError, match=r"shape \(B, 6\)"):
        constraints.columns(torch.zeros(2, 5))


def test_constrained_pgd_argument_errors(flows: torch.Tensor) -> None:
    constraints = FlowConstraints()

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        return x.sum(1)

    with pytest.raises(TypeError, match="FlowConstraints"):
        constrained_pgd(loss_fn, flows, "features")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN or inf"):
        constrained_pgd(loss_fn, flows.clone().fill_(float("nan")), constraints)
    with pytest.raises(ValueError, match="per-sample"):
        constrained_pgd(loss_fn, flows, constraints, eps=torch.ones(3))
    with pytest.raises(ValueError, match="restarts"):
        constrained_pgd(loss_fn, flows, constraints, restarts=0)


def test_a_naive_feature_space_step_breaks_the_constraints(flows: torch.Tensor, tmp_path: Path) -> None:
    """What the audit is for: an unconstrained L-inf step in log space yields impossible flows."""
    constraints = FlowConstraints()
    z = torch.sign(flows) * torch.log1p(flows.abs())
    step = 0.3 * torch.sign(torch.randn(flows.shape, generator=torch.Generator().manual_seed(0)))
    naive = torch.sign(z + step) * torch.expm1((z + step).abs())
    report = constraints.violations(naive, flows, 0.7)
    for rule in ("fixed", "integer", "mean_equals_total_over_count", "rates_recomputed"):
        assert report[rule] > len(flows) // 2, (rule, report)
