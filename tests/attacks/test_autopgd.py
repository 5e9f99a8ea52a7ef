"""APGD against PGD and against independent, straightforward re-implementations.

The cross-checks (issue 5, deliverable 1): on a small trained digits model our APGD-CE is at
least as strong as our PGD-10, and each of our attacks agrees within sampling noise with a
plain implementation written here from the papers, with no code shared with the package.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from robust_lightning import APGD, PGD, apgd
from robust_lightning.attacks.autopgd import dlr_loss, targeted_dlr_loss
from tests.data.trained import digits_tensors, trained_digits_model

EPS = 0.05
N_SAMPLES = 200
# Two attacks of equal strength on 200 samples differ by a few samples; 4 points is ~2 SE.
NOISE = 0.04


@pytest.fixture(scope="module")
def model_and_data():
    model = trained_digits_model()
    x, y = digits_tensors("test")
    return model, x[:N_SAMPLES], y[:N_SAMPLES]


def _accuracy(model, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _plain_pgd(model, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int) -> Tensor:
    """Madry et al. 2018, Eq. (2.1), without random start: sign steps, project, clip."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv


def _plain_apgd_ce(model, x: Tensor, y: Tensor, eps: float, n_iter: int) -> Tensor:
    """Croce & Hein 2020, Algorithm 1 (L-inf, CE), written directly from the paper.

    No random start (the paper allows starting at x), checkpoints from Sec. 3.2, eta = 2 eps,
    momentum 0.75, the two halving conditions with rho = 0.75; returns the best-loss iterate.
    """
    def loss_grad(point: Tensor) -> tuple[Tensor, Tensor]:
        point = point.clone().requires_grad_(True)
        loss = F.cross_entropy(model(point), y, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), point)
        return loss.detach(), grad

    def project(point: Tensor) -> Tensor:
        return torch.min(torch.max(point, x - eps), x + eps).clamp(0, 1)

    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    checkpoints = sorted({math.ceil(q * n_iter) for q in p[1:] if q <= 1})
    view = (-1, 1, 1, 1)
    eta = torch.full((x.shape[0],), 2 * eps)
    x_prev = x.clone()
    loss_prev, grad = loss_grad(x)
    x_best, loss_best = x.clone(), loss_prev.clone()
    x_cur = project(x + eta.view(view) * grad.sign())
    loss_cur, grad = loss_grad(x_cur)
    improved = (loss_cur > loss_prev).float()
    better = loss_cur > loss_best
    x_best[better], loss_best[better] = x_cur[better], loss_cur[better]
    loss_best_at_checkpoint, eta_reduced_at_checkpoint = loss_best.clone(), torch.zeros_like(better)
    last_checkpoint = 0
    for k in range(1, n_iter):
        z = project(x_cur + eta.view(view) * grad.sign())
        x_next = project(x_cur + 0.75 * (z - x_cur) + 0.25 * (x_cur - x_prev))
        x_prev, x_cur = x_cur, x_next
        loss_new, grad = loss_grad(x_cur)
        improved += (loss_new > loss_cur).float()
        loss_cur = loss_new
        better = loss_cur > loss_best
        x_best[better], loss_best[better] = x_cur[better], loss_cur[better]
        if k + 1 in checkpoints:
            period = k + 1 - last_checkpoint
            condition1 = improved < 0.75 * period
            condition2 = ~eta_reduced_at_checkpoint & (loss_best_at_checkpoint >= loss_best)
            halve = condition1 | condition2
            eta[halve] /= 2
            x_cur[halve] = x_best[halve]
            if halve.any():
                _, grad_best = loss_grad(x_cur)
                grad[halve] = grad_best[halve]
            eta_reduced_at_checkpoint = halve
            loss_best_at_checkpoint = loss_best.clone()
            improved.zero_()
            last_checkpoint = k + 1
    return x_best


def test_pgd10_agrees_with_a_plain_pgd(model_and_data):
    model, x, y = model_and_data
    ours = PGD(eps=EPS, alpha=EPS / 4, steps=10, random_start=False)
    x_ours = ours(lambda z: F.cross_entropy(model(z), y, reduction="none"), x)
    x_plain = _plain_pgd(model, x, y, EPS, EPS / 4, 10)
    assert abs(_accuracy(model, x_ours, y) - _accuracy(model, x_plain, y)) <= 0.01


def test_apgd_ce_is_at_least_as_strong_as_pgd10_and_agrees_with_a_plain_apgd(model_and_data):
    model, x, y = model_and_data
    pgd10 = PGD(eps=EPS, alpha=EPS / 4, steps=10)
    generator = torch.Generator().manual_seed(0)
    pgd_acc = _accuracy(model, pgd10(lambda z: F.cross_entropy(model(z), y, reduction="none"), x,
                                     generator=generator), y)
    apgd_acc = _accuracy(model, APGD(eps=EPS, steps=50).perturb_logits(model, x, y, generator=generator), y)
    plain_acc = _accuracy(model, _plain_apgd_ce(model, x, y, EPS, 50), y)
    clean_acc = _accuracy(model, x, y)
    assert apgd_acc <= pgd_acc + 1e-9, (apgd_acc, pgd_acc)
    assert abs(apgd_acc - plain_acc) <= NOISE, (apgd_acc, plain_acc)
    # The budget is one where the attack matters: far from 0 and from the clean accuracy.
    assert 0.2 < apgd_acc < clean_acc - 0.2


def test_apgd_dlr_and_targeted_are_effective(model_and_data):
    model, x, y = model_and_data
    clean_acc = _accuracy(model, x, y)
    for loss in ("dlr", "dlr_targeted"):
        attack = APGD(eps=EPS, steps=30, loss=loss, n_target_classes=3)
        x_adv = attack.perturb_logits(model, x, y, generator=torch.Generator().manual_seed(0))
        assert (x_adv - x).abs().max() <= EPS + 1e-6
        assert _accuracy(model, x_adv, y) < clean_acc - 0.2, loss


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_stays_in_the_ball_and_bounds_and_increases_the_loss(model_and_data, norm):
    model, x, y = model_and_data
    eps = EPS if norm == "linf" else 0.5
    loss_fn = lambda z: F.cross_entropy(model(z), y, reduction="none")  # noqa: E731
    x_adv = apgd(loss_fn, x, eps=eps, steps=20, norm=norm, n_restarts=2,
                 generator=torch.Generator().manual_seed(0))
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps + 1e-5).all())
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert bool((loss_fn(x_adv) >= loss_fn(x) - 1e-6).all()), "APGD returns its best-loss iterate"


def test_restarts_never_weaken_the_attack(model_and_data):
    model, x, y = model_and_data
    accuracies = [
        _accuracy(model, APGD(eps=EPS, steps=10, n_restarts=r).perturb_logits(
            model, x, y, generator=torch.Generator().manual_seed(0)), y)
        for r in (1, 3)
    ]
    assert accuracies[1] <= accuracies[0]


def test_dlr_losses_match_their_formulas():
    logits = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.0, 2.0, 1.0, 0.5]])
    target = torch.tensor([0, 0])
    # Eq. (6): -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)
    expected = torch.tensor([-(3.0 - 1.0) / (3.0 - 0.5), -(0.0 - 2.0) / (2.0 - 0.5)])
    torch.testing.assert_close(dlr_loss(logits, target), expected)
    target_class = torch.tensor([2, 1])
    expected_t = torch.tensor([-(3.0 - 0.5) / (3.0 - 0.5 * (0.5 - 1.0)),
                               -(0.0 - 2.0) / (2.0 - 0.5 * (0.5 + 0.0))])
    torch.testing.assert_close(targeted_dlr_loss(logits, target, target_class), expected_t)


def test_dlr_needs_three_classes():
    with pytest.raises(ValueError, match="at least 3 classes"):
        dlr_loss(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize(("kwargs", "name"), [({"loss": "cw"}, "loss"), ({"steps": -1}, "steps"),
                                              ({"n_restarts": 0}, "n_restarts"), ({"norm": "l1"}, "norm"),
                                              ({"n_target_classes": 0}, "n_target_classes")])
def test_invalid_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        APGD(**kwargs)


def test_dlr_attack_called_without_logits_explains_itself():
    with pytest.raises(TypeError, match="perturb_logits"):
        APGD(loss="dlr")(lambda z: z.flatten(1).sum(1), torch.rand(2, 1, 4, 4))


def test_zero_eps_or_steps_returns_the_input(model_and_data):
    model, x, y = model_and_data
    for attack in (APGD(eps=0.0, steps=5), APGD(eps=EPS, steps=0)):
        torch.testing.assert_close(attack.perturb_logits(model, x[:4], y[:4]), x[:4])


def test_without_random_start_apgd_is_deterministic(model_and_data):
    model, x, y = model_and_data
    attack = APGD(eps=EPS, steps=10, random_start=False)
    first = attack.perturb_logits(model, x[:32], y[:32], generator=torch.Generator().manual_seed(0))
    second = attack.perturb_logits(model, x[:32], y[:32], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, second)
