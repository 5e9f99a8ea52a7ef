"""ConjMaskClassifier: masking at training and at evaluation, through Lightning."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from robust_lightning.lightning_modules.nup import ConjMaskClassifier, conj_mask_inputs
from robust_lightning.nn import SmallCNN


@pytest.fixture(autouse=True)
def _quiet_single_thread(single_thread):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
        yield


def _module(**kwargs) -> ConjMaskClassifier:
    torch.manual_seed(0)
    return ConjMaskClassifier(SmallCNN(num_classes=10, in_channels=1, width=4, hidden=16), mean=[0.5], std=[0.5],
                              optimizer=lambda p: torch.optim.SGD(p, lr=0.0), **kwargs)


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_forward_masks_in_eval_mode_only_with_the_predicted_label() -> None:
    module = _module(mask_fraction=0.2, mask_baseline=0.0)
    x, _ = _batch()
    module.eval()
    expected = module.model(conj_mask_inputs(module.model, x, 0.2, 0.0))
    assert torch.allclose(module(x), expected)
    assert not torch.allclose(module(x), module.model(x))
    module.train()
    assert torch.allclose(module(x), module.model(x))  # training masks in training_step instead
    unmasked = _module(mask_fraction=0.2, mask_eval=False).eval()
    assert torch.allclose(unmasked(x), unmasked.model(x))


def test_training_step_trains_on_inputs_masked_with_the_true_label() -> None:
    module = _module(mask_fraction=0.25)
    module.train()
    x, y = _batch()
    seen: list[torch.Tensor] = []
    module.model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    module.log = lambda *args, **kwargs: None  # no Trainer attached
    module.training_step([x, y], 0)
    # The mask's own forward sees x; the training forward sees the masked x.
    assert len(seen) == 2 and torch.equal(seen[0], x)
    masked = conj_mask_inputs(module.model, x, 0.25, 0.0, labels=y)
    assert torch.equal(seen[1], masked) and not torch.equal(seen[1], x)
    predicted = _module(mask_fraction=0.25, train_label="predicted")
    seen.clear()
    predicted.model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    predicted.log = lambda *args, **kwargs: None
    predicted.training_step([x, y], 0)
    trained_on = seen[1]
    assert torch.equal(trained_on, conj_mask_inputs(predicted.model, x, 0.25, 0.0))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mask_fraction": 2.0}, r"mask_fraction must be a number in \[0, 1\], got 2.0"),
    ({"mask_score": "top"}, r"mask_score must be one of \('abs', 'positive'\), got 'top'"),
    ({"mask_baseline": "black"}, "baseline"), ({"train_label": "true"}, "train_label"),
])
def test_bad_arguments_name_themselves(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        _module(**kwargs)


def test_fit_validate_and_test_run_with_masking_and_save_hyperparameters(tmp_path) -> None:
    x, y = _batch(32)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    module = _module(mask_fraction=0.1, mask_score="positive")
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, loader, loader)
    assert "val/acc" in trainer.callback_metrics
    assert trainer.test(module, loader, verbose=False)[0]["test/acc"] >= 0.0
    assert module.hparams["mask_fraction"] == 0.1 and module.hparams["mask_score"] == "positive"
