"""AutoAttack: the reference's lists and order, still-robust-only members, EOT, APGD early stop,
and the cross-checks against our APGD-CE and torchattacks' AutoAttack."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from robust_lightning.attacks import APGD, AutoAttack, Square
from robust_lightning.attacks.autoattack import perturbation_within_budget
from robust_lightning.errors import InvalidArgumentError, InvalidArgumentTypeError
from tests.data.trained import digits_tensors, trained_digits_model

HAS_FAB = importlib.util.find_spec("robust_lightning.attacks.fab") is not None


@pytest.fixture(scope="module")
def model_and_batch():
    model = trained_digits_model()
    x, y = digits_tensors("test")
    return model, x[:128], y[:128]


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


class SpyAttack(APGD):
    """APGD-DLR that records which labels (hence samples) it was given; a FAB stand-in."""

    def __init__(self, **kwargs):
        super().__init__(eps=kwargs["eps"], norm=kwargs["norm"], steps=kwargs["steps"], loss="dlr",
                         bounds=kwargs["bounds"])
        self.options = kwargs
        self.seen: list[int] = []

    def perturb_logits(self, logits_fn, x, target, generator=None):
        self.seen.append(x.shape[0])
        return super().perturb_logits(logits_fn, x, target, generator=generator)


# -- the versions ---------------------------------------------------------------------------------
def test_standard_version_has_the_reference_members_and_settings():
    attack = AutoAttack(eps="8/255", fab_factory=SpyAttack)
    members = attack.members()
    assert [n for n, _ in members] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    apgd_ce, apgd_t, fab_t, square = (a for _, a in members)
    assert (apgd_ce.loss, apgd_ce.steps, apgd_ce.n_restarts) == ("ce", 100, 1)
    assert (apgd_t.loss, apgd_t.steps, apgd_t.n_restarts, apgd_t.n_target_classes) == ("dlr_targeted", 100, 1, 9)
    assert fab_t.options == {"targeted": True, "n_restarts": 1, "n_target_classes": 9, "eps": 8 / 255,
                             "norm": "linf", "bounds": (0.0, 1.0), "steps": 100}
    assert isinstance(square, Square) and (square.n_queries, square.p_init, square.n_restarts) == (5000, 0.8, 1)
    assert attack.name == "autoattack_linf_eps8"


def test_plus_and_rand_versions():
    plus = AutoAttack(version="plus", norm="l2", eps=0.5, fab_factory=SpyAttack).members()
    assert [n for n, _ in plus] == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    assert [a.n_restarts for n, a in plus if n.startswith("apgd")] == [5, 5, 1]
    assert plus[2][1].options["n_restarts"] == 5 and plus[2][1].options["targeted"] is False
    rand = AutoAttack(version="rand", eps=0.1)
    assert [(n, a.loss, a.eot_samples, a.n_restarts) for n, a in rand.members()] == [
        ("apgd-ce", "ce", 20, 1), ("apgd-dlr", "dlr", 20, 1)]
    assert rand.name == "autoattack-rand_linf_eps0.1"


def test_with_eps_rebuilds_the_members_at_the_new_radius():
    attack = AutoAttack(eps=0.1, fab_factory=SpyAttack).with_eps(0.2)
    assert {a.eps for _, a in attack.members()} == {0.2}


# -- running ------------------------------------------------------------------------------------------
def test_each_member_attacks_only_the_points_still_robust(model_and_batch):
    model, x, y = model_and_batch
    attack = AutoAttack(eps=0.05, steps=10, n_queries=100, fab_factory=SpyAttack)
    fab_instances: list[SpyAttack] = []

    def factory(**options):
        fab_instances.append(SpyAttack(**options))
        return fab_instances[-1]

    attack.fab_factory = factory
    x_adv, robust = attack(model, x, y)
    counts = attack.last_result.robust_after
    assert list(counts) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert counts["clean"] == round(_accuracy(model, x, y) * len(y))
    assert all(a >= b for a, b in zip(list(counts.values()), list(counts.values())[1:], strict=False))
    # FAB-T ran on exactly the points APGD-CE and APGD-T left robust.
    assert fab_instances[-1].seen == [counts["apgd-t"]]
    assert int(robust.sum()) == counts["square"]
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1) == y, robust)
    assert bool(perturbation_within_budget(x_adv, x, 0.05, "linf").all())
    untouched = robust | ~attack.last_result.clean_correct
    assert torch.equal(x_adv[untouched], x[untouched])


def test_runs_are_reproducible_from_the_seed(model_and_batch):
    model, x, y = model_and_batch
    runs = [AutoAttack(eps=0.05, steps=5, n_queries=50, fab_factory=SpyAttack, seed=3)(model, x[:32], y[:32])
            for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0])


def test_evaluate_batches_and_sums_counts(model_and_batch):
    model, x, y = model_and_batch
    attack = AutoAttack(eps=0.05, steps=5, n_queries=50, fab_factory=SpyAttack)
    result = attack.evaluate(model, x, y, batch_size=50)
    assert result["clean"] == pytest.approx(_accuracy(model, x, y))
    assert 0.0 <= result["robust_accuracy"] == result["square"] <= result["apgd-ce"] <= result["clean"]


def test_an_out_of_budget_member_point_does_not_count(model_and_batch):
    model, x, y = model_and_batch

    class Overshoot(APGD):
        def perturb_logits(self, logits_fn, x, target, generator=None):
            return torch.zeros_like(x)  # misclassified, but far outside the ball

    attack = AutoAttack(eps=0.01, members=[("overshoot", Overshoot(eps=0.01))])
    _, robust = attack(model, x, y)
    assert torch.equal(robust, attack.last_result.clean_correct)


def test_standalone_call_needs_labels_and_arguments_are_checked(model_and_batch):
    model, x, _ = model_and_batch
    with pytest.raises(InvalidArgumentTypeError, match="labels"):
        AutoAttack(eps=0.1)(model, x)
    with pytest.raises(InvalidArgumentError, match="version"):
        AutoAttack(version="fast")
    with pytest.raises(InvalidArgumentError, match="steps"):
        AutoAttack(steps=0)
    with pytest.raises(InvalidArgumentTypeError, match="members"):
        AutoAttack(members=[("pgd", object())])


# -- APGD pieces AutoAttack relies on -------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["ce", "dlr", "dlr_targeted"])
def test_apgd_early_stop_returns_the_same_points_with_fewer_passes(model_and_batch, loss):
    model, x, y = model_and_batch
    outputs, passes = [], []
    for early_stop in (True, False):
        seen = []

        def logits(points, seen=seen):
            seen.append(points.shape[0])
            return model(points)

        attack = APGD(eps=0.05, steps=20, loss=loss, n_target_classes=3, early_stop=early_stop)
        outputs.append(attack.perturb_logits(logits, x, y, generator=torch.Generator().manual_seed(0)))
        passes.append(sum(seen))
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-6, rtol=0)
    assert passes[0] < 0.9 * passes[1]


def test_apgd_eot_averages_several_gradient_passes(model_and_batch):
    model, x, y = model_and_batch
    calls = []

    def logits(points):
        calls.append(torch.is_grad_enabled())
        return model(points)

    APGD(eps=0.05, steps=3, loss="dlr", eot_samples=4, early_stop=False).perturb_logits(
        logits, x[:8], y[:8], generator=torch.Generator().manual_seed(0))
    # (1 start + 3 steps) x 4 EOT samples with gradients
    assert sum(calls) == 16
    with pytest.raises(ValueError, match="eot_samples"):
        APGD(eot_samples=0)


# -- cross-checks: ours vs our APGD-CE and vs torchattacks ---------------------------------------------------
_OURS: dict[tuple[str, float], float] = {}


def _our_autoattack_accuracy(model, x, y, norm: str, eps: float) -> float:
    """Our AutoAttack-standard with reduced settings (20 steps, 300 queries), run once per budget."""
    if (norm, eps) not in _OURS:
        _, robust = AutoAttack(eps=eps, norm=norm, steps=20, n_queries=300)(model, x, y)
        _OURS[(norm, eps)] = robust.float().mean().item()
    return _OURS[(norm, eps)]


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.06), ("l2", 0.8)])
def test_autoattack_is_at_most_our_apgd_ce(model_and_batch, norm, eps):
    if not HAS_FAB:
        pytest.skip("robust_lightning.attacks.fab is not in this tree yet")
    model, x, y = model_and_batch
    ours = _our_autoattack_accuracy(model, x, y, norm, eps)
    apgd_adv = APGD(eps=eps, norm=norm, steps=20).perturb_logits(model, x, y, generator=torch.Generator().manual_seed(0))
    assert ours <= _accuracy(model, apgd_adv, y) + 1e-9


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.06), ("l2", 0.8)])
def test_autoattack_is_at_most_torchattacks_autoattack_plus_0_02(model_and_batch, norm, eps):
    torchattacks = pytest.importorskip("torchattacks")
    if not HAS_FAB:
        pytest.skip("robust_lightning.attacks.fab is not in this tree yet")
    model, x, y = model_and_batch
    ours = _our_autoattack_accuracy(model, x, y, norm, eps)
    reference = torchattacks.AutoAttack(model, norm="Linf" if norm == "linf" else "L2", eps=eps,
                                        version="standard", n_classes=10, seed=0)
    # The same reduced settings on both sides (torchattacks' own default is 10 steps).
    for member in reference._autoattack.attacks:
        if hasattr(member, "steps"):
            member.steps = 20
        if hasattr(member, "n_queries"):
            member.n_queries = 300
    reference_acc = _accuracy(model, reference(x, y), y)
    assert ours <= reference_acc + 0.02


def test_evaluate_reduces_counts_over_a_process_group(model_and_batch, tmp_path):
    """One-rank gloo group: the sharding and all_reduce path gives the undistributed numbers."""
    model, x, y = model_and_batch
    attack = AutoAttack(eps=0.05, members=[("apgd-ce", APGD(eps=0.05, steps=3, random_start=False))])
    alone = attack.evaluate(model, x[:40], y[:40], batch_size=16)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        grouped = attack.evaluate(model, x[:40], y[:40], batch_size=16)
    finally:
        torch.distributed.destroy_process_group()
    assert grouped == alone
