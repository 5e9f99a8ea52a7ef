"""FAB: the projection, minimal norms that really flip predictions, the eps budget,
reproducibility, no weight gradients, argument errors, and agreement with torchattacks.FAB."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robust_lightning.attacks.core import pgd
from robust_lightning.attacks.fab import (
    FAB,
    fab_attack,
    project_onto_hyperplane_box,
    robust_accuracy_at_radii,
)
from robust_lightning.errors import InvalidArgumentError, InvalidArgumentTypeError
from tests.data.trained import digits_tensors, trained_digits_model

# Radii where the trained digits model's robust accuracy is mid-range (about 0.5), so the
# cross-check can tell attacks apart; at L-inf 0.1 / L2 1.0 almost every sample breaks.
RADII = {"linf": 0.05, "l2": 0.5}


@pytest.fixture(scope="module")
def model_and_batch():
    model = trained_digits_model()
    x, y = digits_tensors("test")
    return model, x[:96], y[:96]


def _size(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def _predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


# -- projection onto hyperplane ∩ box -------------------------------------------------------

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_without_an_active_box_is_the_closed_form(norm):
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(32, 20, generator=generator)
    w = torch.randn(32, 20, generator=generator)
    b = (w * points).sum(1) + 0.01 * torch.randn(32, generator=generator)
    residual = (b - (w * points).sum(1))[:, None]
    expected = (w.sign() * residual.abs() * residual.sign() / w.abs().sum(1, keepdim=True) if norm == "linf"
                else residual * w / w.pow(2).sum(1, keepdim=True))
    # A box far away from the points never binds.
    move = project_onto_hyperplane_box(points, w, b, norm, lo=-100.0, hi=100.0)
    torch.testing.assert_close(move, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_lands_on_the_hyperplane_inside_the_box(norm):
    generator = torch.Generator().manual_seed(1)
    points = torch.rand(64, 50, generator=generator)
    w = torch.randn(64, 50, generator=generator)
    b = (w * torch.rand(64, 50, generator=generator)).sum(1)   # some box point lies on it
    z = points + project_onto_hyperplane_box(points, w, b, norm)
    assert z.min() >= 0 and z.max() <= 1
    torch.testing.assert_close((w * z).sum(1), b, rtol=0, atol=1e-4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_matches_the_reference_projection(norm):
    reference = pytest.importorskip("torchattacks.attacks.fab_attack")
    project = reference.projection_linf if norm == "linf" else reference.projection_l2
    generator = torch.Generator().manual_seed(2)
    points = torch.rand(128, 64, generator=generator)
    w = torch.randn(128, 64, generator=generator)
    w[:8, :10] = 0.0                                              # coordinates that do not move
    b = (w * torch.rand(128, 64, generator=generator)).sum(1)
    b[-16:] = 5 * w[-16:].abs().sum(1)                            # hyperplanes outside the box
    ours = project_onto_hyperplane_box(points, w, b, norm)
    theirs = project(points.clone(), w.clone(), b.clone())
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


# -- the attack ------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_minimal_adversarials_flip_the_prediction_and_report_their_norm(model_and_batch, norm, targeted):
    model, x, y = model_and_batch
    result = fab_attack(model, x, y, eps=RADII[norm], norm=norm, n_iter=10, targeted=targeted, n_target_classes=2)
    clean_wrong = _predict(model, x) != y
    found = torch.isfinite(result.norms) & ~clean_wrong
    assert bool((result.norms[clean_wrong] == 0).all())
    assert found.float().mean() > 0.9
    assert bool((_predict(model, result.x_adv[found]) != y[found]).all())
    torch.testing.assert_close(result.norms[found], _size(result.x_adv - x, norm)[found], rtol=1e-5, atol=1e-6)
    assert bool((result.x_adv[~found] == x[~found]).all())
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_perturb_logits_stays_within_eps_and_matches_the_minimal_norms(model_and_batch, norm):
    model, x, y = model_and_batch
    eps = RADII[norm]
    attack = FAB(eps=eps, norm=norm, n_iter=10, targeted=True, n_target_classes=3)
    x_adv = attack.perturb_logits(model, x, y)
    assert _size(x_adv - x, norm).max() <= eps * (1 + 1e-5)
    robust = _predict(model, x_adv) == y
    clean = _predict(model, x) == y
    assert robust.float().mean() < clean.float().mean() - 0.2
    # Without random restarts each sample's run is the same whether or not it stops at eps, so
    # the fixed-eps result is the point at eps of the accuracy-vs-radius curve.
    result = attack.minimize(model, x, y)
    assert torch.equal(result.robust(eps), robust)
    curve = robust_accuracy_at_radii(result.norms, [0.0, eps / 2, eps, 2 * eps])
    assert curve[0].item() == pytest.approx(clean.float().mean().item())
    assert curve[2].item() == pytest.approx(robust.float().mean().item())
    assert bool((curve[1:] <= curve[:-1]).all())
    torch.testing.assert_close(attack.minimal_norms(model, x, y), result.norms)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_minimal_norm_is_at_most_the_pgd_perturbation(model_and_batch, norm):
    model, x, y = model_and_batch
    eps = RADII[norm]
    loss = lambda z: nn.functional.cross_entropy(model(z), y, reduction="none")
    x_pgd = pgd(loss, x, eps=eps, alpha=eps / 4, steps=20, norm=norm, generator=torch.Generator().manual_seed(0))
    pgd_broken = (_predict(model, x_pgd) != y) & (_predict(model, x) == y)
    norms = fab_attack(model, x, y, eps=eps, norm=norm, n_iter=20).norms
    pgd_size = _size(x_pgd - x, norm)
    assert pgd_broken.sum() > 20
    # FAB minimises the norm; PGD only stays within eps. "Roughly": allow a few exceptions.
    assert (norms[pgd_broken] <= pgd_size[pgd_broken] * 1.01).float().mean() >= 0.95


def test_random_restarts_are_reproducible_from_the_seed(model_and_batch):
    model, x, y = model_and_batch
    x, y = x[:32], y[:32]
    global_state = torch.random.get_rng_state()
    runs = [fab_attack(model, x, y, eps=0.05, n_iter=5, n_restarts=2, generator=torch.Generator().manual_seed(seed))
            for seed in (7, 7, 8)]
    assert torch.equal(torch.random.get_rng_state(), global_state)
    assert torch.equal(runs[0].x_adv, runs[1].x_adv) and torch.equal(runs[0].norms, runs[1].norms)
    assert not torch.equal(runs[0].x_adv, runs[2].x_adv)
    # A restart only ever lowers a sample's norm.
    first_run = fab_attack(model, x, y, eps=0.05, n_iter=5).norms
    assert bool((runs[0].norms <= first_run).all())


def test_no_parameter_gradients_and_the_model_mode_is_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 4))
    x = torch.rand(16, 1, 4, 4)
    y = torch.randint(0, 4, (16,))
    model.train()
    eval_logits = model.eval()(x).argmax(1)
    model.train()
    # A plain closure: the attack differentiates w.r.t. the input only.
    fab_attack(lambda z: model.eval()(z), x, eval_logits, eps=0.1, n_iter=5, targeted=True, n_target_classes=2)
    model.train()
    assert all(p.grad is None for p in model.parameters())
    # An nn.Module runs in eval mode (dropout off) and comes back as it was.
    result = fab_attack(model, x, y, eps=0.1, n_iter=5)
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    assert bool((result.norms[eval_logits != y] == 0).all()) and bool((result.norms[eval_logits == y] > 0).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_robust_accuracy_matches_torchattacks(model_and_batch, norm, targeted):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = model_and_batch
    eps = RADII[norm]
    # AutoAttack's 9 target classes; fewer iterations than its 100 keep the test short.
    ours = FAB(eps=eps, norm=norm, n_iter=10, targeted=targeted, n_target_classes=9).perturb_logits(model, x, y)
    reference = torchattacks.FAB(model, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=10, n_restarts=1,
                                 multi_targeted=targeted, n_classes=10, seed=0)(x, y)
    ours_acc = (_predict(model, ours) == y).float().mean().item()
    reference_acc = (_predict(model, reference) == y).float().mean().item()
    assert 0.2 < reference_acc < 0.8
    assert abs(ours_acc - reference_acc) <= 0.03


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_untargeted_minimal_norms_match_torchattacks_per_sample(model_and_batch, norm):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = model_and_batch
    x, y = x[:48], y[:48]
    ours = fab_attack(model, x, y, eps=1.0, norm=norm, n_iter=10).norms
    # A radius no perturbation reaches, so the reference returns every point it found.
    reference = torchattacks.FAB(model, norm="Linf" if norm == "linf" else "L2", eps=1e3, steps=10, n_restarts=1,
                                 seed=0)(x, y)
    fooled = _predict(model, reference) != y
    reference_norms = torch.where(fooled, _size(reference - x, norm), torch.tensor(float("inf")))
    reference_norms[_predict(model, x) != y] = 0.0
    # Both runs start at x without randomness: the same trajectory up to float rounding.
    torch.testing.assert_close(ours, reference_norms, rtol=1e-3, atol=1e-4)


# -- arguments --------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_iter": -1}, "n_iter must be an int >= 0, got -1"),
    ({"n_restarts": 0}, "n_restarts must be an int >= 1, got 0"),
    ({"n_target_classes": 0}, "n_target_classes must be an int >= 1, got 0"),
    ({"alpha_max": 1.5}, "alpha_max must be a finite number >= 0 and <= 1, got 1.5"),
    ({"beta": 0.0}, "beta must be a finite number > 0 and <= 1, got 0.0"),
    ({"eta": 0}, "eta must be a finite number > 0, got 0"),
    ({"norm": "l1"}, "norm must be 'linf' or 'l2'"),
])
def test_fab_rejects_bad_arguments(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        FAB(**kwargs) if "norm" not in kwargs else fab_attack(nn.Identity(), torch.rand(2, 3), torch.zeros(2).long(),
                                                     eps=0.1, **kwargs)


def test_fab_rejects_bad_inputs_naming_them():
    x, y = torch.rand(4, 3), torch.zeros(4, dtype=torch.long)
    with pytest.raises(InvalidArgumentTypeError, match="targeted"):
        FAB(targeted="yes")
    with pytest.raises(InvalidArgumentError, match="eps"):
        fab_attack(nn.Identity(), x, y, eps=-1.0)
    with pytest.raises(InvalidArgumentError, match="target"):
        fab_attack(nn.Identity(), x, y[:3], eps=0.1)
    with pytest.raises(InvalidArgumentError, match="target"):
        fab_attack(nn.Identity(), x, y + 5, eps=0.1)
    with pytest.raises(InvalidArgumentError, match="logits_fn"):
        fab_attack(lambda z: z[:, 0], x, y, eps=0.1)
    with pytest.raises(InvalidArgumentTypeError, match="perturb_logits"):
        FAB()(lambda z: z.sum(1), x)


def test_names_follow_the_attack_convention():
    assert FAB(eps="8/255").name == "fab_linf_eps8"
    assert FAB(eps=0.5, norm="l2", targeted=True).name == "fab-t_l2_eps0.5"
    assert FAB(eps=0.1).with_eps(0.2).name == "fab_linf_eps0.2"


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_on_a_linear_model_fab_finds_the_exact_minimal_norm(norm):
    # For affine logits the distance to the nearest decision boundary is known in closed form:
    # min_l |f_l - f_c| / ||w_l - w_c||_q (q the dual norm), as long as the box does not bind.
    generator = torch.Generator().manual_seed(0)
    model = nn.Linear(12, 5)
    with torch.no_grad():
        model.weight.copy_(torch.randn(5, 12, generator=generator))
        model.bias.copy_(torch.randn(5, generator=generator))
    x = torch.randn(64, 12, generator=generator)
    y = _predict(model, x)
    result = fab_attack(model, x, y, eps=1.0, norm=norm, n_iter=30, bounds=(-100.0, 100.0))
    with torch.no_grad():
        gaps = model(x).gather(1, y[:, None]) - model(x)
        normals = model.weight[None, :, :] - model.weight[y][:, None, :]
    dual = normals.abs().sum(2) if norm == "linf" else normals.norm(dim=2)
    exact = (gaps / dual).scatter(1, y[:, None], float("inf")).amin(1)
    assert bool((result.norms >= exact * (1 - 1e-4)).all())
    assert bool((result.norms <= exact * 1.01).all())
