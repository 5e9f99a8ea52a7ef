"""AttackEngine: compile / channels-last / bf16 options give the plain path's numbers."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_lightning.attacks.base import PGD
from robust_lightning.attacks.core import attack_mode
from robust_lightning.attacks.engine import AttackEngine
from robust_lightning.errors import InvalidArgumentError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))


def _loss(x, model, y):
    return F.cross_entropy(model(x).float(), y, reduction="none")


def _attack(engine: AttackEngine | None, model, x, y, seed=0):
    gen = torch.Generator().manual_seed(seed)
    attack = PGD(eps=0.1, alpha=0.025, steps=5)
    with attack_mode(model):
        if engine is None:
            return attack(lambda z: _loss(z, model, y), x, generator=gen)
        engine.prepare_module(model)
        return attack(engine.wrap(("loss", id(model)), _loss, model, y), engine.prepare_inputs(x),
                      generator=gen)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)


def test_channels_last_matches_plain(data):
    x, y = data
    plain = _attack(None, _model(), x, y)
    fast = _attack(AttackEngine(channels_last=True), _model(), x, y)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    # Same algorithm, different summation order: a sign flip of a near-zero gradient entry
    # can move an element by one step; allow at most 1% of elements.
    assert (plain - fast).abs().gt(1e-5).float().mean() < 0.01


def test_bf16_keeps_fp32_perturbation_and_strength(data):
    x, y = data
    model = _model()
    plain = _attack(None, model, x, y)
    fast = _attack(AttackEngine(attack_precision="bf16"), model, x, y)
    assert fast.dtype == torch.float32
    assert (fast - x).abs().max() <= 0.1 + 1e-6
    with torch.no_grad(), attack_mode(model):
        clean, loss_plain, loss_fast = (_loss(z, model, y).mean() for z in (x, plain, fast))
    # Tolerance: the bf16 attack reaches at least 95% of the plain attack's loss increase.
    assert loss_fast - clean >= 0.95 * (loss_plain - clean)


def test_compile_counts_graphs_and_second_epoch_does_not_recompile(data):
    x, y = data
    model = _model()
    engine = AttackEngine(compile=True, compile_backend="eager")
    plain = _attack(None, model, x, y)
    first = _attack(engine, model, x, y)
    count = engine.compile_count
    assert count >= 1
    torch.testing.assert_close(first, plain)
    for seed in range(3):  # a "second epoch": same shapes, new batches
        _attack(engine, model, torch.rand_like(x), y, seed)
    assert engine.compile_count == count


def test_compile_failure_falls_back_with_one_warning(data):
    x, y = data
    model = _model()

    def broken(graph_module, example_inputs, **kwargs):
        raise RuntimeError("backend exploded")

    engine = AttackEngine(compile=True, compile_backend=broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _attack(engine, model, x, y)
        _attack(engine, model, x, y)
    messages = [w for w in caught if "AttackEngine" in str(w.message)]
    assert len(messages) == 1
    torch.testing.assert_close(out, _attack(None, model, x, y))


def test_bad_precision_is_named():
    with pytest.raises(InvalidArgumentError, match="attack_precision"):
        AttackEngine(attack_precision="fp8")


def test_nfgsm_can_exceed_eps_and_is_not_projected(data):
    from robust_lightning.attacks.base import NFGSM

    x, y = data
    x = 0.25 + 0.5 * x  # away from the bounds so the clamp does not hide the radius
    model = _model()
    with attack_mode(model):
        out = NFGSM(eps=0.1)(lambda z: _loss(z, model, y), x, generator=torch.Generator().manual_seed(0))
    delta = (out - x).abs()
    assert delta.max() > 0.1 + 1e-3  # beyond eps: no projection
    assert delta.max() <= 0.3 + 1e-6  # at most noise 2 eps + step eps


class _EpochCompileCounts:
    """Lightning callback: the engine's compile count and dynamo's graph count per epoch."""

    def __init__(self, engine: AttackEngine) -> None:
        import lightning.pytorch as pl

        self.engine = engine
        self.counts: list[tuple[int, int]] = []
        outer = self

        class _Hook(pl.Callback):
            def on_train_epoch_end(self, trainer, pl_module) -> None:
                from torch._dynamo.utils import counters

                outer.counts.append((engine.compile_count, int(counters["stats"]["unique_graphs"])))

        self.callback = _Hook()


@pytest.mark.slow
def test_real_fit_with_every_option_compiles_in_epoch_one_only(tmp_path):
    """A Trainer.fit on digits through AdversarialTraining with compile + channels_last + bf16.

    Backend: dynamo's "aot_eager" (dynamo tracing plus AOTAutograd's forward/backward graphs,
    the same capture and guards as inductor, without generating C++ kernels). Guards, hence
    recompiles, are decided before the backend runs, so counting with aot_eager counts what
    inductor would compile; inductor itself runs in benchmarks/adversarial_training.py. Why not
    inductor here: its first compile of this attack loss (C++ code generation and compilation)
    took 197 s on the shared 2-core CPU this was written on, far too slow for a unit test.
    """
    import lightning.pytorch as pl

    from robust_lightning import AdversarialTraining, RobustClassifier, SmallCNN
    from robust_lightning.datamodules import DigitsDataModule

    torch._dynamo.reset()
    pl.seed_everything(0, verbose=False)
    model = RobustClassifier(SmallCNN(num_classes=10, in_channels=1, width=8, hidden=16), mean=[0.5],
                             std=[0.5], optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    callback = AdversarialTraining(PGD(eps=0.1, alpha=0.025, steps=3), compile=True, channels_last=True,
                                   attack_precision="bf16", seed=0)
    callback.engine.compile_backend = "aot_eager"
    counts = _EpochCompileCounts(callback.engine)
    # 1078 training images in batches of 256: four full batches and a short last one, so the
    # first epoch sees two input shapes and the second epoch none it has not seen.
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[callback, counts.callback])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=DigitsDataModule(image_size=16, batch_size=256, seed=0))
    assert not [w for w in caught if "AttackEngine" in str(w.message)], "compile fell back to eager"
    assert trainer.state.finished and torch.isfinite(trainer.callback_metrics["train/loss"])
    (engine_1, graphs_1), (engine_2, graphs_2) = counts.counts
    assert engine_1 >= 1, "epoch 1 must compile the attack's loss"
    assert engine_1 <= 2, f"one graph per input shape (full and last batch), got {engine_1}"
    assert engine_2 == engine_1, "the second epoch recompiled"
    assert graphs_2 == graphs_1, "dynamo captured new graphs in the second epoch"
    assert not callback.engine._compile_failed
