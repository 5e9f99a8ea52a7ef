"""LaplacianSharpening: which stages it touches and what the model then sees."""

from __future__ import annotations

import pytest
import torch

from robust_lightning import LaplacianSharpening
from robust_lightning.nn.sharpen import laplacian_sharpen


def test_validation_batches_are_sharpened_and_training_batches_are_not(helpers):
    x, y = helpers.make_data(n=8)
    model = helpers.PlainClassifier()
    trainer = helpers.make_trainer([LaplacianSharpening(0.5)], limit_train_batches=1, limit_val_batches=1)
    seen_val = []
    original = model.validation_step

    def record(batch, batch_idx):
        seen_val.append(model.unpack(batch)[0].clone())
        return original(batch, batch_idx)

    model.validation_step = record
    trainer.fit(model, helpers.make_loader(x, y), helpers.make_loader(x, y))
    torch.testing.assert_close(model.seen[0][1], x[:8])  # training: untouched by default
    torch.testing.assert_close(seen_val[0], laplacian_sharpen(x[:8], 0.5))


def test_dict_batches_and_train_stage(helpers):
    x, y = helpers.make_data(n=8)
    model = helpers.PlainClassifier()
    trainer = helpers.make_trainer([LaplacianSharpening(1.0, stages=["train"])], limit_train_batches=1)
    trainer.fit(model, helpers.make_loader(x, y, dict_batches=True))
    torch.testing.assert_close(model.seen[0][1], laplacian_sharpen(x[:8], 1.0))


def test_unknown_stage_is_named():
    with pytest.raises(ValueError, match="stages"):
        LaplacianSharpening(1.0, stages=["validation"])
