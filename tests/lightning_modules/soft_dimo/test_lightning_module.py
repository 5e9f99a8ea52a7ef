"""MaskedTokenTeacher, DiMODistillation and SoftDiMODistillation: training logic and errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from robust_lightning.errors import (
    CheckpointError,
    InvalidArgumentError,
    PrerequisiteError,
)
from robust_lightning.lightning_modules.soft_dimo import (
    DiMODistillation,
    MaskedTokenTeacher,
    SoftDiMODistillation,
)
from tests.data.cli_overrides.soft_dimo import write_tiny_teacher


def _loader(n: int = 16, batch_size: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 8, 8, generator=generator)
    return DataLoader(TensorDataset(images, torch.arange(n) % 10), batch_size=batch_size)


def _trainer(tmp_path: Path, steps: int) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", max_steps=steps, limit_val_batches=0, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path)


@pytest.fixture
def teacher_path(tmp_path: Path) -> Path:
    return write_tiny_teacher(tmp_path / "teacher.ckpt")


def _snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=False))


def test_teacher_trains_samples_and_validates(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = MaskedTokenTeacher(dim=16, depth=1, heads=2, mlp_dim=32, classifier_width=4, num_eval_samples=20,
                                 sampling_steps=3)
    before = teacher.masked_token_loss(torch.rand(16, 1, 8, 8), torch.arange(16) % 10,
                                       torch.Generator().manual_seed(0))
    trainer = pl.Trainer(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         check_val_every_n_epoch=1, num_sanity_val_steps=0)
    trainer.fit(teacher, train_dataloaders=_loader(), val_dataloaders=_loader())
    assert torch.isfinite(before)
    metrics = trainer.callback_metrics
    for key in ("val/classifier_fd", "val/class_accuracy", "val/precision", "val/recall", "val/samples_per_second"):
        assert key in metrics, key
    assert list((tmp_path / "samples").glob("teacher_epoch*.png")), "a PNG grid per validation epoch"
    tested = trainer.test(teacher, dataloaders=_loader(), verbose=False)[0]
    assert "test/classifier_fd" in tested and "test/token_loss" in tested
    images = teacher.sample(torch.arange(5), steps=1)
    assert images.shape == (5, 1, 8, 8) and 0 <= images.min() and images.max() <= 1


def test_teacher_with_vq_tokenizer_trains_the_autoencoder_first(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = MaskedTokenTeacher(tokenizer="vq", image_size=8, codebook_size=8, code_dim=4, vq_downsamples=1,
                                 tokenizer_steps=2, dim=16, depth=1, heads=2, mlp_dim=32, classifier_width=4)
    vq_before, transformer_before = _snapshot(teacher.tokenizer), _snapshot(teacher.transformer)
    seen: dict[int, tuple[bool, bool]] = {}

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, module: MaskedTokenTeacher, *args: object) -> None:
            seen[trainer.global_step] = (_changed(vq_before, module.tokenizer),
                                         _changed(transformer_before, module.transformer))
            if trainer.global_step == 2:
                vq_before[:] = _snapshot(module.tokenizer)

    trainer = _trainer(tmp_path, 4)
    trainer.callbacks.append(Watch())
    trainer.fit(teacher, train_dataloaders=_loader())
    assert seen[2] == (True, False), "steps 0-1 train the VQ-VAE only"
    assert seen[4] == (False, True), "steps 2-3 train the transformer on frozen codes"


def test_teacher_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="tokenizer"):
        MaskedTokenTeacher(tokenizer="pixel")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="sampling_steps"):
        MaskedTokenTeacher(sampling_steps=0)


def test_missing_teacher_checkpoint_names_the_teacher_config(tmp_path: Path) -> None:
    with pytest.raises(PrerequisiteError, match="configs/soft_dimo/teacher.yaml"):
        DiMODistillation(teacher_checkpoint=str(tmp_path / "absent.ckpt"))
    with pytest.raises(PrerequisiteError, match="teacher.yaml"):
        SoftDiMODistillation()


def test_wrong_or_unsafe_checkpoints_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"recipe": "pgd_at"}}, other)
    with pytest.raises(CheckpointError, match="not a MaskedTokenTeacher"):
        DiMODistillation(teacher_checkpoint=str(other))
    unsafe = tmp_path / "unsafe.ckpt"
    unsafe.write_bytes(pickle.dumps({"state_dict": object()}))
    with pytest.raises(CheckpointError, match="teacher_checkpoint.*it was not loaded"):
        DiMODistillation(teacher_checkpoint=str(unsafe))


def test_gan_and_reward_need_soft_embeddings(teacher_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="soft_embeddings"):
        DiMODistillation(teacher_checkpoint=str(teacher_path), gan_weight=0.1)
    with pytest.raises(InvalidArgumentError, match="auxiliary_rounds"):
        DiMODistillation(teacher_checkpoint=str(teacher_path), auxiliary_rounds=-1)


def test_dimo_step_updates_generator_and_auxiliary_not_the_teacher(teacher_path: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DiMODistillation(teacher_checkpoint=str(teacher_path), auxiliary_rounds=2, num_eval_samples=20)
    teacher, generator, auxiliary, ema = (_snapshot(model.teacher), _snapshot(model.generator),
                                          _snapshot(model.auxiliary), _snapshot(model.ema_generator))
    torch.testing.assert_close(generator, teacher)  # G and the auxiliary start as the teacher
    trainer = _trainer(tmp_path, 2)
    trainer.fit(model, train_dataloaders=_loader())
    assert trainer.global_step == 2, "global_step counts generator updates only"
    assert not _changed(teacher, model.teacher)
    assert _changed(generator, model.generator) and _changed(auxiliary, model.auxiliary) and _changed(ema, model.ema_generator)
    # Reference fix_emb_layer: embeddings and the output bias of G stay the teacher's.
    torch.testing.assert_close(model.generator.token_embedding.weight, model.teacher.token_embedding.weight)
    assert model.sample(torch.arange(4)).shape == (4, 1, 8, 8)
    tested = trainer.test(model, dataloaders=_loader(), verbose=False)[0]
    assert {"test/classifier_fd", "test/class_accuracy", "test/recall"} <= set(tested)


def test_soft_dimo_trains_the_discriminator_and_passes_gan_and_reward_gradients(teacher_path: Path,
                                                                                 tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SoftDiMODistillation(teacher_checkpoint=str(teacher_path), gan_weight=0.5, reward_weight=0.5,
                                 r1_weight=1.0, auxiliary_rounds=1)
    assert model.discriminator is not None
    discriminator = _snapshot(model.discriminator)
    classifier = _snapshot(model.classifier)
    trainer = _trainer(tmp_path, 1)
    trainer.fit(model, train_dataloaders=_loader())
    assert trainer.global_step == 1
    assert _changed(discriminator, model.discriminator)
    assert not _changed(classifier, model.classifier), "the reward classifier is frozen"
    # The decoded soft image is differentiable in G's parameters (what the GAN and reward need).
    labels = torch.arange(4)
    images = model.tokenizer.decode_probs(torch.softmax(model.generate_logits(model.generator, labels), -1))
    model.reward(images, labels).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generator.parameters())


def test_tteo_raises_the_reward_it_optimises(teacher_path: Path) -> None:
    torch.manual_seed(0)
    model = SoftDiMODistillation(teacher_checkpoint=str(teacher_path), gan_weight=0.0, tteo_steps=15, tteo_lr=0.2)
    labels = torch.arange(20) % 10
    plain = model.reward(model.sample_with_tteo(labels, steps=0, generator=torch.Generator().manual_seed(1)), labels)
    tuned = model.reward(model.sample_with_tteo(labels, generator=torch.Generator().manual_seed(1)), labels)
    assert tuned.mean() > plain.mean()
    with torch.inference_mode():  # as under Trainer.predict
        out = model.predict_step([torch.rand(3, 1, 8, 8), torch.arange(3)], 0)
    assert out.shape == (3, 1, 8, 8)


def test_resume_round_trip_keeps_every_network(teacher_path: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SoftDiMODistillation(teacher_checkpoint=str(teacher_path), auxiliary_rounds=1)
    trainer = _trainer(tmp_path, 1)
    trainer.fit(model, train_dataloaders=_loader())
    path = tmp_path / "student.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert len(checkpoint["optimizer_states"]) == 3
    restored = SoftDiMODistillation(teacher_checkpoint=str(teacher_path), auxiliary_rounds=1)
    restored.load_state_dict(checkpoint["state_dict"])
    torch.testing.assert_close(restored.ema_generator.output_bias, model.ema_generator.output_bias)
    for a, b in zip(restored.generator.parameters(), model.generator.parameters(), strict=False):
        torch.testing.assert_close(a, b)


def test_corruption_trains_the_teacher_on_random_tokens_too() -> None:
    torch.manual_seed(0)
    images, labels = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    plain = MaskedTokenTeacher(dim=16, depth=1, heads=2, mlp_dim=32, classifier_width=4)
    corrupted = MaskedTokenTeacher(dim=16, depth=1, heads=2, mlp_dim=32, classifier_width=4, corruption_prob=1.0)
    corrupted.load_state_dict(plain.state_dict())
    plain.eval(), corrupted.eval()  # no dropout: the two losses differ by the corruption only
    same = [plain.masked_token_loss(images, labels, torch.Generator().manual_seed(3)) for _ in range(2)]
    torch.testing.assert_close(same[0], same[1])
    other = corrupted.masked_token_loss(images, labels, torch.Generator().manual_seed(3))
    assert torch.isfinite(other) and not torch.equal(other, same[0])
    with pytest.raises(InvalidArgumentError, match="corruption_prob"):
        MaskedTokenTeacher(corruption_prob=1.5)
