"""Eps sweeps, the worst case over attacks, sanity checks and the written report (issue 5)."""

from __future__ import annotations

import csv
import warnings

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger

from robust_lightning.attacks import PGD, Attack
from robust_lightning.attacks.ensemble import worst_case_robustness
from robust_lightning.callbacks import RobustnessEvaluation

EPS = [0.0, 0.05, 0.1, 0.2]


def metrics(trainer):
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


class RecordingPGD(PGD):
    """PGD that records how many samples each call attacks."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.samples: list[int] = []

    def __call__(self, loss_fn, x, generator=None):
        self.samples.append(x.shape[0])
        return super().__call__(loss_fn, x, generator=generator)


class GivesUpAboveEps(PGD):
    """A broken attack: above ``limit`` it returns the input (accuracy rises with eps)."""

    kind = "gives-up"

    def __init__(self, limit: float, **kwargs):
        super().__init__(**kwargs)
        self.limit = limit

    def __call__(self, loss_fn, x, generator=None):
        if self.eps > self.limit:
            return x.detach().clone()
        return super().__call__(loss_fn, x, generator=generator)


class DescendingAttack(Attack):
    """A broken 'attack' that minimises the loss: accuracy rises above clean, loss falls."""

    kind = "descend"

    def __call__(self, loss_fn, x, generator=None):
        x_adv = x.detach().clone()
        for _ in range(10):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(x_adv).sum(), x_adv)
            x_adv = (x_adv.detach() - self.eps / 4 * grad.sign())
            x_adv = torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1)
        return x_adv


def _run_validate(helpers, callback, x, y, model=None, **trainer_kwargs):
    model = model or helpers.PlainClassifier()
    trainer = helpers.make_trainer([callback], **trainer_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(model, helpers.make_loader(x, y))
    return trainer, [str(w.message) for w in caught]


# -- eps sweep ----------------------------------------------------------------------------------------------
def test_sweep_logs_every_radius_and_accuracy_falls_with_eps(helpers):
    x, y = helpers.make_data(n=32)
    callback = RobustnessEvaluation([PGD(alpha=0.03, steps=10)], eps=EPS)
    trainer, _ = _run_validate(helpers, callback, x, y)
    logged = metrics(trainer)
    accuracies = [logged[f"val/robust_acc/{PGD(eps=e, alpha=0.03, steps=10).name}"] for e in EPS]
    assert accuracies[0] == pytest.approx(logged["val/robust_acc/clean"])
    assert all(b <= a + 1e-6 for a, b in zip(accuracies, accuracies[1:], strict=False)), accuracies
    assert accuracies[-1] < accuracies[0]


def test_sweep_accepts_fractions_of_255():
    callback = RobustnessEvaluation([PGD()], eps=[0, "2/255", "8/255"])
    assert [a.eps for a in callback.attacks] == pytest.approx([0.0, 2 / 255, 8 / 255])
    assert len({a.name for a in callback.attacks}) == 3


def test_report_csv_and_plot_are_written_to_the_run_dir(helpers):
    x, y = helpers.make_data(n=16)
    callback = RobustnessEvaluation([PGD(alpha=0.03, steps=5)], eps=EPS, worst_case=True)
    logger = CSVLogger(helpers.tmp_path, name="report")
    trainer = helpers.make_trainer([callback], logger=logger)
    model = helpers.PlainClassifier()
    trainer.test(model, helpers.make_loader(x, y))
    run_dir = helpers.tmp_path / "report" / "version_0"
    with (run_dir / "robustness_test.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["attack"] for r in rows][:1] == ["clean"]
    assert sum(r["attack"] == "pgd5" for r in rows) == len(EPS)
    assert sum(r["attack"] == "worst_case" for r in rows) == len(EPS)
    logged = metrics(trainer)
    for row in rows[1:]:
        assert 0.0 <= float(row["accuracy"]) <= float(rows[0]["accuracy"]) + 1e-6
    pgd_rows = {float(r["eps"]): float(r["accuracy"]) for r in rows if r["attack"] == "pgd5"}
    assert pgd_rows[0.1] == pytest.approx(logged[f"test/robust_acc/{PGD(eps=0.1, alpha=0.03, steps=5).name}"])
    png = run_dir / "robustness_test.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_writes_the_validation_report(helpers):
    x, y = helpers.make_data(n=16)
    callback = RobustnessEvaluation([PGD(alpha=0.03, steps=3)], eps=[0.0, 0.1])
    trainer = helpers.make_trainer([callback], logger=CSVLogger(helpers.tmp_path, name="fit"),
                                   limit_train_batches=1)
    trainer.fit(helpers.PlainClassifier(), helpers.make_loader(x, y), helpers.make_loader(x, y))
    assert (helpers.tmp_path / "fit" / "version_0" / "robustness_val.csv").is_file()
    assert (helpers.tmp_path / "fit" / "version_0" / "robustness_val.png").is_file()


def test_report_can_be_switched_off(helpers):
    x, y = helpers.make_data(n=8)
    callback = RobustnessEvaluation([PGD(eps=0.1, steps=2)], report=False)
    trainer = helpers.make_trainer([callback], logger=CSVLogger(helpers.tmp_path, name="off"))
    trainer.test(helpers.PlainClassifier(), helpers.make_loader(x, y))
    assert not list(helpers.tmp_path.rglob("robustness_*.csv"))


# -- worst case over attacks --------------------------------------------------------------------------------
def test_worst_case_is_below_every_attack_and_attacks_only_still_robust_samples(helpers):
    x, y = helpers.make_data(n=32)
    weak = RecordingPGD(eps=0.1, alpha=0.02, steps=1, random_start=False, name="weak")
    strong = RecordingPGD(eps=0.1, alpha=0.03, steps=10, name="strong")
    callback = RobustnessEvaluation([weak, strong], worst_case=True)
    trainer, _ = _run_validate(helpers, callback, x, y)
    logged = metrics(trainer)
    worst = logged["val/robust_acc/worst_case_linf_eps0.1"]
    assert worst <= min(logged["val/robust_acc/weak"], logged["val/robust_acc/strong"]) + 1e-6
    # Each attack ran once on the whole batch (per-attack metric), then once inside the ensemble
    # on the samples still robust: the ensemble's strong attack sees fewer than all 8 per batch.
    ensemble_strong_calls = strong.samples[1::2]
    weak_survivors = round(logged["val/robust_acc/weak"] * len(x))
    assert sum(ensemble_strong_calls) <= weak_survivors


def test_worst_case_robustness_function_counts_survivors():
    clean = torch.arange(6.0)
    # correct on clean for all but sample 5; attack A breaks {0, 1}; attack B breaks {2}.
    breaks = {"A": {0, 1}, "B": {2}}
    calls: list[tuple[str, list[int]]] = []

    class Named(Attack):
        kind = "named"

        def __call__(self, loss_fn, x, generator=None):
            return x

    def attack_fn(attack, index):
        calls.append((attack.name, index.tolist()))
        marked = clean[index].clone()
        for position, sample in enumerate(index.tolist()):
            if sample in breaks[attack.name]:
                marked[position] = -1.0
        return marked

    def correct_fn(inputs, index):
        return (inputs >= 0) & (index != 5)

    attacks = [Named(eps=0.1, name="A"), Named(eps=0.1, name="B")]
    robust, remaining = worst_case_robustness(attacks, clean, attack_fn, correct_fn)
    assert robust.tolist() == [False, False, False, True, True, False]
    assert remaining == [3, 2]
    assert calls == [("A", [0, 1, 2, 3, 4]), ("B", [2, 3, 4])]


# -- sanity checks ------------------------------------------------------------------------------------------
def _flags(trainer):
    return {k.rsplit("/", 1)[-1]: v for k, v in metrics(trainer).items() if "/sanity/" in k}


def test_a_sound_evaluation_raises_no_flag(helpers):
    x, y = helpers.make_data(n=16)
    trainer, messages = _run_validate(helpers, RobustnessEvaluation([PGD(alpha=0.03, steps=5)], eps=EPS), x, y)
    flags = _flags(trainer)
    assert set(flags) >= {"acc_rises_with_eps", "attacked_above_clean", "loss_not_increasing",
                          "randomized_outputs"}
    assert not any(flags.values()), flags
    assert not any("RobustnessEvaluation" in m for m in messages)


def test_accuracy_rising_with_eps_is_flagged_and_warned(helpers):
    x, y = helpers.make_data(n=16)
    callback = RobustnessEvaluation([GivesUpAboveEps(limit=0.1, alpha=0.05, steps=5)], eps=EPS)
    trainer, messages = _run_validate(helpers, callback, x, y)
    assert _flags(trainer)["acc_rises_with_eps"] == 1.0
    assert any("rises with eps" in m for m in messages)


def test_an_attack_that_helps_the_model_is_flagged(helpers):
    x, y = helpers.make_data(n=16)
    y = y.clone()
    y[::2] = (y[::2] + 1) % helpers.CLASSES  # clean accuracy 50%: room to 'improve'
    # early_exit would leave the misclassified half unattacked, so nothing could rise above clean.
    callback = RobustnessEvaluation([DescendingAttack(eps=0.5)], early_exit=False)
    trainer, messages = _run_validate(helpers, callback, x, y)
    flags = _flags(trainer)
    assert flags["attacked_above_clean"] == 1.0 and flags["loss_not_increasing"] == 1.0
    assert any("higher than clean" in m for m in messages)


def test_with_early_exit_a_descending_attack_is_still_caught_by_its_loss(helpers):
    x, y = helpers.make_data(n=16)
    y = y.clone()
    y[::2] = (y[::2] + 1) % helpers.CLASSES
    trainer, _ = _run_validate(helpers, RobustnessEvaluation([DescendingAttack(eps=0.5)]), x, y)
    flags = _flags(trainer)
    assert flags["attacked_above_clean"] == 0.0 and flags["loss_not_increasing"] == 1.0


class NoisyInEval(torch.nn.Module):
    def forward(self, x):
        return F.dropout(x, p=0.5, training=True)  # randomness that eval() does not turn off


def test_randomised_outputs_are_flagged(helpers):
    x, y = helpers.make_data(n=16)
    model = helpers.PlainClassifier()
    model.net.insert(1, NoisyInEval())
    trainer, messages = _run_validate(helpers, RobustnessEvaluation([PGD(eps=0.1, steps=2)]), x, y, model=model)
    assert _flags(trainer)["randomized_outputs"] == 1.0
    assert any("different outputs" in m for m in messages)


def test_sanity_checks_can_be_switched_off(helpers):
    x, y = helpers.make_data(n=8)
    trainer, _ = _run_validate(helpers, RobustnessEvaluation([PGD(eps=0.1, steps=2)], sanity_checks=False), x, y)
    assert not _flags(trainer)


def test_flags_and_report_reach_weights_and_biases(helpers, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(helpers.tmp_path))
    logger = WandbLogger(save_dir=str(helpers.tmp_path), project="robust-lightning-tests", offline=True)
    x, y = helpers.make_data(n=16)
    callback = RobustnessEvaluation([GivesUpAboveEps(limit=0.1, alpha=0.05, steps=5)], eps=EPS)
    trainer = helpers.make_trainer([callback], logger=logger)
    try:
        trainer.test(helpers.PlainClassifier(), helpers.make_loader(x, y))
        summary = dict(logger.experiment.summary)
    finally:
        logger.experiment.finish()
    assert summary["test/sanity_flags/acc_rises_with_eps"] is True
    assert "test/robustness_table" in summary and "test/robustness_plot" in summary
    assert "test/robustness_per_class" in summary


def test_logit_attacks_run_through_the_callback_on_sub_batches(helpers):
    """APGD-T attacks the still-unfooled subset per target class: a regression test."""
    from torch.utils.data import DataLoader, TensorDataset

    from robust_lightning import APGD, RobustClassifier
    from tests.data.trained import digits_tensors, trained_digits_model

    model = RobustClassifier(trained_digits_model(seed=0, width=16)[1], mean=[0.5], std=[0.5])
    x, y = digits_tensors("test")
    attacks = [APGD(eps=0.05, steps=5, loss="dlr"), APGD(eps=0.05, steps=5, loss="dlr_targeted", n_target_classes=3)]
    trainer = helpers.make_trainer([RobustnessEvaluation(attacks, worst_case=True)])
    (results,) = trainer.test(model, DataLoader(TensorDataset(x[:48], y[:48]), batch_size=20), verbose=False)
    clean = results["test/robust_acc/clean"]
    for attack in attacks:
        assert results[f"test/robust_acc/{attack.name}"] < clean
    assert results["test/robust_acc/worst_case_linf_eps0.05"] <= min(
        results[f"test/robust_acc/{a.name}"] for a in attacks)
