"""NeroNetClassifier: a genotype trained further through RobustClassifier's recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robust_lightning.lightning_modules.classifier import RobustClassifier
from robust_lightning.lightning_modules.nero_net import NeroNet, NeroNetClassifier, default_genotype


def test_default_genotype_and_learning_block_optimizer() -> None:
    module = NeroNetClassifier(input_shape=(1, 8, 8), mean=[0.5], std=[0.5])
    assert isinstance(module, RobustClassifier)
    assert isinstance(module.model[1], NeroNet)
    assert module(torch.rand(4, 1, 8, 8)).shape == (4, 10)
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(default_genotype().learning["lr"])
    # The resolved genotype (plain data) is what the checkpoint stores.
    assert module.hparams["genotype"] == default_genotype().to_dict()


def test_genotype_file_recipe_and_explicit_optimizer(tmp_path: Path) -> None:
    genotype = default_genotype().to_dict()
    genotype["learning"] = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
                            "weight_decay": 0.0005, "batch_size": 128}
    genotype["features"][0]["filters"] = 8
    path = tmp_path / "g.yaml"
    path.write_text(__import__("yaml").safe_dump({"genotype": genotype, "fitness": 1.4}))
    module = NeroNetClassifier(genotype=str(path), input_shape=(3, 16, 16), recipe="pgd_at", eps=0.1,
                               mean=[0.5] * 3, std=[0.5] * 3)
    assert module.genotype.features[0]["filters"] == 8
    assert module.training_attack is not None  # PGD-AT recipe from RobustClassifier
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["nesterov"]
    explicit = NeroNetClassifier(genotype=str(path), input_shape=(3, 16, 16), mean=[0.5] * 3, std=[0.5] * 3,
                                 optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    assert isinstance(explicit.configure_optimizers(), torch.optim.AdamW)


def test_bad_genotype_argument() -> None:
    with pytest.raises(TypeError, match="genotype must be"):
        NeroNetClassifier(genotype=3)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NeroNetClassifier(genotype="no/such/genotype.yaml")
    with pytest.raises(ValueError, match="input_shape"):
        NeroNetClassifier(input_shape=(8, 8))
