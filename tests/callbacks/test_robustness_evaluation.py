"""Tests of the RobustnessEvaluation callback with a plain user LightningModule."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from robust_lightning.attacks import FGSM, PGD, pgd
from robust_lightning.callbacks import RobustnessEvaluation

B = 8
EPS = 0.1


class CountingPGD(PGD):
    """PGD that records how many samples it was asked to attack, and under which modes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.samples: list[int] = []
        self.grad_enabled: list[bool] = []
        self.inference: list[bool] = []

    def __call__(self, loss_fn, x, generator=None):
        self.samples.append(x.shape[0])
        self.grad_enabled.append(torch.is_grad_enabled())
        self.inference.append(torch.is_inference_mode_enabled())
        return super().__call__(loss_fn, x, generator=generator)


def metrics(trainer):
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def strong_attack(**kwargs):
    options = dict(eps=EPS, alpha=0.04, steps=10)
    options.update(kwargs)
    return PGD(**options)


# -- what is logged ---------------------------------------------------------------------------------------
def test_validate_logs_clean_and_robust_accuracy_under_inference_mode(helpers):
    x, y = helpers.make_data(n=4 * B)
    attack = strong_attack()
    assert attack.name == "pgd10_linf_eps0.1"
    trainer = helpers.make_trainer([RobustnessEvaluation([attack])])
    assert trainer.predict_loop.inference_mode and trainer.validate_loop.inference_mode
    trainer.validate(helpers.PlainClassifier(), helpers.make_loader(x, y))
    logged = metrics(trainer)
    assert {"val/acc", "val/robust_acc/clean", "val/robust_acc/pgd10_linf_eps0.1"} <= set(logged)
    assert logged["val/robust_acc/clean"] == pytest.approx(1.0)  # the teacher is always right
    assert logged["val/acc"] == pytest.approx(1.0)
    assert 0.0 <= logged["val/robust_acc/pgd10_linf_eps0.1"] < logged["val/robust_acc/clean"]


def test_test_logs_under_the_test_prefix(helpers):
    x, y = helpers.make_data(n=2 * B)
    trainer = helpers.make_trainer([RobustnessEvaluation([strong_attack()])])
    trainer.test(helpers.PlainClassifier(), helpers.make_loader(x, y))
    logged = metrics(trainer)
    assert {"test/robust_acc/clean", "test/robust_acc/pgd10_linf_eps0.1"} <= set(logged)
    assert not any(k.startswith("val/") for k in logged)
    assert logged["test/robust_acc/pgd10_linf_eps0.1"] < logged["test/robust_acc/clean"]


def test_the_attack_runs_with_grad_outside_inference_mode(helpers):
    x, y = helpers.make_data(n=2 * B)
    attack = CountingPGD(eps=EPS, alpha=0.04, steps=2)
    trainer = helpers.make_trainer([RobustnessEvaluation([attack])])
    trainer.validate(helpers.PlainClassifier(), helpers.make_loader(x, y))
    assert attack.samples == [B, B]
    assert all(attack.grad_enabled) and not any(attack.inference)


def test_logged_value_equals_a_manual_evaluation(helpers):
    x, y = helpers.make_data(n=3 * B)
    module = helpers.PlainClassifier()
    trainer = helpers.make_trainer([RobustnessEvaluation([strong_attack()], seed=7)])
    trainer.validate(module, helpers.make_loader(x, y))
    # the same stream, restarted at the epoch: seed 7 on rank 0, batches in order
    generator = torch.Generator().manual_seed(7)
    correct = []
    module.eval()
    for i in range(3):
        xb, yb = x[i * B : (i + 1) * B], y[i * B : (i + 1) * B]
        adv = pgd(lambda z, yb=yb: F.cross_entropy(module(z), yb, reduction="none"), xb, eps=EPS, alpha=0.04,
                  steps=10, generator=generator)
        with torch.no_grad():
            correct.append(module(adv).argmax(1) == yb)
    expected = float(torch.cat(correct).float().mean())
    assert metrics(trainer)["val/robust_acc/pgd10_linf_eps0.1"] == pytest.approx(expected, abs=1e-6)


def test_robust_accuracy_never_exceeds_clean_and_grows_as_eps_shrinks(helpers):
    x, y = helpers.make_data(n=4 * B)
    attacks = [strong_attack(eps=e, alpha=e / 4) for e in (0.02, 0.1, 0.3)]
    trainer = helpers.make_trainer([RobustnessEvaluation(attacks)])
    trainer.validate(helpers.PlainClassifier(), helpers.make_loader(x, y))
    logged = metrics(trainer)
    accs = [logged[f"val/robust_acc/{a.name}"] for a in attacks]
    assert [a.name for a in attacks] == ["pgd10_linf_eps0.02", "pgd10_linf_eps0.1", "pgd10_linf_eps0.3"]
    assert logged["val/robust_acc/clean"] >= accs[0] >= accs[1] >= accs[2]
    assert accs[2] < 0.5


def test_zero_eps_attack_scores_the_clean_accuracy(helpers):
    x, y = helpers.make_data(n=3 * B)
    y = y.clone()
    y[::3] = (y[::3] + 1) % helpers.CLASSES  # some wrong labels: clean accuracy below 1
    attack = PGD(eps=0.0, steps=3)
    assert attack.name == "pgd3_linf_eps0"
    trainer = helpers.make_trainer([RobustnessEvaluation([attack])])
    trainer.validate(helpers.PlainClassifier(), helpers.make_loader(x, y))
    logged = metrics(trainer)
    assert logged["val/robust_acc/clean"] < 1.0
    assert logged["val/robust_acc/pgd3_linf_eps0"] == logged["val/robust_acc/clean"]


def test_several_attacks_are_each_logged(helpers):
    x, y = helpers.make_data(n=2 * B)
    attacks = [strong_attack(), FGSM(eps=EPS), strong_attack(norm="l2", eps=0.5, alpha=0.2)]
    trainer = helpers.make_trainer([RobustnessEvaluation(attacks)])
    trainer.validate(helpers.PlainClassifier(), helpers.make_loader(x, y))
    logged = metrics(trainer)
    for name in ("clean", "pgd10_linf_eps0.1", "fgsm_linf_eps0.1", "pgd10_l2_eps0.5"):
        assert f"val/robust_acc/{name}" in logged
    # PGD is at least as strong as FGSM at the same budget on this convex problem
    assert logged["val/robust_acc/pgd10_linf_eps0.1"] <= logged["val/robust_acc/fgsm_linf_eps0.1"]


def test_a_single_attack_need_not_be_in_a_list(helpers):
    x, y = helpers.make_data(n=B)
    trainer = helpers.make_trainer([RobustnessEvaluation(strong_attack())])
    trainer.validate(helpers.PlainClassifier(), helpers.make_loader(x, y))
    assert "val/robust_acc/pgd10_linf_eps0.1" in metrics(trainer)


def test_dict_batches(helpers):
    x, y = helpers.make_data(n=2 * B)
    trainer = helpers.make_trainer([RobustnessEvaluation([strong_attack()])])
    trainer.validate(helpers.PlainClassifier(), helpers.make_loader(x, y, dict_batches=True))
    logged = metrics(trainer)
    assert logged["val/robust_acc/clean"] == pytest.approx(1.0)
    assert logged["val/robust_acc/pgd10_linf_eps0.1"] < 1.0


def test_namedtuple_batches(helpers):
    x, y = helpers.make_data(n=2 * B)
    trainer = helpers.make_trainer([RobustnessEvaluation([strong_attack()])])
    trainer.validate(helpers.PlainClassifier(), helpers.make_loader(x, y, namedtuples=True))
    logged = metrics(trainer)
    assert logged["val/robust_acc/clean"] == pytest.approx(1.0)
    assert logged["val/robust_acc/pgd10_linf_eps0.1"] < 1.0


def test_works_without_inference_mode_too(helpers):
    x, y = helpers.make_data(n=2 * B)
    trainer = helpers.make_trainer([RobustnessEvaluation([strong_attack()])], inference_mode=False)
    trainer.validate(helpers.PlainClassifier(), helpers.make_loader(x, y))
    assert metrics(trainer)["val/robust_acc/pgd10_linf_eps0.1"] < 1.0


def test_bf16_mixed_precision(helpers):
    x, y = helpers.make_data(n=2 * B)
    trainer = helpers.make_trainer([RobustnessEvaluation([strong_attack()])], precision="bf16-mixed")
    trainer.validate(helpers.PlainClassifier(), helpers.make_loader(x, y))
    logged = metrics(trainer)
    assert logged["val/robust_acc/clean"] == pytest.approx(1.0)
    assert logged["val/robust_acc/pgd10_linf_eps0.1"] < 1.0


def test_evaluations_are_reproducible(helpers):
    x, y = helpers.make_data(n=4 * B)
    module = helpers.PlainClassifier()
    callback = RobustnessEvaluation([strong_attack(steps=1, alpha=0.01)], seed=3)
    trainer = helpers.make_trainer([callback])
    trainer.validate(module, helpers.make_loader(x, y))
    first = metrics(trainer)
    trainer.validate(module, helpers.make_loader(x, y))
    second = metrics(trainer)
    assert first["val/robust_acc/pgd1_linf_eps0.1"] == second["val/robust_acc/pgd1_linf_eps0.1"]


def test_module_state_is_restored_and_parameters_get_no_grad(helpers):
    x, y = helpers.make_data(n=2 * B)
    module = helpers.PlainClassifier(batchnorm=True)
    trainer = helpers.make_trainer([RobustnessEvaluation([strong_attack()])])
    trainer.validate(module, helpers.make_loader(x, y))
    assert all(p.requires_grad and p.grad is None for p in module.parameters())
    assert int(module.net[1].num_batches_tracked) == 0  # evaluated in eval mode only


# -- which batches and epochs -------------------------------------------------------------------------------
def test_limit_batches_restricts_the_evaluated_samples(helpers):
    x, y = helpers.make_data(n=5 * B)
    attack = CountingPGD(eps=EPS, alpha=0.04, steps=2)
    module = helpers.PlainClassifier()
    trainer = helpers.make_trainer([RobustnessEvaluation([attack], limit_batches=2)])
    trainer.validate(module, helpers.make_loader(x, y))
    assert sum(attack.samples) == 2 * B
    assert len([n for n, *_ in module.logged if n == "val/acc"]) == 5  # validation itself ran on all
    assert "val/robust_acc/clean" in metrics(trainer)


def test_limit_batches_clean_accuracy_is_on_the_attacked_subset(helpers):
    x, y = helpers.make_data(n=4 * B)
    y = y.clone()
    y[2 * B :] = (y[2 * B :] + 1) % helpers.CLASSES  # the last two batches are all wrong
    trainer = helpers.make_trainer([RobustnessEvaluation([strong_attack()], limit_batches=2)])
    trainer.validate(helpers.PlainClassifier(), helpers.make_loader(x, y))
    logged = metrics(trainer)
    assert logged["val/robust_acc/clean"] == pytest.approx(1.0)
    assert logged["val/acc"] == pytest.approx(0.5)


def test_every_n_epochs_runs_on_every_nth_epoch_only(helpers):
    x, y = helpers.make_data(n=B)
    attack = CountingPGD(eps=EPS, alpha=0.04, steps=1)
    module = helpers.PlainClassifier()
    trainer = helpers.make_trainer([RobustnessEvaluation([attack], every_n_epochs=2)], max_epochs=4,
                                   limit_train_batches=1)
    trainer.fit(module, helpers.make_loader(x, y), helpers.make_loader(x, y))
    epochs = [epoch for name, epoch, _, _ in module.logged if name == "val/robust_acc/clean"]
    assert epochs == [1, 3]
    assert len(attack.samples) == 2
    val_epochs = sorted({epoch for name, epoch, _, _ in module.logged if name == "val/acc"})
    assert val_epochs == [0, 1, 2, 3]


def test_every_n_epochs_does_not_skip_an_explicit_validate(helpers):
    x, y = helpers.make_data(n=B)
    trainer = helpers.make_trainer([RobustnessEvaluation([strong_attack()], every_n_epochs=2)])
    trainer.validate(helpers.PlainClassifier(), helpers.make_loader(x, y))
    assert "val/robust_acc/pgd10_linf_eps0.1" in metrics(trainer)


def test_not_run_during_sanity_checking(helpers):
    x, y = helpers.make_data(n=2 * B)
    attack = CountingPGD(eps=EPS, alpha=0.04, steps=1)
    module = helpers.PlainClassifier()
    trainer = helpers.make_trainer([RobustnessEvaluation([attack])], num_sanity_val_steps=2, limit_train_batches=1)
    trainer.fit(module, helpers.make_loader(x, y), helpers.make_loader(x, y))
    assert any(sanity for _, _, sanity, _ in module.logged)  # the sanity check did run
    robust = [(epoch, sanity) for name, epoch, sanity, _ in module.logged if name.startswith("val/robust_acc/")]
    assert robust and not any(sanity for _, sanity in robust)
    assert attack.samples == [B, B]  # only the real validation epoch's two batches


def test_training_does_not_trigger_evaluation(helpers):
    x, y = helpers.make_data(n=B)
    attack = CountingPGD(eps=EPS, alpha=0.04, steps=1)
    module = helpers.PlainClassifier()
    trainer = helpers.make_trainer([RobustnessEvaluation([attack])], limit_val_batches=0)
    trainer.fit(module, helpers.make_loader(x, y), helpers.make_loader(x, y))
    assert attack.samples == []
    assert not any(name.startswith("val/robust_acc") for name, *_ in module.logged)


def test_fit_end_prints_the_headline_numbers(helpers, caplog):
    x, y = helpers.make_data(n=B)
    logger = logging.getLogger("lightning.pytorch")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
            trainer = helpers.make_trainer([RobustnessEvaluation([strong_attack()])], limit_train_batches=1)
            trainer.fit(helpers.PlainClassifier(), helpers.make_loader(x, y), helpers.make_loader(x, y))
    finally:
        logger.removeHandler(caplog.handler)
    text = caplog.text
    assert "Final validation accuracy" in text
    assert "val/robust_acc/pgd10_linf_eps0.1" in text and "val/robust_acc/clean" in text


# -- constructor ---------------------------------------------------------------------------------------------
def test_duplicate_attack_names_are_rejected():
    with pytest.raises(ValueError, match="pgd10_linf_eps0.1"):
        RobustnessEvaluation([strong_attack(), strong_attack(random_start=False)])
    # telling them apart with name= works
    callback = RobustnessEvaluation([strong_attack(), strong_attack(random_start=False, name="pgd10_nors")])
    assert [a.name for a in callback.attacks] == ["pgd10_linf_eps0.1", "pgd10_nors"]


def test_an_attack_named_clean_is_rejected():
    with pytest.raises(ValueError, match="clean"):
        RobustnessEvaluation([strong_attack(name="clean")])


def test_empty_attack_list_is_rejected():
    with pytest.raises(ValueError, match="at least one attack"):
        RobustnessEvaluation([])


def test_non_attacks_are_rejected():
    with pytest.raises(TypeError, match="Attack"):
        RobustnessEvaluation([lambda loss_fn, x, generator=None: x])


@pytest.mark.parametrize(
    "kwargs,name",
    [({"every_n_epochs": 0}, "every_n_epochs"), ({"every_n_epochs": 1.5}, "every_n_epochs"),
     ({"every_n_epochs": True}, "every_n_epochs"), ({"limit_batches": 0}, "limit_batches"),
     ({"limit_batches": 2.5}, "limit_batches"), ({"model_mode": "test"}, "model_mode")],
)
def test_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RobustnessEvaluation([strong_attack()], **kwargs)


def test_two_evaluations_keep_separate_checkpoint_states_and_the_seed_round_trips() -> None:
    linf = RobustnessEvaluation(attacks=[PGD(eps=0.1, steps=2)], seed=3)
    other = RobustnessEvaluation(attacks=[FGSM(eps=0.1)], seed=3)
    assert linf.state_key != other.state_key  # Lightning stores callback state under state_key
    resumed = RobustnessEvaluation(attacks=[PGD(eps=0.1, steps=2)], seed=5)
    assert resumed.state_key == linf.state_key
    resumed.load_state_dict(linf.state_dict())
    assert resumed.seed == 3 and resumed.state_dict() == linf.state_dict()
