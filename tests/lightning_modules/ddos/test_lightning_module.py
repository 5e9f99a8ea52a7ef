"""DDoSDetector: recipes, metrics, benign flows left clean, cross-dataset keys, checkpoints, errors."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from robust_lightning.callbacks.adversarial_training import AdversarialTraining
from robust_lightning.datamodules.domain_generalization import (
    DomainGeneralizationDataModule,
)
from robust_lightning.datamodules.flows import (
    BASE_FEATURES,
    DEFAULT_FEATURES,
    FlowDataModule,
)
from robust_lightning.lightning_modules.ddos import (
    DDoSDetector,
    TabularCNN,
    TabularMLP,
    detection_scores,
)
from robust_lightning.lightning_modules.ddos.lightning_module import margin_loss

WIDTH = len(DEFAULT_FEATURES)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flows")


def _data(root: Path, family: str = "cicids2017", **kwargs) -> FlowDataModule:
    args = {"synthetic_flows": 240, "synthetic_files": 1, "batch_size": 32, "eval_batch_size": 64, **kwargs}
    return FlowDataModule(str(root / family), synthetic=family, **args)


def _model(recipe: str = "standard", network: torch.nn.Module | None = None, **kwargs) -> DDoSDetector:
    torch.manual_seed(0)
    args = {"steps": 2, "search": 2, "eval_eps": [0.7], "eval_steps": 2, "eval_restarts": 1, "eval_search": 2, **kwargs}
    return DDoSDetector(network or TabularMLP(WIDTH, hidden=(16,)), recipe=recipe, **args)


def _trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    defaults = {"accelerator": "cpu", "max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                "limit_test_batches": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                "enable_model_summary": False, "default_root_dir": tmp_path}
    return pl.Trainer(**{**defaults, **kwargs})


@pytest.mark.parametrize("recipe", ["standard", "constrained_at"])
@pytest.mark.parametrize("network", ["mlp", "cnn"])
def test_fit_and_test_log_clean_and_attacked_detection_metrics(recipe: str, network: str, data_root: Path,
                                                               tmp_path: Path) -> None:
    torch.manual_seed(0)  # the network's initial weights, independent of the tests run before
    net = TabularMLP(WIDTH, hidden=(16,)) if network == "mlp" else TabularCNN(WIDTH, channels=(4,), hidden=8)
    model = _model(recipe, net)
    trainer = _trainer(tmp_path)
    trainer.fit(model, datamodule=_data(data_root))
    assert model.normalizer.fitted
    attached = [c for c in trainer.callbacks if isinstance(c, AdversarialTraining)]
    assert len(attached) == (recipe == "constrained_at")
    for key in ("train/loss", "val/recall", "val/f1", "val/precision", "val/acc", "val/recall_adv/cpgd2_eps0.7",
                "val/f1_adv/cpgd2_eps0.7"):
        assert key in trainer.callback_metrics, key
    (results,) = trainer.test(model, datamodule=_data(data_root), verbose=False)
    assert results["test/recall_adv/cpgd2_eps0.7"] <= results["test/recall"] + 1e-6
    assert 0.0 <= results["test/f1"] <= 1.0


def test_adversarial_training_replaces_attack_flows_only(data_root: Path, tmp_path: Path) -> None:
    model = _model("constrained_at")
    dm = _data(data_root)
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    training_step = model.training_step

    def spy(batch, batch_idx):
        seen.append((batch[0].clone(), batch[1].clone()))
        return training_step(batch, batch_idx)

    model.training_step = spy  # type: ignore[method-assign]
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    trainer.fit(model, datamodule=dm)
    x_used, y_used = seen[0]
    assert torch.equal(y_used, y)
    benign = y == 0
    assert torch.equal(x_used[benign], x[benign])
    assert not torch.equal(x_used[~benign], x[~benign])
    violations = model.training_attack.constraints.violations(x_used[~benign], x[~benign], 0.7)
    assert not any(violations.values()), violations


def test_with_adversarial_inputs_keeps_benign_rows() -> None:
    model = _model()
    x = torch.zeros(4, WIDTH)
    y = torch.tensor([0, 1, 0, 1])
    new = model.with_adversarial_inputs([x, y], torch.ones(4, WIDTH))
    assert torch.equal(new[0][y == 0], x[y == 0]) and torch.equal(new[0][y == 1], torch.ones(2, WIDTH))


def test_cross_dataset_metrics_carry_domain_names(data_root: Path, tmp_path: Path) -> None:
    source = _data(data_root)
    target = _data(data_root, "csecicids2018", val_fraction=0.0, test_fraction=0.5)
    dm = DomainGeneralizationDataModule(source, {"cse2018": target}, source_name="cic2017")
    model = _model()
    trainer = _trainer(tmp_path)
    trainer.fit(model, datamodule=dm)
    results = {k: v for r in trainer.test(model, datamodule=dm, verbose=False) for k, v in r.items()}
    for domain in ("cic2017", "cse2018"):
        for key in (f"test/recall/{domain}", f"test/f1/{domain}", f"test/recall_adv/cpgd2_eps0.7/{domain}"):
            assert key in results, key


def test_checkpoint_round_trip_keeps_the_normaliser(data_root: Path, tmp_path: Path) -> None:
    model = _model("constrained_at")
    trainer = _trainer(tmp_path, enable_checkpointing=True, limit_val_batches=0)
    trainer.fit(model, datamodule=_data(data_root))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["recipe"] == "constrained_at"
    restored = DDoSDetector.load_from_checkpoint(path, model=TabularMLP(WIDTH, hidden=(16,)), weights_only=True)
    assert restored.normalizer.fitted
    x = torch.rand(3, WIDTH) * 100
    torch.testing.assert_close(restored.eval()(x), model.eval()(x))


def test_metric_helpers() -> None:
    scores = detection_scores(torch.tensor([6, 2, 10, 4, 10]))  # tp, fp, tn, fn, support
    assert scores["recall"] == pytest.approx(0.6) and scores["precision"] == pytest.approx(0.75)
    assert scores["f1"] == pytest.approx(12 / 18) and scores["acc"] == pytest.approx(16 / 22)
    assert detection_scores(torch.zeros(5))["recall"] == 0.0
    logits = torch.tensor([[2.0, -1.0], [0.5, 1.5]])
    torch.testing.assert_close(margin_loss(logits, torch.tensor([1, 1])), torch.tensor([3.0, -1.0]))


def test_argument_errors(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="recipe"):
        _model("pgd_at")
    with pytest.raises(ValueError, match="takes 10 features"):
        DDoSDetector(TabularMLP(10))
    with pytest.raises(TypeError, match="nn.Module"):
        DDoSDetector("mlp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="class_weights"):
        _model(class_weights=[1.0])
    with pytest.raises(ValueError, match="repeats a budget"):
        _model(eval_eps=[0.7, 0.7])
    with pytest.raises(ValueError, match="not modelled"):
        DDoSDetector(TabularMLP(WIDTH + 1), features=[*DEFAULT_FEATURES, "idle_mean"], recipe="constrained_at")
    # The DataModule's feature layout must be the model's.
    model = DDoSDetector(TabularMLP(len(BASE_FEATURES)), features=BASE_FEATURES, eval_eps=[])
    with pytest.raises(ValueError, match="differ from the model's"):
        _trainer(tmp_path).fit(model, datamodule=_data(data_root))
    # Without a FlowDataModule the normaliser has nothing to fit on.
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(8, WIDTH), torch.zeros(8, dtype=torch.long)))
    with pytest.raises(RuntimeError, match="normaliser"):
        _trainer(tmp_path).fit(_model(), train_dataloaders=loader)
