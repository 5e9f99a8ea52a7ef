"""Tests of the functional attack core: pgd, fgsm, attack_mode, parse_budget, eps_tag."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_lightning.attacks.core import attack_mode, eps_tag, fgsm, parse_budget, pgd

B = 6
SHAPE = (B, 1, 4, 4)
FEATURES = 16
CLASSES = 3


# -- helpers ------------------------------------------------------------------------------
def make_problem(seed: int = 0, dtype: torch.dtype = torch.float32, shape=SHAPE, low=0.0, high=1.0):
    """A random linear classifier, inputs strictly inside (low, high) and labels."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(math.prod(shape[1:])), CLASSES))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(model[1].weight.shape, generator=g))
        model[1].bias.copy_(torch.randn(CLASSES, generator=g))
    model = model.to(dtype)
    span = high - low
    x = (low + span * (0.05 + 0.9 * torch.rand(shape, generator=g))).to(dtype)
    y = torch.randint(0, CLASSES, (shape[0],), generator=g)
    return model, x, y


def ce_loss(model: nn.Module, y: torch.Tensor):
    return lambda z: F.cross_entropy(model(z), y, reduction="none")


def zero_grad_loss(z: torch.Tensor) -> torch.Tensor:
    """A loss that depends on its input but has a zero gradient: the attack cannot move."""
    return (z * 0.0).flatten(1).sum(1)


def per_sample_linf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).abs().amax(1)


def per_sample_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).double().norm(dim=1)


# -- argument validation ------------------------------------------------------------------
@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf")])
def test_invalid_eps_is_named(eps):
    model, x, y = make_problem()
    with pytest.raises(ValueError, match="eps"):
        pgd(ce_loss(model, y), x, eps=eps)


def test_negative_per_sample_eps_is_named():
    model, x, y = make_problem()
    eps = torch.full((B,), 0.1)
    eps[2] = -0.01
    with pytest.raises(ValueError, match="eps"):
        pgd(ce_loss(model, y), x, eps=eps)


@pytest.mark.parametrize("eps_shape", [(B + 1,), (B, 1), (1, B), (B - 1,)])
def test_per_sample_eps_of_wrong_shape(eps_shape):
    model, x, y = make_problem()
    with pytest.raises(ValueError, match=r"eps.*\(6,\)"):
        pgd(ce_loss(model, y), x, eps=torch.full(eps_shape, 0.1))


@pytest.mark.parametrize("alpha", [0.0, -0.01, float("nan"), float("inf")])
def test_invalid_alpha_is_named(alpha):
    model, x, y = make_problem()
    with pytest.raises(ValueError, match="alpha"):
        pgd(ce_loss(model, y), x, alpha=alpha)


@pytest.mark.parametrize("steps", [-1, 2.5, 3.0, True, "10", None])
def test_invalid_steps_is_named(steps):
    model, x, y = make_problem()
    with pytest.raises(ValueError, match="steps"):
        pgd(ce_loss(model, y), x, steps=steps)


@pytest.mark.parametrize("norm", ["l1", "Linf", "inf", None])
def test_unknown_norm_is_named(norm):
    model, x, y = make_problem()
    with pytest.raises(ValueError, match="norm"):
        pgd(ce_loss(model, y), x, norm=norm)
    with pytest.raises(ValueError, match="norm"):
        fgsm(ce_loss(model, y), x, norm=norm)


@pytest.mark.parametrize("bounds", [(1.0, 0.0), (0.5, 0.5), ("a", "b"), (0.0,), None])
def test_invalid_bounds_is_named(bounds):
    model, x, y = make_problem()
    with pytest.raises(ValueError, match="bounds"):
        pgd(ce_loss(model, y), x, bounds=bounds)


@pytest.mark.parametrize("random_start", [-0.1, float("nan"), "yes"])
def test_invalid_random_start_is_named(random_start):
    model, x, y = make_problem()
    with pytest.raises(ValueError, match="random_start"):
        pgd(ce_loss(model, y), x, random_start=random_start)


@pytest.mark.parametrize("offset", [0.5, -0.5])
def test_inputs_outside_bounds_give_unnormalised_hint(offset):
    model, x, y = make_problem()
    with pytest.raises(ValueError, match="unnormalised") as info:
        pgd(ce_loss(model, y), x + offset, eps=0.1)
    assert "Normalize" in str(info.value)


def test_normalised_inputs_rejected_with_default_bounds_but_accepted_with_matching_bounds():
    model, x, y = make_problem(low=-1.0, high=1.0)
    assert float(x.min()) < 0
    with pytest.raises(ValueError, match="unnormalised"):
        pgd(ce_loss(model, y), x, eps=0.1)
    out = pgd(ce_loss(model, y), x, eps=0.1, bounds=(-1.0, 1.0))
    assert out.shape == x.shape


def test_inputs_a_hair_outside_bounds_are_accepted_and_clamped():
    model, x, y = make_problem()
    x[0, 0, 0, 0] = 1.0 + 1e-6
    x[1, 0, 0, 0] = -1e-6
    out = pgd(ce_loss(model, y), x, eps=0.05, alpha=0.01, steps=2)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_non_floating_inputs_raise_type_error(dtype):
    model, x, y = make_problem()
    with pytest.raises(TypeError, match="floating"):
        pgd(ce_loss(model, y), (x * 255).to(dtype))


def test_non_tensor_inputs_raise_type_error():
    model, x, y = make_problem()
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        pgd(ce_loss(model, y), x.tolist())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_raise(bad):
    model, x, y = make_problem()
    x[3, 0, 1, 1] = bad
    with pytest.raises(ValueError, match="NaN"):
        pgd(ce_loss(model, y), x)


def test_empty_batch_raises():
    model, _, y = make_problem()
    with pytest.raises(ValueError, match="non-empty"):
        pgd(ce_loss(model, y), torch.rand(0, 1, 4, 4))


@pytest.mark.parametrize("reduce", ["mean", "column", "matrix"])
def test_loss_of_wrong_shape_names_loss_fn(reduce):
    model, x, y = make_problem()

    def loss_fn(z):
        loss = F.cross_entropy(model(z), y, reduction="none")
        if reduce == "mean":
            return loss.mean()
        if reduce == "column":
            return loss[:, None]
        return loss[:, None].expand(B, 2)

    with pytest.raises(ValueError, match=r"loss_fn.*\(6,\)"):
        pgd(loss_fn, x, eps=0.1)


def test_loss_that_is_not_a_tensor_names_loss_fn():
    _, x, _ = make_problem()
    with pytest.raises(ValueError, match="loss_fn"):
        pgd(lambda z: [0.0] * B, x, eps=0.1)


def test_loss_not_depending_on_input_raises():
    _, x, _ = make_problem()
    with pytest.raises(ValueError, match="does not depend on its input"):
        pgd(lambda z: torch.ones(B), x, eps=0.1)


def test_loss_not_depending_on_input_raises_even_when_parameters_require_grad():
    # A loss computed from a detached copy still requires grad through the parameters; the
    # attack must report the missing input dependence, not an autograd internals error.
    model, x, y = make_problem()
    with pytest.raises(ValueError, match="does not depend on its input"):
        pgd(lambda z: F.cross_entropy(model(z.detach()), y, reduction="none"), x, eps=0.1)
    assert all(p.grad is None for p in model.parameters())


def test_nan_loss_raises_floating_point_error():
    model, x, y = make_problem()
    with pytest.raises(FloatingPointError, match="NaN"):
        pgd(lambda z: F.cross_entropy(model(z), y, reduction="none") * float("nan"), x, eps=0.1)


def test_loss_turning_nan_mid_attack_raises_floating_point_error():
    model, x, y = make_problem()
    calls = []

    def loss_fn(z):
        calls.append(1)
        loss = F.cross_entropy(model(z), y, reduction="none")
        return loss if len(calls) == 1 else loss * float("nan")

    with pytest.raises(FloatingPointError):
        pgd(loss_fn, x, eps=0.1, steps=3)
    assert len(calls) == 3


def test_generator_on_another_device_is_named():
    # A meta-device batch with a CPU generator: the device check fires before anything runs.
    x = torch.empty(SHAPE, device="meta")
    with pytest.raises(ValueError, match="generator"):
        pgd(zero_grad_loss, x, generator=torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_with_cuda_inputs_is_named():
    model, x, y = make_problem()
    with pytest.raises(ValueError, match="generator"):
        pgd(ce_loss(model.cuda(), y.cuda()), x.cuda(), generator=torch.Generator())


@pytest.mark.parametrize("shape", [(B, 16), (B + 1, 1, 4, 4), (1, 1, 4, 4)])
def test_x_init_of_wrong_shape_is_named(shape):
    model, x, y = make_problem()
    with pytest.raises(ValueError, match="x_init"):
        pgd(ce_loss(model, y), x, x_init=torch.rand(shape))


def test_fgsm_negative_eps_reports_eps_not_alpha():
    model, x, y = make_problem()
    with pytest.raises(ValueError, match="eps"):
        fgsm(ce_loss(model, y), x, eps=-0.1)
    with pytest.raises(ValueError, match="eps"):
        fgsm(ce_loss(model, y), x, eps=torch.tensor([-0.1] * B))


# -- trivial budgets ----------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_zero_steps_returns_x_unchanged(norm):
    model, x, y = make_problem()
    out = pgd(ce_loss(model, y), x, eps=0.1, steps=0, norm=norm, random_start=True)
    assert torch.equal(out, x)
    assert not out.requires_grad


@pytest.mark.parametrize("eps", [0.0, 0, torch.tensor(0.0), torch.zeros(B)])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_zero_eps_returns_x_unchanged(eps, norm):
    model, x, y = make_problem()
    before = x.clone()
    out = pgd(ce_loss(model, y), x, eps=eps, steps=5, norm=norm, random_start=True)
    assert torch.equal(out, before)
    assert torch.equal(x, before)
    assert torch.equal(fgsm(ce_loss(model, y), x, eps=eps, norm=norm), before)
    assert torch.equal(fgsm(ce_loss(model, y), x, eps=eps, norm=norm, random_start=True), before)


def test_per_sample_zero_eps_leaves_only_those_samples_unchanged():
    model, x, y = make_problem()
    eps = torch.tensor([0.0, 0.1, 0.0, 0.1, 0.0, 0.1])
    out = pgd(ce_loss(model, y), x, eps=eps, alpha=0.05, steps=3)
    dist = per_sample_linf(out, x)
    assert torch.all(dist[eps == 0] == 0)
    assert torch.all(dist[eps > 0] > 0)


def test_input_is_never_modified_in_place():
    model, x, y = make_problem()
    before = x.clone()
    pgd(ce_loss(model, y), x, eps=0.1, alpha=0.03, steps=3)
    fgsm(ce_loss(model, y), x, eps=0.1, random_start=True)
    pgd(ce_loss(model, y), x, eps=0.5, alpha=0.3, steps=2, norm="l2")
    assert torch.equal(x, before)


def test_input_requiring_grad_gets_no_grad_and_output_is_detached():
    model, x, y = make_problem()
    x.requires_grad_(True)
    out = pgd(ce_loss(model, y), x, eps=0.1, alpha=0.03, steps=2)
    assert x.grad is None
    assert not out.requires_grad and out.grad_fn is None


# -- the threat model: eps-ball and bounds ------------------------------------------------
@pytest.mark.parametrize("random_start", [True, False])
def test_linf_stays_in_per_sample_ball_and_bounds(random_start):
    model, x, y = make_problem(shape=(B, 3, 4, 4))
    eps = torch.tensor([0.0, 0.01, 0.05, 0.1, 0.3, 0.8])
    out = pgd(ce_loss(model, y), x, eps=eps, alpha=0.07, steps=7, random_start=random_start,
              generator=torch.Generator().manual_seed(1))
    assert torch.all(per_sample_linf(out, x) <= eps + 1e-6)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # large budgets with big steps saturate: the biggest sample hits the bounds somewhere
    assert bool(((out == 0) | (out == 1))[5].any())


@pytest.mark.parametrize("random_start", [True, False])
def test_l2_stays_in_per_sample_ball_and_bounds(random_start):
    model, x, y = make_problem(shape=(B, 3, 4, 4))
    eps = torch.tensor([0.0, 0.05, 0.25, 0.5, 1.0, 3.0])
    out = pgd(ce_loss(model, y), x, eps=eps, alpha=0.4, steps=7, norm="l2",
              random_start=random_start, generator=torch.Generator().manual_seed(2))
    assert torch.all(per_sample_l2(out, x) <= eps.double() + 1e-5)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # the step size is large enough for small budgets to end on the sphere
    assert torch.allclose(per_sample_l2(out, x)[1:3], eps[1:3].double(), atol=1e-4)


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 2.0)])
def test_custom_bounds_are_respected(norm, eps):
    model, x, y = make_problem(low=-1.0, high=1.0)
    x[0] = 0.98  # near the top of the range: the step would cross it
    x[1] = -0.98
    out = pgd(ce_loss(model, y), x, eps=eps, alpha=eps / 2, steps=4, norm=norm, bounds=(-1.0, 1.0),
              generator=torch.Generator().manual_seed(0))
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    assert float(out.min()) < 0.0  # the range below zero is actually used


def test_fgsm_random_start_stays_in_ball():
    model, x, y = make_problem()
    eps = torch.tensor([0.02, 0.04, 0.06, 0.08, 0.1, 0.12])
    out = fgsm(ce_loss(model, y), x, eps=eps, random_start=True, generator=torch.Generator().manual_seed(3))
    assert torch.all(per_sample_linf(out, x) <= eps + 1e-6)
    assert torch.all(per_sample_linf(out, x) > 0)


# -- the attack attacks --------------------------------------------------------------------
def test_linf_pgd_without_random_start_never_decreases_a_convex_loss():
    # CE of a linear model is convex in x, so every sign step with projection increases it.
    model, x, y = make_problem()
    loss_fn = ce_loss(model, y)
    clean = loss_fn(x).detach()
    out = pgd(loss_fn, x, eps=0.1, alpha=0.02, steps=10, random_start=False)
    adv = loss_fn(out).detach()
    assert torch.all(adv >= clean - 1e-6)
    assert float(adv.sum()) > float(clean.sum()) + 0.1


@pytest.mark.parametrize("norm,eps,alpha", [("linf", 0.1, 0.03), ("l2", 0.5, 0.15)])
def test_pgd_with_random_start_increases_loss_and_flips_predictions(norm, eps, alpha):
    model, x, _ = make_problem(shape=(32, 1, 4, 4))
    y = model(x).argmax(1)  # every clean prediction is correct
    loss_fn = ce_loss(model, y)
    out = pgd(loss_fn, x, eps=eps, alpha=alpha, steps=10, norm=norm,
              generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float(loss_fn(out).mean()) > float(loss_fn(x).mean())
        assert float((model(out).argmax(1) == y).float().mean()) < 1.0


def _input_grad(model, x, y):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return grad


def test_fgsm_equals_closed_form_on_linear_model():
    model, x, y = make_problem(shape=(8, 1, 4, 4))
    x[0] = 0.97  # close to 1: clamped when the gradient points up
    x[1] = 0.03
    eps = 0.1
    expected = (x + eps * _input_grad(model, x, y).sign()).clamp(0, 1)
    out = fgsm(ce_loss(model, y), x, eps=eps)
    assert torch.allclose(out, expected, atol=1e-6, rtol=0)
    assert bool((out == 1).any()) and bool((out == 0).any())


def test_fgsm_per_sample_eps_equals_each_samples_own_step():
    model, x, y = make_problem()
    eps = torch.tensor([0.0, 0.01, 0.03, 0.05, 0.1, 0.2])
    grad_sign = _input_grad(model, x, y).sign()
    expected = (x + eps.view(-1, 1, 1, 1) * grad_sign).clamp(0, 1)
    out = fgsm(ce_loss(model, y), x, eps=eps)
    assert torch.allclose(out, expected, atol=1e-6, rtol=0)
    for i in range(B):
        single = fgsm(ce_loss(model, y[i : i + 1]), x[i : i + 1], eps=float(eps[i]))
        assert torch.allclose(out[i : i + 1], single, atol=1e-6, rtol=0)


def test_fgsm_l2_step_has_norm_eps():
    model, x, y = make_problem()
    out = fgsm(ce_loss(model, y), x, eps=0.2, norm="l2", bounds=(-10.0, 10.0))
    grad = _input_grad(model, x, y)
    assert torch.allclose(per_sample_l2(out, x), torch.full((B,), 0.2, dtype=torch.float64), atol=1e-5)
    direction = (out - x).flatten(1)
    cos = F.cosine_similarity(direction, grad.flatten(1), dim=1)
    assert torch.allclose(cos, torch.ones(B), atol=1e-4)


def test_fgsm_explicit_alpha_is_used():
    model, x, y = make_problem()
    # a tiny alpha with a big eps: the step is alpha, not eps
    out = fgsm(ce_loss(model, y), x, eps=0.3, alpha=0.01)
    assert torch.allclose(per_sample_linf(out, x), torch.full((B,), 0.01), atol=1e-6)


# -- randomness -----------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("start", [True, 0.01])
def test_same_generator_seed_is_reproducible_and_leaves_global_rng_alone(norm, start):
    model, x, y = make_problem()
    loss_fn = ce_loss(model, y)
    kwargs = dict(eps=0.1, alpha=0.03, steps=3, norm=norm, random_start=start)
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    a = pgd(loss_fn, x, generator=torch.Generator().manual_seed(7), **kwargs)
    b = pgd(loss_fn, x, generator=torch.Generator().manual_seed(7), **kwargs)
    c = pgd(loss_fn, x, generator=torch.Generator().manual_seed(8), **kwargs)
    d = fgsm(loss_fn, x, eps=0.1, norm=norm, random_start=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(d, x)


def test_generator_stream_advances_between_calls():
    _, x, _ = make_problem()
    g = torch.Generator().manual_seed(0)
    first = pgd(zero_grad_loss, x, eps=0.1, steps=1, generator=g)
    second = pgd(zero_grad_loss, x, eps=0.1, steps=1, generator=g)
    assert not torch.equal(first, second)


def test_without_generator_the_global_rng_is_used():
    _, x, _ = make_problem()
    torch.manual_seed(5)
    a = pgd(zero_grad_loss, x, eps=0.1, steps=1)
    torch.manual_seed(5)
    b = pgd(zero_grad_loss, x, eps=0.1, steps=1)
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_uniform_linf_start_fills_the_ball():
    # With a zero-gradient loss the steps do nothing, so the output is the random start.
    x = torch.full((64, 3, 8, 8), 0.5)
    eps = 0.1
    out = pgd(zero_grad_loss, x, eps=eps, steps=1, generator=torch.Generator().manual_seed(0))
    delta = out - x
    assert float(delta.abs().max()) <= eps + 1e-6
    assert float(delta.abs().max()) > 0.95 * eps
    assert abs(float(delta.abs().mean()) - eps / 2) < 0.05 * eps  # uniform on [-eps, eps]
    assert abs(float(delta.mean())) < 0.05 * eps


def test_gaussian_start_is_x_plus_std_times_normal_noise():
    x = torch.full((4, 2, 3, 3), 0.5)
    std, eps = 0.01, 0.5
    out = pgd(zero_grad_loss, x, eps=eps, steps=1, random_start=std,
              generator=torch.Generator().manual_seed(3))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(out, x + std * noise, atol=1e-6)


def test_gaussian_start_is_projected_into_the_ball():
    x = torch.full((4, 2, 3, 3), 0.5)
    out = pgd(zero_grad_loss, x, eps=0.01, steps=1, random_start=1.0,
              generator=torch.Generator().manual_seed(3))
    assert float((out - x).abs().max()) <= 0.01 + 1e-6
    assert float((out - x).abs().max()) > 0.009


@pytest.mark.parametrize("start", [False, 0.0])
def test_no_random_start_starts_at_x(start):
    _, x, _ = make_problem()
    out = pgd(zero_grad_loss, x, eps=0.1, steps=2, random_start=start, generator=torch.Generator())
    assert torch.equal(out, x)


def test_l2_random_start_is_inside_the_ball_in_random_directions():
    x = torch.full((32, 3, 4, 4), 0.5)
    eps = 0.5
    out = pgd(zero_grad_loss, x, eps=eps, steps=1, norm="l2", generator=torch.Generator().manual_seed(0))
    norms = per_sample_l2(out, x)
    assert torch.all(norms <= eps + 1e-5)
    assert torch.all(norms > 0)
    assert float(norms.max()) > 0.5 * eps and float(norms.min()) < 0.5 * eps  # uniform radius
    directions = F.normalize((out - x).flatten(1), dim=1)
    cos = directions @ directions.T
    off_diagonal = cos[~torch.eye(32, dtype=torch.bool)]
    assert float(off_diagonal.abs().max()) < 0.9


def test_l2_attack_with_random_start_is_seeded_and_within_ball():
    model, x, y = make_problem()
    loss_fn = ce_loss(model, y)
    a = pgd(loss_fn, x, eps=0.5, alpha=0.2, steps=3, norm="l2", generator=torch.Generator().manual_seed(0))
    b = pgd(loss_fn, x, eps=0.5, alpha=0.2, steps=3, norm="l2", generator=torch.Generator().manual_seed(0))
    no_start = pgd(loss_fn, x, eps=0.5, alpha=0.2, steps=3, norm="l2", random_start=False)
    assert torch.equal(a, b)
    assert not torch.equal(a, no_start)
    assert torch.all(per_sample_l2(a, x) <= 0.5 + 1e-5)


# -- x_init -----------------------------------------------------------------------------------
def test_x_init_is_projected_linf():
    _, x, _ = make_problem()
    far = x + 1.0
    out = pgd(zero_grad_loss, x, eps=0.1, steps=1, x_init=far)
    assert torch.allclose(out, (x + 0.1).clamp(0, 1), atol=1e-6)
    out = pgd(zero_grad_loss, x, eps=0.1, steps=1, x_init=x - 1.0)
    assert torch.allclose(out, (x - 0.1).clamp(0, 1), atol=1e-6)


def test_x_init_is_projected_l2_along_its_direction():
    _, x, _ = make_problem()
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    out = pgd(zero_grad_loss, x, eps=0.3, steps=1, norm="l2", x_init=x + 5 * direction,
              bounds=(-10.0, 10.0))
    assert torch.allclose(per_sample_l2(out, x), torch.full((B,), 0.3, dtype=torch.float64), atol=1e-5)
    cos = F.cosine_similarity((out - x).flatten(1), direction.flatten(1), dim=1)
    assert torch.allclose(cos, torch.ones(B), atol=1e-5)


def test_x_init_inside_ball_is_kept_and_overrides_random_start():
    _, x, _ = make_problem()
    init = x + 0.03
    out = pgd(zero_grad_loss, x, eps=0.1, steps=1, random_start=True, x_init=init,
              generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, init.clamp(0, 1), atol=1e-6)
    out = pgd(zero_grad_loss, x, eps=0.1, steps=2, random_start=True, x_init=x)
    assert torch.equal(out, x)


# -- parameters, dtype, device, inference mode -------------------------------------------
def test_parameters_never_get_grad_and_keep_requires_grad():
    model, x, y = make_problem()
    flags = [p.requires_grad for p in model.parameters()]
    pgd(ce_loss(model, y), x, eps=0.1, alpha=0.03, steps=3)
    fgsm(ce_loss(model, y), x, eps=0.1, random_start=True)
    pgd(ce_loss(model, y), x, eps=0.5, alpha=0.2, steps=2, norm="l2")
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags == [True, True]


def test_existing_parameter_grads_are_not_accumulated_into():
    model, x, y = make_problem()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    pgd(ce_loss(model, y), x, eps=0.1, alpha=0.03, steps=3)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())


def test_parameters_frozen_by_attack_mode_are_restored_after_the_attack():
    model, x, y = make_problem()
    model[1].bias.requires_grad_(False)
    with attack_mode(model):
        out = pgd(ce_loss(model, y), x, eps=0.1, alpha=0.03, steps=2)
    assert [p.requires_grad for p in model.parameters()] == [True, False]
    assert all(p.grad is None for p in model.parameters())
    assert not torch.equal(out, x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_float64_inputs_give_float64_outputs(norm):
    model, x, y = make_problem(dtype=torch.float64)
    out = pgd(ce_loss(model, y), x, eps=0.1, alpha=0.03, steps=3, norm=norm,
              generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float64 and out.device == x.device and out.shape == x.shape
    if norm == "linf":
        assert float(per_sample_linf(out, x).max()) <= 0.1 + 1e-12
    else:
        assert float(per_sample_l2(out, x).max()) <= 0.1 + 1e-12
    out = fgsm(ce_loss(model, y), x, eps=torch.full((B,), 0.1, dtype=torch.float32), norm=norm)
    assert out.dtype == torch.float64


def test_bfloat16_inputs_give_bfloat16_outputs():
    model, x, y = make_problem()
    xb = x.to(torch.bfloat16)
    out = pgd(lambda z: F.cross_entropy(model(z.float()), y, reduction="none"), xb, eps=0.1, alpha=0.03,
              steps=3, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.bfloat16
    assert float(per_sample_linf(out.float(), xb.float()).max()) <= 0.1 + 1e-2
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_eps_tensor_on_float64_with_float32_inputs():
    model, x, y = make_problem()
    eps = torch.full((B,), 0.05, dtype=torch.float64)
    out = pgd(ce_loss(model, y), x, eps=eps, alpha=0.02, steps=3)
    assert out.dtype == torch.float32
    assert float(per_sample_linf(out, x).max()) <= 0.05 + 1e-6


def test_works_inside_inference_mode_with_an_inference_tensor():
    model, _, y = make_problem()
    with torch.inference_mode():
        x = 0.05 + 0.9 * torch.rand(SHAPE, generator=torch.Generator().manual_seed(0))
        assert x.is_inference()
        out = pgd(ce_loss(model, y), x, eps=0.1, alpha=0.03, steps=3,
                  generator=torch.Generator().manual_seed(0))
        unchanged = pgd(ce_loss(model, y), x, eps=0.0)
        one_step = fgsm(ce_loss(model, y), x, eps=0.1)
        l2 = pgd(ce_loss(model, y), x, eps=0.5, alpha=0.2, steps=2, norm="l2")
    assert not out.is_inference()
    assert float(per_sample_linf(out, x).max()) <= 0.1 + 1e-6
    assert not torch.equal(out, x)
    assert torch.equal(unchanged, x)
    assert torch.allclose(one_step, (x + 0.1 * _input_grad(model, x.clone(), y).sign()).clamp(0, 1), atol=1e-6)
    assert float(per_sample_l2(l2, x).max()) <= 0.5 + 1e-5
    assert all(p.grad is None for p in model.parameters())


def test_works_inside_no_grad():
    model, x, y = make_problem()
    with torch.no_grad():
        out = pgd(ce_loss(model, y), x, eps=0.1, alpha=0.03, steps=2)
    assert not torch.equal(out, x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_stay_on_cuda_with_cuda_generator():
    model, x, y = make_problem()
    model, x, y = model.cuda(), x.cuda(), y.cuda()
    out = pgd(ce_loss(model, y), x, eps=0.1, alpha=0.03, steps=3, generator=torch.Generator(device="cuda"))
    assert out.is_cuda and out.dtype == x.dtype
    assert float(per_sample_linf(out, x).max()) <= 0.1 + 1e-6


# -- attack_mode ----------------------------------------------------------------------------
def _bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 2))


def _bn_buffers(model):
    bn = model[1]
    return bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()


def test_attack_mode_eval_sets_eval_and_restores_each_submodules_flag():
    model = _bn_model()
    model.train()
    model[1].eval()  # a frozen BN inside a training model
    before = [m.training for m in model.modules()]
    with attack_mode(model) as inner:
        assert inner is model
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    assert before == [True, True, False, True, True, True]


def test_attack_mode_eval_disables_dropout_and_uses_running_stats():
    model = _bn_model()
    model.train()
    x = torch.randn(16, 4)
    buffers = _bn_buffers(model)
    with attack_mode(model):
        a, b = model(x), model(x)
    assert torch.equal(a, b)  # no dropout noise
    assert all(torch.equal(u, v) for u, v in zip(buffers, _bn_buffers(model), strict=False))


def test_attack_mode_restores_a_model_that_was_in_eval():
    model = _bn_model()
    model.eval()
    with attack_mode(model, mode="train"):
        assert all(m.training for m in model.modules())
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("momentum", [0.1, None])
def test_attack_mode_train_keeps_train_mode_but_restores_bn_statistics(momentum):
    model = _bn_model()
    model[1].momentum = momentum
    model.train()
    model(torch.randn(16, 4))  # non-trivial statistics to start from
    buffers = _bn_buffers(model)
    with attack_mode(model, mode="train"):
        assert all(m.training for m in model.modules())
        for _ in range(3):
            model(torch.randn(16, 4) * 3 + 1)
        changed = _bn_buffers(model)
        assert not torch.equal(changed[0], buffers[0])  # the forward passes did update them
        assert int(changed[2]) == int(buffers[2]) + 3
    after = _bn_buffers(model)
    assert all(torch.equal(u, v) for u, v in zip(buffers, after, strict=False))
    assert all(m.training for m in model.modules())


def test_attack_mode_train_with_pgd_leaves_bn_statistics_untouched():
    model = _bn_model()
    model.train()
    model(torch.randn(16, 4))
    buffers = _bn_buffers(model)
    x = torch.rand(16, 4)
    y = torch.randint(0, 2, (16,))
    with attack_mode(model, mode="train"):
        pgd(ce_loss(model, y), x, eps=0.1, alpha=0.03, steps=3)
    assert all(torch.equal(u, v) for u, v in zip(buffers, _bn_buffers(model), strict=False))


def test_attack_mode_freezes_parameters_and_restores_mixed_flags():
    model = _bn_model()
    model[0].bias.requires_grad_(False)
    before = [p.requires_grad for p in model.parameters()]
    with attack_mode(model):
        assert not any(p.requires_grad for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == before
    assert before.count(False) == 1


def test_attack_mode_without_freezing_keeps_requires_grad():
    model = _bn_model()
    with attack_mode(model, freeze_params=False):
        assert all(p.requires_grad for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_attack_mode_restores_everything_when_an_exception_is_raised(mode):
    model = _bn_model()
    model.train()
    model[2].eval()
    model[4].weight.requires_grad_(False)
    flags = [m.training for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    buffers = _bn_buffers(model)
    with pytest.raises(RuntimeError, match="boom"):
        with attack_mode(model, mode=mode):
            model(torch.randn(8, 4))
            raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(torch.equal(u, v) for u, v in zip(buffers, _bn_buffers(model), strict=False))


def test_attack_mode_rejects_unknown_mode():
    model = _bn_model()
    with pytest.raises(ValueError, match="mode"):
        with attack_mode(model, mode="test"):
            pass
    assert all(p.requires_grad for p in model.parameters())


# -- parse_budget / eps_tag ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "value,expected",
    [
        ("8/255", 8 / 255),
        (" 8 / 255 ", 8 / 255),
        ("2/255", 2 / 255),
        ("0.5/2", 0.25),
        ("1e-3", 1e-3),
        ("0.1", 0.1),
        (".25", 0.25),
        ("0", 0.0),
        (0.5, 0.5),
        (3, 3.0),
        (0, 0.0),
    ],
)
def test_parse_budget_accepts_numbers_and_fractions(value, expected):
    result = parse_budget(value, "eps")
    assert isinstance(result, float)
    assert result == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.parametrize("value", ["abc", "", "8/", "/255", "8/255/2", "eight/255", True, False, None, [8, 255]])
def test_parse_budget_rejects_garbage_and_names_the_argument(value):
    with pytest.raises(ValueError, match="alpha"):
        parse_budget(value, "alpha")


def test_parse_budget_rejects_division_by_zero():
    with pytest.raises(ValueError, match="eps.*zero"):
        parse_budget("1/0", "eps")


@pytest.mark.parametrize("value", ["nan", "inf", float("nan"), float("inf")])
def test_parse_budget_rejects_non_finite_values(value):
    with pytest.raises(ValueError, match="eps"):
        parse_budget(value, "eps")


def test_parse_budget_never_evaluates_code():
    with pytest.raises(ValueError):
        parse_budget("__import__('os').getcwd()", "eps")
    with pytest.raises(ValueError):
        parse_budget("8*2/255", "eps")


@pytest.mark.parametrize(
    "eps,tag",
    [(8 / 255, "eps8"), (parse_budget("8/255", "eps"), "eps8"), (2 / 255, "eps2"), (16 / 255, "eps16"),
     (128 / 255, "eps128"), (4 / 255, "eps4"), (0.1, "eps0.1"), (0.5, "eps0.5"), (0.25, "eps0.25"),
     (0.0, "eps0"), (1e-3, "eps0.001"), (0.3, "eps0.3"),
     # short decimals that happen to be whole multiples of 1/255 keep their decimal name
     (0.2, "eps0.2"), (0.6, "eps0.6"), (1.0, "eps1"), (2.0, "eps2"), (1, "eps1"),
     (0.0123456, "eps0.0123456")],
)
def test_eps_tag(eps, tag):
    assert eps_tag(eps) == tag
