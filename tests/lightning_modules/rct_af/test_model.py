"""CurvatureTunableActivation, max_second_derivative, swap_activations, Hutchinson's Hessian diagonal."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_lightning.lightning_modules.rct_af import (
    ACTIVATION_BASES,
    CurvatureTunableActivation,
    hessian_diag_norm,
    hutchinson_hessian_diagonal,
    max_second_derivative,
    swap_activations,
)
from robust_lightning.nn import PreActResNet18, SmallCNN

pytestmark = pytest.mark.usefixtures("single_thread")


# -- the activation: max|σ''| is what was asked for ------------------------------------------

@pytest.mark.parametrize("base", ACTIVATION_BASES)
@pytest.mark.parametrize("kappa", [0.25, 1.0, 4.0, 6.0, 10.0, 32.0, 500.0])
def test_requested_max_curvature_is_measured_within_one_percent(base: str, kappa: float) -> None:
    act = CurvatureTunableActivation(kappa, base)
    # A grid that does not contain the peak at 0 (even count, asymmetric range): the measured
    # value may only undershoot by the grid's resolution, never exceed the request.
    for lo, hi, num in ((-10.0, 10.0, 200_001), (-3.0, 4.0, 140_000)):
        measured = max_second_derivative(act, lo, hi, num)
        assert measured == pytest.approx(kappa, rel=0.01), (base, kappa, lo, hi, measured)
        assert measured <= kappa * (1 + 1e-9)


@pytest.mark.parametrize("base", ACTIVATION_BASES)
def test_second_derivative_matches_closed_form_shape(base: str) -> None:
    """σ''(x) = β g''(βx): check against finite differences of the forward at a few points."""
    act = CurvatureTunableActivation(3.0, base)
    x = torch.tensor([-1.3, -0.4, 0.0, 0.2, 0.9], dtype=torch.float64)
    h = 1e-4
    finite = (act(x + h) - 2 * act(x) + act(x - h)) / h**2
    x.requires_grad_(True)
    (first,) = torch.autograd.grad(act(x).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), x)
    torch.testing.assert_close(second, finite, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("base", ACTIVATION_BASES)
def test_limits_relu_for_large_curvature_and_linear_for_small(base: str) -> None:
    x = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    sharp = CurvatureTunableActivation(1e4, base)(x)
    assert (sharp - F.relu(x)).abs().max() < 1e-3
    # Slopes 0 on the left and 1 on the right for every κ (rectifier), 1/2 at the origin.
    act = CurvatureTunableActivation(0.5, base)
    z = torch.tensor([-200.0, 0.0, 200.0], dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(act(z).sum(), z)
    torch.testing.assert_close(slope, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("base", ACTIVATION_BASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_and_huge_beta_stay_finite(base: str, dtype: torch.dtype) -> None:
    x = torch.linspace(-6e4, 6e4, 4001).to(dtype).requires_grad_(True)
    act = CurvatureTunableActivation(1e5, base)  # β x far beyond the fp16 range
    y = act(x)
    assert y.dtype == dtype
    assert torch.isfinite(y).all()
    # softplus sits log(2)/β above ReLU at 0.
    torch.testing.assert_close(y.float(), F.relu(x.detach().float()), atol=1e-5, rtol=1e-2)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_autocast_bf16_matches_float32() -> None:
    torch.manual_seed(0)
    net = SmallCNN(num_classes=10, in_channels=1, width=8, hidden=16,
                   activation=functools.partial(CurvatureTunableActivation, 8.0, "silu"))
    x = torch.rand(4, 1, 16, 16)
    reference = net(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.05)


def test_activation_holds_no_state_and_reprs_its_curvature() -> None:
    act = CurvatureTunableActivation(6.0, "softplus")
    assert act.state_dict() == {}
    assert act.beta == pytest.approx(24.0)
    assert "max_curvature=6" in repr(act)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"max_curvature": 0.0}, "max_curvature"),
    ({"max_curvature": -2.0}, "max_curvature"),
    ({"max_curvature": math.inf}, "max_curvature"),
    ({"max_curvature": math.nan}, "max_curvature"),
    ({"max_curvature": "8"}, "max_curvature"),
    ({"max_curvature": True}, "max_curvature"),
    ({"max_curvature": 8.0, "base": "tanh"}, "base"),
])
def test_bad_activation_arguments_are_named(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        CurvatureTunableActivation(**kwargs)


# -- the measuring utility on activations whose maxima are known independently -----------------

@pytest.mark.parametrize(("act", "expected"), [
    (torch.tanh, 4 / (3 * math.sqrt(3))),          # tanh'' = -2 tanh sech², max at tanh = 1/√3
    (torch.sigmoid, 1 / (6 * math.sqrt(3))),       # σ'' = σ(1-σ)(1-2σ), max at σ = 1/2 ± 1/(2√3)
    (F.silu, 0.5),                                 # plain SiLU: max at 0
    (F.relu, 0.0),                                 # piecewise linear: 0 almost everywhere
])
def test_max_second_derivative_of_known_functions(act, expected: float) -> None:
    assert max_second_derivative(act) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_max_second_derivative_rejects_bad_arguments() -> None:
    act = CurvatureTunableActivation(1.0)
    with pytest.raises(ValueError, match="lo and hi"):
        max_second_derivative(act, 1.0, -1.0)
    with pytest.raises(ValueError, match="num"):
        max_second_derivative(act, num=1)
    with pytest.raises(ValueError, match="elementwise"):
        max_second_derivative(lambda x: x.sum(), num=10)


# -- swapping the activations of existing networks ---------------------------------------------

def _count(model: nn.Module) -> tuple[int, dict[type, int]]:
    kinds: dict[type, int] = {}
    for module in model.modules():
        kinds[type(module)] = kinds.get(type(module), 0) + 1
    return sum(kinds.values()), kinds


@pytest.mark.parametrize(("build", "shape", "expected_swaps"), [
    (lambda: SmallCNN(num_classes=10, in_channels=1, width=8, hidden=16), (2, 1, 16, 16), 3),
    (lambda: PreActResNet18(num_classes=10, in_channels=3, width=4), (2, 3, 16, 16), 17),
])
def test_swap_keeps_shape_module_count_and_state_dict(build, shape, expected_swaps: int) -> None:
    torch.manual_seed(0)
    model = build().eval()
    x = torch.rand(*shape)
    before_out = model(x)
    total_before, kinds_before = _count(model)
    keys_before = list(model.state_dict())
    factory = functools.partial(CurvatureTunableActivation, 4.0, "silu")
    assert swap_activations(model, factory) == expected_swaps
    total_after, kinds_after = _count(model)
    assert total_after == total_before
    assert kinds_after.get(nn.ReLU, 0) == 0
    assert kinds_after[CurvatureTunableActivation] == kinds_before[nn.ReLU] == expected_swaps
    assert list(model.state_dict()) == keys_before
    after_out = model(x)
    assert after_out.shape == before_out.shape
    assert not torch.allclose(after_out, before_out), "the swap must change the function"


def test_swap_torchvision_resnet_preserves_shared_modules_and_leaves_gates() -> None:
    torchvision = pytest.importorskip("torchvision")
    resnet = torchvision.models.resnet18(num_classes=10).eval()
    # torchvision's BasicBlock registers one ReLU and calls it twice.
    assert swap_activations(resnet, functools.partial(CurvatureTunableActivation, 8.0)) == 9
    assert not any(isinstance(m, nn.ReLU) for m in resnet.modules())
    assert resnet(torch.rand(2, 3, 32, 32)).shape == (2, 10)

    mobilenet = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    gates_before = sum(isinstance(m, nn.Hardsigmoid) for m in mobilenet.modules())
    total_before, _ = _count(mobilenet)
    swapped = swap_activations(mobilenet, functools.partial(CurvatureTunableActivation, 8.0, "gelu"))
    assert swapped > 0
    assert not any(isinstance(m, (nn.ReLU, nn.Hardswish)) for m in mobilenet.modules())
    # Squeeze-excitation gates (Hardsigmoid) are not rectifiers and stay.
    assert sum(isinstance(m, nn.Hardsigmoid) for m in mobilenet.modules()) == gates_before > 0
    assert _count(mobilenet)[0] == total_before
    assert mobilenet(torch.rand(2, 3, 64, 64)).shape == (2, 10)


def test_swap_shared_instance_stays_shared_and_types_filter() -> None:
    shared = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 3), shared, nn.Linear(3, 3), shared, nn.Tanh())
    assert swap_activations(model, nn.SiLU) == 1
    assert model[1] is model[3] and isinstance(model[1], nn.SiLU)
    assert isinstance(model[4], nn.Tanh)
    assert swap_activations(model, nn.ReLU, types=[nn.Tanh]) == 1
    assert isinstance(model[4], nn.ReLU) and isinstance(model[1], nn.SiLU)


def test_swap_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="model"):
        swap_activations(torch.zeros(3), nn.SiLU)
    with pytest.raises(TypeError, match="factory"):
        swap_activations(nn.Sequential(nn.ReLU()), lambda: torch.relu)
    with pytest.raises(TypeError, match="factory"):
        swap_activations(nn.Sequential(nn.ReLU()), "silu")


# -- Hutchinson's Hessian diagonal on a quadratic whose Hessian is known exactly ---------------

class _Quadratic(nn.Module):
    """L(θ, b) = ½ θᵀ A θ + 3 Σ b: Hessian A in θ, zero in b (linear, uncoupled)."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.theta = nn.Parameter(torch.randn(a.shape[0], dtype=a.dtype))
        self.b = nn.Parameter(torch.randn(a.shape[0], dtype=a.dtype))


def _quadratic_loss(module: _Quadratic, batch) -> torch.Tensor:
    return 0.5 * module.theta @ module.a @ module.theta + 3.0 * module.b.sum()


def test_hutchinson_is_exact_for_a_diagonal_hessian() -> None:
    torch.manual_seed(0)
    diagonal = torch.tensor([3.0, -1.0, 0.5, 7.0], dtype=torch.float64)
    module = _Quadratic(torch.diag(diagonal))
    estimate = hutchinson_hessian_diagonal(module, None, _quadratic_loss, num_probes=1,
                                           generator=torch.Generator().manual_seed(1))
    theta_diag, b_diag = estimate
    torch.testing.assert_close(theta_diag, diagonal)
    # The loss is linear in b: its Hessian rows are zero.
    torch.testing.assert_close(b_diag, torch.zeros(4, dtype=torch.float64))
    norm = hessian_diag_norm(module, None, _quadratic_loss, num_probes=1)
    assert norm == pytest.approx(float(diagonal.norm()) / math.sqrt(8))
    assert hessian_diag_norm(module, None, _quadratic_loss, num_probes=1, normalize=False) == pytest.approx(
        float(diagonal.norm()))


def test_hutchinson_converges_to_the_diagonal_of_a_dense_hessian() -> None:
    torch.manual_seed(0)
    m = torch.randn(6, 6, dtype=torch.float64)
    a = m @ m.T + torch.eye(6, dtype=torch.float64)
    module = _Quadratic(a)
    theta_diag = hutchinson_hessian_diagonal(module, None, _quadratic_loss, num_probes=4000,
                                             generator=torch.Generator().manual_seed(0),
                                             params=[module.theta])[0]
    # Error std per entry: sqrt(Σ_{j≠i} A_ij² / N); 5 std is a margin that always holds.
    off = (a**2).sum(1) - a.diagonal() ** 2
    tolerance = 5 * torch.sqrt(off / 4000)
    assert ((theta_diag - a.diagonal()).abs() <= tolerance).all(), (theta_diag, a.diagonal())
    # With one probe the estimate is generally wrong: the test above measures something.
    one = hutchinson_hessian_diagonal(module, None, _quadratic_loss, num_probes=1,
                                      generator=torch.Generator().manual_seed(0), params=[module.theta])[0]
    assert not torch.allclose(one, a.diagonal(), atol=1e-3)


def test_hutchinson_matches_the_exact_hessian_of_a_small_network() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), CurvatureTunableActivation(4.0), nn.Linear(4, 3)).double()
    x = torch.randn(16, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    params = dict(net.named_parameters())
    names = list(params)

    def loss_of(*flat):
        out = torch.func.functional_call(net, dict(zip(names, flat, strict=False)), (x,))
        return F.cross_entropy(out, y)

    hessian = torch.autograd.functional.hessian(loss_of, tuple(params.values()))
    exact = torch.cat([hessian[i][i].reshape(p.numel(), p.numel()).diagonal()
                       for i, p in enumerate(params.values())])
    estimate = torch.cat([d.reshape(-1) for d in hutchinson_hessian_diagonal(
        net, (x, y), num_probes=3000, generator=torch.Generator().manual_seed(0))])
    # Off-diagonal Hessian mass makes single probes noisy; 3000 of them bring the relative
    # error to ~5% (deterministic generator; 15% leaves margin).
    assert (estimate - exact).norm() < 0.15 * exact.norm()
    assert torch.corrcoef(torch.stack([estimate, exact]))[0, 1] > 0.98


def test_hessian_restores_modes_and_batchnorm_statistics() -> None:
    net = SmallCNN(num_classes=10, in_channels=1, width=4, hidden=8).train()
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 10, (8,))
    value = hessian_diag_norm(net, (x, y), num_probes=2, generator=torch.Generator().manual_seed(0))
    assert math.isfinite(value) and value > 0
    assert net.training and all(m.training for m in net.modules())
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, stats[k])
    assert all(p.grad is None for p in net.parameters())
    again = hessian_diag_norm(net, (x, y), num_probes=2, generator=torch.Generator().manual_seed(0))
    assert again == value


def test_hessian_rejects_bad_arguments() -> None:
    net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="num_probes"):
        hessian_diag_norm(net, (torch.rand(2, 2), torch.tensor([0, 1])), num_probes=0)
    with pytest.raises(ValueError, match="scalar"):
        hessian_diag_norm(net, None, loss_fn=lambda m, b: m.weight.sum(0))
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        hessian_diag_norm(frozen, (torch.rand(2, 2), torch.tensor([0, 1])))
