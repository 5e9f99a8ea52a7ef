"""RobustnessEvaluation with AutoAttack and external attacks (issue 21): a true worst case, early
exit, the richer report, the new sanity checks and the torchattacks/ART adapters."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from robust_lightning.attacks import APGD, PGD, AutoAttack, ExternalAttack, Square
from robust_lightning.callbacks import RobustnessEvaluation


def metrics(trainer):
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def _validate(helpers, callback, x, y, model=None, batch_size=8):
    trainer = helpers.make_trainer([callback])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(model or helpers.PlainClassifier(), helpers.make_loader(x, y, batch_size=batch_size))
    return metrics(trainer), [str(w.message) for w in caught]


class CountingPGD(PGD):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.samples: list[int] = []

    def __call__(self, loss_fn, x, generator=None):
        self.samples.append(x.shape[0])
        return super().__call__(loss_fn, x, generator=generator)


# -- worst case ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_worst_case_is_never_above_a_single_attack_on_any_eps(helpers, seed):
    # Two weak random-start attacks: their random starts make them fool different samples.
    x, y = helpers.make_data(n=48, seed=seed + 1)
    attacks = [PGD(alpha=0.05, steps=1, name=None), PGD(alpha=0.02, steps=2)]
    radii = [0.05, 0.1, 0.2, 0.3]
    callback = RobustnessEvaluation(attacks, eps=radii, worst_case=True, seed=seed)
    logged, _ = _validate(helpers, callback, x, y)
    disagree = 0
    for eps in radii:
        singles = [logged[f"val/robust_acc/{a.with_eps(eps).name}"] for a in attacks]
        worst = logged[f"val/robust_acc/worst_case_linf_eps{eps:g}"]
        assert worst <= min(singles) + 1e-9, (eps, worst, singles)
        disagree += singles[0] != singles[1]
    assert disagree >= 1  # the attacks do disagree, so the bound is not trivially met
    assert logged["val/sanity/worst_case_above_member"] == 0.0


def test_worst_case_counts_each_attacks_own_failures(helpers):
    """A sample an attack fooled in its own run is not robust in the worst case, whatever the rerun does."""

    class FoolsOnlyOnce(PGD):
        kind = "once"

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.calls = 0

        def __call__(self, loss_fn, x, generator=None):
            self.calls += 1
            return super().__call__(loss_fn, x, generator) if self.calls == 1 else x.detach().clone()

    x, y = helpers.make_data(n=32)
    attack = FoolsOnlyOnce(eps=0.1, alpha=0.04, steps=10)
    logged, _ = _validate(helpers, RobustnessEvaluation([attack], worst_case=True), x, y, batch_size=32)
    assert attack.calls == 2  # its own run, then the ensemble rerun on the survivors (which fools none)
    # Counting only the rerun would give the clean accuracy, 1.0.
    assert 0.0 < logged["val/robust_acc/worst_case_linf_eps0.1"] == logged["val/robust_acc/once_linf_eps0.1"] < 1.0


def test_worst_case_above_member_flag_reads_the_results(helpers):
    callback = RobustnessEvaluation([PGD(eps=0.1), PGD(eps=0.1, steps=3)], worst_case=True)
    good = {"clean": 1.0, "pgd10_linf_eps0.1": 0.5, "pgd3_linf_eps0.1": 0.6, "worst_case_linf_eps0.1": 0.5}
    assert not callback._sanity_flags(good, {})["worst_case_above_member"]
    bad = {**good, "worst_case_linf_eps0.1": 0.55}
    assert callback._sanity_flags(bad, {})["worst_case_above_member"]


# -- early exit -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_early_exit_attacks_fewer_samples_with_unchanged_accuracy(helpers, seed):
    x, y = helpers.make_data(n=32, seed=seed + 1)
    y = y.clone()
    y[seed::3] = (y[seed::3] + 1) % helpers.CLASSES  # a third misclassified on the clean input
    results, samples = [], []
    for early_exit in (True, False):
        attacks = [CountingPGD(eps=0.1, alpha=0.03, steps=5, random_start=False),
                   APGD(eps=0.1, steps=5, loss="dlr", random_start=False)]
        callback = RobustnessEvaluation(attacks, early_exit=early_exit, worst_case=True)
        logged, _ = _validate(helpers, callback, x, y)
        results.append({k: v for k, v in logged.items() if "/robust_acc/" in k})
        samples.append(sum(attacks[0].samples))
    assert results[0] == results[1]
    assert samples[0] < samples[1]


# -- report ------------------------------------------------------------------------------------------------
class MinimalNormPGD(PGD):
    """A stand-in for FAB: flagged minimal-norm, returning a point at the smallest radius on a grid."""

    kind = "minpgd"
    minimal_norm = True

    def __call__(self, loss_fn, x, generator=None):
        out = x.detach().clone()
        done = torch.zeros(x.shape[0], dtype=torch.bool)
        for radius in torch.linspace(self.eps / 8, self.eps, 8):
            attack = PGD(eps=float(radius), alpha=float(radius) / 3, steps=5, random_start=False)
            adv = attack(loss_fn, x, generator)
            with torch.no_grad():
                fooled = loss_fn(adv) > loss_fn(x) + 1.0
            new = fooled & ~done
            out[new] = adv[new]
            done |= fooled
        return out


def test_report_has_success_rates_norms_per_class_and_the_radius_curve(helpers):
    x, y = helpers.make_data(n=32)
    attacks = [PGD(alpha=0.05, steps=5), MinimalNormPGD(eps=0.3)]
    callback = RobustnessEvaluation(attacks[:1], eps=[0.1, 0.3], worst_case=True)
    callback.attacks.append(attacks[1])  # FAB-like attack at one radius next to the sweep
    callback.base_attacks.append(attacks[1])
    trainer = helpers.make_trainer([callback], logger=CSVLogger(helpers.tmp_path, name="r"))
    trainer.test(helpers.PlainClassifier(), helpers.make_loader(x, y))
    run_dir = helpers.tmp_path / "r" / "version_0"
    logged = metrics(trainer)
    with (run_dir / "robustness_test.csv").open() as handle:
        rows = {(r["attack"], r["eps"]): r for r in csv.DictReader(handle)}
    pgd_row = rows[("pgd5", "0.3")]
    accuracy, clean = float(pgd_row["accuracy"]), logged["test/robust_acc/clean"]
    assert float(pgd_row["success_rate"]) == pytest.approx((clean - accuracy) / clean)
    assert 0 < float(pgd_row["linf_median"]) <= float(pgd_row["linf_mean"]) + 1e-6 <= 0.3 + 1e-5
    assert float(pgd_row["l2_mean"]) > float(pgd_row["linf_mean"])
    with (run_dir / "robustness_test_per_class.csv").open() as handle:
        per_class = [r for r in csv.DictReader(handle) if r["attack"] == "pgd5" and r["eps"] == "0.3"]
    counts = {int(r["class"]): int(r["samples"]) for r in per_class}
    assert counts == {int(c): int((y == c).sum()) for c in y.unique()}
    weighted = sum(float(r["accuracy"]) * int(r["samples"]) for r in per_class) / len(y)
    assert weighted == pytest.approx(accuracy)
    with (run_dir / "robustness_test_radius.csv").open() as handle:
        curve = [(float(r["radius"]), float(r["accuracy"])) for r in csv.DictReader(handle)]
    values = [a for _, a in curve]
    assert curve[0] == (0.0, pytest.approx(clean))
    assert all(b <= a + 1e-9 for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == pytest.approx(logged["test/robust_acc/minpgd_linf_eps0.3"])
    assert values[-1] < values[0]
    assert (run_dir / "robustness_test.png").read_bytes()[:4] == b"\x89PNG"


# -- sanity: Square below every gradient attack ---------------------------------------------------------
class Quantised(nn.Module):
    """Rounds its input to a coarse grid: zero input gradients almost everywhere (masking)."""

    def forward(self, x):
        return torch.round(x * 2) / 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_square_below_gradient_fires_on_masked_gradients_only(helpers, seed):
    x, y = helpers.make_data(n=24, seed=seed + 1)
    x = x.reshape(24, 1, 4, 4)
    attacks = [PGD(eps=0.3, alpha=0.1, steps=5, random_start=False), Square(eps=0.3, n_queries=200)]
    masked = helpers.PlainClassifier()
    masked.net.insert(0, Quantised())
    with torch.no_grad():
        y_masked = masked(x).argmax(1)  # labels the masked model gets right
    flags = {}
    for label, model, labels in (("masked", masked, y_masked), ("plain", helpers.PlainClassifier(), y)):
        logged, _ = _validate(helpers, RobustnessEvaluation(attacks, seed=seed), x, labels, model=model)
        flags[label] = (logged["val/sanity/square_below_gradient"], logged["val/robust_acc/square_linf_eps0.3"],
                        logged["val/robust_acc/pgd5_linf_eps0.3"])
    assert flags["masked"][0] == 1.0, flags
    assert flags["plain"][0] == 0.0, flags


def test_square_check_reads_autoattack_running_accuracy(helpers):
    attack = AutoAttack(eps=0.1, members=[("apgd-ce", APGD(eps=0.1)), ("square", Square(eps=0.1))])
    callback = RobustnessEvaluation([attack])
    details = {attack.name: {"running_accuracy": {"clean": 1.0, "apgd-ce": 0.6, "square": 0.5}}}
    assert callback._sanity_flags({"clean": 1.0}, {}, details)["square_below_gradient"]
    details[attack.name]["running_accuracy"]["square"] = 0.6
    assert not callback._sanity_flags({"clean": 1.0}, {}, details)["square_below_gradient"]


# -- AutoAttack as one entry ------------------------------------------------------------------------------
def test_autoattack_entry_matches_a_standalone_run(helpers):
    x, y = helpers.make_data(n=16)
    y = y.clone()
    y[::4] = (y[::4] + 1) % helpers.CLASSES

    def make():
        return AutoAttack(eps=0.15, members=[("apgd-ce", APGD(eps=0.15, steps=5)),
                                             ("apgd-dlr", APGD(eps=0.15, steps=5, loss="dlr")),
                                             ("square", Square(eps=0.15, n_queries=50))])

    callback = RobustnessEvaluation([make()], seed=5, worst_case=True)
    logged, _ = _validate(helpers, callback, x, y, batch_size=16)
    module = helpers.PlainClassifier().eval()
    _, robust = make()(module, x, y, generator=torch.Generator().manual_seed(5))
    assert logged["val/robust_acc/autoattack_linf_eps0.15"] == pytest.approx(robust.float().mean().item())
    # the worst case does not rerun an ensemble: it equals the ensemble's own accuracy
    assert logged["val/robust_acc/worst_case_linf_eps0.15"] == logged["val/robust_acc/autoattack_linf_eps0.15"]
    running = callback.last_details["val"]["autoattack_linf_eps0.15"]["running_accuracy"]
    assert list(running) == ["clean", "apgd-ce", "apgd-dlr", "square"]
    assert running["square"] == pytest.approx(robust.float().mean().item())


# -- external attacks --------------------------------------------------------------------------------------
def test_a_torchattacks_attack_runs_inside_the_report_and_agrees_with_ours(helpers):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = helpers.make_data(n=32)
    placeholder = nn.Linear(1, 1)  # torchattacks wants a model at construction; the callback swaps it
    external = torchattacks.PGD(placeholder, eps=0.1, alpha=0.03, steps=5, random_start=False)
    ours = PGD(eps=0.1, alpha=0.03, steps=5, random_start=False)
    callback = RobustnessEvaluation([ExternalAttack(external), ours], worst_case=True)
    logged, _ = _validate(helpers, callback, x, y)
    assert ExternalAttack(external).name == "torchattacks-pgd_linf_eps0.1"
    assert logged["val/robust_acc/torchattacks-pgd_linf_eps0.1"] == pytest.approx(
        logged["val/robust_acc/pgd5_linf_eps0.1"], abs=1 / 32)
    assert logged["val/robust_acc/torchattacks-pgd_linf_eps0.1"] < logged["val/robust_acc/clean"]
    assert external.model is placeholder  # restored after the call
    # a bare torchattacks object is wrapped for you
    assert isinstance(RobustnessEvaluation([external]).attacks[0], ExternalAttack)


class FakeArtAttack:
    """ART's evasion-attack interface: generate(x=np.ndarray, y=np.ndarray) -> np.ndarray."""

    def __init__(self, eps: float):
        self.eps = eps
        self.norm = np.inf
        self.calls: list[tuple[type, tuple[int, ...]]] = []

    def generate(self, x, y=None):
        self.calls.append((type(x), x.shape))
        return np.clip(x + self.eps * np.where(np.arange(x[0].size).reshape(x.shape[1:]) % 2, 1.0, -1.0), 0, 1)


def test_an_art_style_attack_is_called_with_arrays_and_scored(helpers):
    x, y = helpers.make_data(n=16)
    art = FakeArtAttack(eps=0.4)
    callback = RobustnessEvaluation([ExternalAttack(art)], early_exit=False)
    logged, _ = _validate(helpers, callback, x, y)
    assert art.calls == [(np.ndarray, (8, 1, 4, 4))] * 2
    module = helpers.PlainClassifier().eval()
    expected = torch.as_tensor(art.generate(x.numpy()), dtype=x.dtype)
    with torch.no_grad():
        accuracy = (module(expected).argmax(1) == y).float().mean().item()
    assert logged["val/robust_acc/art-fakeartattack_linf_eps0.4"] == pytest.approx(accuracy)


def test_external_attack_rejects_what_it_cannot_run():
    from robust_lightning.errors import InvalidArgumentError, InvalidArgumentTypeError

    with pytest.raises(InvalidArgumentTypeError, match="torchattacks"):
        ExternalAttack(object())

    class NoEps:
        def generate(self, x, y=None):
            return x

    with pytest.raises(InvalidArgumentError, match="eps"):
        ExternalAttack(NoEps())
    assert ExternalAttack(NoEps(), eps=0.1, norm="l2").name == "art-noeps_l2_eps0.1"


def test_fab_in_the_report_gives_the_minimal_norm_curve_consistent_with_its_accuracy(helpers):
    from robust_lightning.attacks.fab import FAB

    x, y = helpers.make_data(n=24)
    callback = RobustnessEvaluation([PGD(alpha=0.05, steps=5), FAB(n_iter=10)], eps=[0.05, 0.1])
    trainer = helpers.make_trainer([callback], logger=CSVLogger(helpers.tmp_path, name="fab"))
    trainer.test(helpers.PlainClassifier(), helpers.make_loader(x, y))
    logged = metrics(trainer)
    rows = callback.radius_rows("test")
    for eps in (0.05, 0.1):
        curve = {round(r["radius"], 6): r["accuracy"] for r in rows if r["eps"] == eps}
        # The minimal-norm curve at the attack's own radius is its fixed-eps robust accuracy.
        assert curve[round(eps, 6)] == pytest.approx(logged[f"test/robust_acc/fab_linf_eps{eps:g}"])
        assert curve[0.0] == pytest.approx(logged["test/robust_acc/clean"])
    assert (helpers.tmp_path / "fab" / "version_0" / "robustness_test_radius.csv").is_file()


def test_autoattack_running_counts_skip_batches_it_did_not_attack(helpers):
    x, y = helpers.make_data(n=16)
    y = y.clone()
    y[8:] = (y[8:] + 1) % helpers.CLASSES  # the second batch is all wrong: early exit skips it
    attack = AutoAttack(eps=0.1, members=[("apgd-ce", APGD(eps=0.1, steps=3))])
    callback = RobustnessEvaluation([attack])
    logged, _ = _validate(helpers, callback, x, y)
    running = callback.last_details["val"][attack.name]["running_accuracy"]
    assert running["clean"] == pytest.approx(logged["val/robust_acc/clean"]) == pytest.approx(0.5)
    assert running["apgd-ce"] == pytest.approx(logged[f"val/robust_acc/{attack.name}"])
