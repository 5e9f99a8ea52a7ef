"""Tests of the config-friendly attack classes Attack, PGD and FGSM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_lightning.attacks import FGSM, PGD, Attack, fgsm, pgd


def make_problem(batch: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = 0.1 + 0.8 * torch.rand(batch, 3, 2, 2, generator=g)
    y = torch.randint(0, 4, (batch,), generator=g)
    return model, x, y, (lambda z: F.cross_entropy(model(z), y, reduction="none"))


# -- names --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "attack,name",
    [
        (PGD(), "pgd10_linf_eps8"),
        (PGD(eps="8/255", alpha="2/255", steps=10), "pgd10_linf_eps8"),
        (PGD(eps=8 / 255, steps=20), "pgd20_linf_eps8"),
        (PGD(eps=0.1, steps=10), "pgd10_linf_eps0.1"),
        (PGD(eps=0.5, alpha=0.1, steps=5, norm="l2"), "pgd5_l2_eps0.5"),
        (PGD(eps="4/255", steps=0), "pgd0_linf_eps4"),
        (PGD(eps=0.0, steps=3), "pgd3_linf_eps0"),
        (FGSM(), "fgsm_linf_eps8"),
        (FGSM(eps="8/255", random_start=True), "fgsm_rs_linf_eps8"),
        (FGSM(eps=0.25, norm="l2"), "fgsm_l2_eps0.25"),
        (PGD(name="my_attack"), "my_attack"),
        (FGSM(eps=0.1, name="fast"), "fast"),
    ],
)
def test_names(attack, name):
    assert attack.name == name


def test_name_follows_changed_steps():
    attack = PGD(steps=10)
    attack.steps = 50
    assert attack.name == "pgd50_linf_eps8"


def test_budget_strings_are_parsed():
    attack = PGD(eps="8/255", alpha="2/255")
    assert attack.eps == pytest.approx(8 / 255)
    assert attack.alpha == pytest.approx(2 / 255)
    assert isinstance(attack.eps, float) and isinstance(attack.alpha, float)
    assert FGSM(eps="16/255", alpha="0.1").alpha == pytest.approx(0.1)
    assert FGSM(eps="16/255").alpha is None


def test_defaults_are_the_cifar_recipe():
    attack = PGD()
    assert (attack.eps, attack.alpha, attack.steps) == (pytest.approx(8 / 255), pytest.approx(2 / 255), 10)
    assert attack.norm == "linf" and attack.random_start is True and attack.bounds == (0.0, 1.0)


# -- with_eps ------------------------------------------------------------------------------------
def test_with_eps_returns_a_renamed_copy_and_leaves_the_original():
    attack = PGD(eps="8/255", alpha="2/255", steps=7, norm="linf")
    other = attack.with_eps("4/255")
    assert type(other) is PGD and other is not attack
    assert other.eps == pytest.approx(4 / 255)
    assert (other.alpha, other.steps, other.norm) == (attack.alpha, 7, "linf")
    assert other.name == "pgd7_linf_eps4"
    assert attack.eps == pytest.approx(8 / 255) and attack.name == "pgd7_linf_eps8"


def test_with_eps_drops_a_name_override():
    attack = FGSM(eps=0.1, name="custom")
    other = attack.with_eps(0.2)
    assert attack.name == "custom"
    assert other.name == "fgsm_linf_eps0.2"


@pytest.mark.parametrize("eps", [-0.1, "-1/255", "abc", True, float("nan")])
def test_with_eps_validates(eps):
    with pytest.raises(ValueError, match="eps"):
        PGD().with_eps(eps)


def test_with_eps_copy_attacks_with_the_new_radius():
    _, x, _, loss_fn = make_problem()
    small = PGD(eps=0.3, alpha=0.1, steps=3).with_eps(0.05)
    out = small(loss_fn, x, generator=torch.Generator().manual_seed(0))
    assert float((out - x).abs().max()) <= 0.05 + 1e-6


# -- invalid arguments -----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [PGD, FGSM])
@pytest.mark.parametrize("eps", [-0.1, "-8/255", "abc", "1/0", True, None, float("inf")])
def test_invalid_eps(cls, eps):
    with pytest.raises(ValueError, match="eps"):
        cls(eps=eps)


@pytest.mark.parametrize("cls", [PGD, FGSM])
def test_invalid_norm(cls):
    with pytest.raises(ValueError, match="norm"):
        cls(norm="l1")


@pytest.mark.parametrize("alpha", [0, -0.1, "0/255", "abc"])
def test_invalid_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        PGD(alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        FGSM(alpha=alpha)


@pytest.mark.parametrize("steps", [-1, 2.0, True, "10"])
def test_invalid_steps(steps):
    with pytest.raises(ValueError, match="steps"):
        PGD(steps=steps)


def test_attack_is_abstract():
    with pytest.raises(TypeError):
        Attack()  # type: ignore[abstract]


@pytest.mark.parametrize("cls", [PGD, FGSM])
@pytest.mark.parametrize("bounds", [(1.0, 0.0), (0.5, 0.5), ("a", "b"), (0.0,)])
def test_invalid_bounds_are_reported_at_construction(cls, bounds):
    with pytest.raises(ValueError, match="bounds"):
        cls(bounds=bounds)


def test_bounds_are_stored_as_floats():
    assert PGD(bounds=(-1, 1)).bounds == (-1.0, 1.0)
    assert all(isinstance(b, float) for b in FGSM(bounds=[0, 255]).bounds)


@pytest.mark.parametrize("random_start", [-0.1, float("nan"), "yes", None])
def test_invalid_random_start_is_reported_at_construction(random_start):
    with pytest.raises(ValueError, match="random_start"):
        PGD(random_start=random_start)


# -- calling -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_start", [True, False, 0.01])
def test_pgd_class_equals_functional_pgd(norm, random_start):
    _, x, _, loss_fn = make_problem()
    attack = PGD(eps=0.1, alpha=0.03, steps=4, norm=norm, random_start=random_start)
    out = attack(loss_fn, x, generator=torch.Generator().manual_seed(3))
    expected = pgd(loss_fn, x, eps=0.1, alpha=0.03, steps=4, norm=norm, random_start=random_start,
                   generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, expected)


@pytest.mark.parametrize("random_start", [True, False])
@pytest.mark.parametrize("alpha", [None, 0.05])
def test_fgsm_class_equals_functional_fgsm(random_start, alpha):
    _, x, _, loss_fn = make_problem()
    attack = FGSM(eps=0.1, random_start=random_start, alpha=alpha)
    out = attack(loss_fn, x, generator=torch.Generator().manual_seed(3))
    expected = fgsm(loss_fn, x, eps=0.1, random_start=random_start, alpha=alpha,
                    generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, expected)


def test_fgsm_rs_default_step_is_one_and_a_quarter_eps():
    # With a zero-gradient loss nothing moves, so compare against the explicit-alpha version
    # on a real loss: alpha=None with random start must equal alpha=1.25*eps.
    _, x, _, loss_fn = make_problem()
    default = FGSM(eps=0.1, random_start=True)(loss_fn, x, generator=torch.Generator().manual_seed(0))
    explicit = FGSM(eps=0.1, random_start=True, alpha=0.125)(loss_fn, x, generator=torch.Generator().manual_seed(0))
    smaller = FGSM(eps=0.1, random_start=True, alpha=0.1)(loss_fn, x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(default, explicit)
    assert not torch.equal(default, smaller)


def test_attack_respects_custom_bounds():
    _, x, _, loss_fn = make_problem()
    x_norm = x * 2 - 1  # inputs in [-1, 1]
    with pytest.raises(ValueError, match="unnormalised"):
        PGD(eps=0.1)(loss_fn, x_norm)
    out = PGD(eps=0.5, alpha=0.2, steps=3, bounds=(-1, 1))(loss_fn, x_norm)
    assert float(out.min()) >= -1 and float(out.max()) <= 1
    assert float((out - x_norm).abs().max()) <= 0.5 + 1e-6


def test_classes_increase_the_loss():
    _, x, _, loss_fn = make_problem(batch=16)
    clean = loss_fn(x).detach().mean()
    for attack in (PGD(eps=0.1, alpha=0.03, steps=5), FGSM(eps=0.1), FGSM(eps=0.1, random_start=True),
                   PGD(eps=0.5, alpha=0.2, steps=5, norm="l2")):
        adv = loss_fn(attack(loss_fn, x, generator=torch.Generator().manual_seed(0))).detach().mean()
        assert float(adv) > float(clean), attack.name


def test_custom_attack_subclass_gets_a_name_from_its_kind():
    class Noise(Attack):
        kind = "noise"

        def __call__(self, loss_fn, x, generator=None):
            return (x + self.eps * torch.rand(x.shape, generator=generator)).clamp(*self.bounds)

    attack = Noise(eps="4/255")
    assert attack.name == "noise_linf_eps4"
    assert attack.with_eps(0.1).name == "noise_linf_eps0.1"


def test_repr_shows_the_configuration():
    text = repr(PGD(eps=0.1, steps=3, name="x"))
    assert text.startswith("PGD(") and "eps=0.1" in text and "steps=3" in text
