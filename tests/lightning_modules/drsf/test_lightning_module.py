"""DRSFClassifier: the three methods, per-domain metrics, GRL schedule, argument checks, checkpoints."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from robust_lightning.datamodules import (
    DigitsDataModule,
    DomainGeneralizationDataModule,
    SyntheticDigitsDataModule,
)
from robust_lightning.lightning_modules.drsf import (
    DigitCNN,
    DRSFClassifier,
    MixStyle,
    RandomConvolution,
    SoftDomainFusion,
)
from robust_lightning.lightning_modules.drsf.model import EntropyGuidedChannelAttention
from robust_lightning.nn.grl import dann_lambda


def _model(method: str = "drsf", **kwargs) -> DRSFClassifier:
    torch.manual_seed(0)
    return DRSFClassifier(DigitCNN(num_classes=10, width=4), method=method, discriminator_hidden=8, **kwargs)


def _data() -> DomainGeneralizationDataModule:
    source = SyntheticDigitsDataModule(num_train=40, num_val=20, num_test=20, image_size=16, batch_size=16)
    target = DigitsDataModule(image_size=16, batch_size=16, eval_batch_size=64)
    return DomainGeneralizationDataModule(source, {"real": target})


def _trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    defaults = {"accelerator": "cpu", "max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "limit_test_batches": 1,
                    "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": tmp_path}
    return pl.Trainer(**{**defaults, **kwargs})


def _count(model: DRSFClassifier, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def test_each_method_builds_exactly_its_pieces() -> None:
    erm, mixstyle, drsf = _model("erm"), _model("mixstyle"), _model("drsf")
    assert _count(erm, MixStyle) == _count(erm, EntropyGuidedChannelAttention) == 0
    assert erm.randconv is None and erm.fusion is None
    assert _count(mixstyle, MixStyle) == 2 and _count(mixstyle, EntropyGuidedChannelAttention) == 0
    assert mixstyle.randconv is None and mixstyle.fusion is None
    assert _count(drsf, MixStyle) == 2 and _count(drsf, EntropyGuidedChannelAttention) == 1
    assert isinstance(drsf.randconv, RandomConvolution) and isinstance(drsf.fusion, SoftDomainFusion)
    # Soft fusion at more than one feature level.
    assert len(drsf.fusion.levels) >= 2
    # The ERM baseline is the bare backbone: same parameter count.
    assert sum(p.numel() for p in erm.net.parameters()) == sum(p.numel() for p in DigitCNN(width=4).parameters())


@pytest.mark.parametrize("method", ["erm", "mixstyle", "drsf"])
def test_fit_logs_losses_and_per_domain_accuracy(method: str, tmp_path: Path) -> None:
    model = _model(method)
    trainer = _trainer(tmp_path)
    trainer.fit(model, datamodule=_data())
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/acc", "val/acc/synthetic", "val/acc/real", "val/loss/real"):
        assert key in metrics, f"{key} missing for {method}"
    if method == "drsf":
        for key in ("train/task", "train/fusion", "train/consistency", "train/entropy_guidance"):
            assert key in metrics
        assert torch.isfinite(metrics["train/loss"])
    results = trainer.test(model, datamodule=_data(), verbose=False)
    assert "test/acc/synthetic" in results[0] and "test/acc/real" in results[1]


def test_drsf_step_updates_the_backbone_and_the_discriminators(tmp_path: Path) -> None:
    model = _model("drsf", grl_schedule="constant")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    _trainer(tmp_path, limit_val_batches=0).fit(model, datamodule=_data())
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert any(name.startswith("net.backbone") for name in changed)
    assert any(name.startswith("fusion.discriminators") for name in changed)
    assert any(name.startswith("net.attention") for name in changed)


def test_grl_scale_follows_the_dann_schedule(tmp_path: Path) -> None:
    model = _model("drsf", grl_lambda=0.5)
    assert model.current_grl_lambda() == 0.5  # no trainer yet: the maximum
    seen: list[tuple[int, float]] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, *args) -> None:
            seen.append((trainer.global_step, module.fusion.discriminators["stage2"].grl.lambda_))

    _trainer(tmp_path, max_epochs=2, limit_val_batches=0, callbacks=[Record()]).fit(model, datamodule=_data())
    total = 4  # 2 epochs x 2 batches
    # The value set for a step is computed before the optimizer step (global_step - 1 afterwards).
    assert [v for _, v in seen] == pytest.approx([0.5 * dann_lambda(s / total) for s in range(total)])
    constant = _model("drsf", grl_lambda=0.3, grl_schedule="constant")
    assert constant.current_grl_lambda() == 0.3


def test_single_dataloader_logs_plain_names(tmp_path: Path) -> None:
    model = _model("erm")
    trainer = _trainer(tmp_path)
    trainer.fit(model, datamodule=DigitsDataModule(image_size=16, batch_size=16))
    assert "val/acc" in trainer.callback_metrics


def test_explicit_domain_names_must_cover_the_loaders(tmp_path: Path) -> None:
    model = _model("erm", domain_names=["only_one"])
    with pytest.raises(ValueError, match="domain_names"):
        _trainer(tmp_path).fit(model, datamodule=_data())


def test_checkpoint_reloads_with_weights_only(tmp_path: Path) -> None:
    model = _model("drsf")
    trainer = _trainer(tmp_path, limit_val_batches=0)
    trainer.fit(model, datamodule=_data())
    path = tmp_path / "drsf.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["method"] == "drsf"
    fresh = _model("drsf")
    fresh.load_state_dict(checkpoint["state_dict"])
    model.eval()
    fresh.eval()
    x = torch.rand(4, 1, 16, 16)
    torch.testing.assert_close(fresh(x), model(x))


def test_predict_returns_probabilities() -> None:
    model = _model("drsf").eval()
    probs = model.predict_step(torch.rand(3, 1, 16, 16), 0)
    assert probs.shape == (3, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"method": "dann"}, ValueError, "method"),
        ({"num_classes": 7}, ValueError, "num_classes"),
        ({"fusion_levels": ["stage7"]}, ValueError, "fusion_levels"),
        ({"fusion_levels": "stage2"}, ValueError, "fusion_levels"),
        ({"mixstyle_levels": ["stage1", "stage1"]}, ValueError, "mixstyle_levels"),
        ({"attention_levels": ["head"]}, ValueError, "attention_levels"),
        ({"fusion_weight": -1.0}, ValueError, "fusion_weight"),
        ({"consistency_weight": float("inf")}, ValueError, "consistency_weight"),
        ({"grl_lambda": "big"}, ValueError, "grl_lambda"),
        ({"grl_schedule": "linear"}, ValueError, "grl_schedule"),
        ({"randconv_kernel_sizes": [2]}, ValueError, "kernel_sizes"),
        ({"randconv_intensity": "auto"}, ValueError, "intensity"),
        ({"mixstyle_p": 2.0}, ValueError, "p"),
        ({"bias_at_eval": "zero"}, ValueError, "bias_at_eval"),
        ({"domain_names": ["bad name"]}, ValueError, "domain_names"),
    ],
)
def test_bad_arguments_raise_early(kwargs, error, name) -> None:
    with pytest.raises(error, match=name):
        _model(**kwargs)


def test_backbone_must_expose_levels() -> None:
    from robust_lightning.nn import SmallCNN

    with pytest.raises(TypeError, match="MultiLevelBackbone"):
        DRSFClassifier(SmallCNN())  # type: ignore[arg-type]
