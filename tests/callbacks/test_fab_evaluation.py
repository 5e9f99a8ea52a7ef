"""FAB as an entry of RobustnessEvaluation: the logged robust accuracy is the attack's own."""

from __future__ import annotations

import pytest
import torch

from robust_lightning.attacks import FAB
from robust_lightning.callbacks import RobustnessEvaluation


@pytest.mark.parametrize("targeted", [False, True])
def test_logged_fab_accuracy_equals_running_fab_on_the_module(helpers, targeted):
    x, y = helpers.make_data(n=32)
    attack = FAB(eps=0.1, norm="linf", n_iter=10, targeted=targeted, n_target_classes=2)
    module = helpers.PlainClassifier(batchnorm=True)
    trainer = helpers.make_trainer([RobustnessEvaluation([attack])])
    trainer.validate(module, helpers.make_loader(x, y))
    logged = float(trainer.callback_metrics[f"val/robust_acc/{attack.name}"])
    module.eval()
    # Without restarts FAB is deterministic, so running it by hand gives the same samples.
    with torch.no_grad():
        robust = torch.cat([module(attack.perturb_logits(module, xb, yb)).argmax(1) == yb
                            for xb, yb in zip(x.split(8), y.split(8), strict=False)])
    assert logged == pytest.approx(robust.float().mean().item())
    assert 0.0 < logged < 1.0
    assert all(p.requires_grad and p.grad is None for p in module.parameters())
    assert int(module.net[1].num_batches_tracked) == 0


def test_fab_runs_under_bf16_mixed_precision(helpers):
    x, y = helpers.make_data(n=16)
    attack = FAB(eps=0.4, norm="l2", n_iter=5)
    trainer = helpers.make_trainer([RobustnessEvaluation([attack])], precision="bf16-mixed")
    trainer.validate(helpers.PlainClassifier(), helpers.make_loader(x, y))
    assert float(trainer.callback_metrics[f"val/robust_acc/{attack.name}"]) < 1.0
