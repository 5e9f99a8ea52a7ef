"""TextClassifier / BackdoorDefense: argument checks, a short fit, export and checkpoint state."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from benchmarks.experiments.badllm_tg import TINY_BERT, TINY_GPT2
from robust_lightning.attacks.text import BadNetsPoisoner
from robust_lightning.datamodules.text import TextBackdoorDataModule
from robust_lightning.lightning_modules.badllm_tg import BackdoorDefense, TextClassifier


def _trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    kwargs.setdefault("enable_checkpointing", False)
    return pl.Trainer(accelerator="cpu", max_epochs=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      default_root_dir=tmp_path, **kwargs)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="exactly one of model_path and model_config"):
        TextClassifier()
    with pytest.raises(ValueError, match="model_type"):
        TextClassifier(model_config={"hidden_size": 32})
    with pytest.raises(ValueError, match="num_labels"):
        TextClassifier(model_config=TINY_BERT, num_labels=1)
    with pytest.raises(ValueError, match="generator"):
        BackdoorDefense(victim_config=TINY_BERT)
    with pytest.raises(ValueError, match="defense_ratio"):
        BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2, defense_ratio=1.5)
    with pytest.raises(ValueError, match="generation_steps"):
        BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2, generation_steps=0)
    with pytest.raises(TypeError, match="victim_path"):
        BackdoorDefense(victim_path=3, generator_config=TINY_GPT2)
    with pytest.raises(ValueError, match="max_triggers_per_sample"):
        BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2, max_triggers_per_sample=0)
    with pytest.raises(TypeError, match="keep_clean"):
        BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2, keep_clean="yes")
    with pytest.raises(TypeError, match="pool_by_victim_tokens"):
        BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2, pool_by_victim_tokens=1)
    for flag in ("freeze_word_embeddings", "repeat_triggers", "phrase_triggers", "rescore_pool"):
        with pytest.raises(TypeError, match=flag):
            BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2, **{flag: 1})


class _Trainer:
    """Just enough trainer for ``BackdoorDefense.setup``/``training_step`` outside ``fit``."""

    def __init__(self, datamodule: TextBackdoorDataModule) -> None:
        self.datamodule = datamodule


def _set_up(defense: BackdoorDefense) -> TextBackdoorDataModule:
    """Run ``defense.setup("fit")`` on a 100-sample clean corpus, outside ``fit``; returns the data."""
    data = TextBackdoorDataModule(num_samples=100, batch_size=8)
    data.setup()
    defense._trainer = _Trainer(data)  # type: ignore[assignment]
    defense.setup("fit")
    return data


@pytest.mark.parametrize("keep_clean", [True, False])
def test_training_step_composes_pooled_triggers_with_true_labels(keep_clean: bool, monkeypatch) -> None:
    defense = BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2, defense_ratio=1.0,
                              max_triggers_per_sample=3, repeat_triggers=False, keep_clean=keep_clean,
                              pool_temperature=10.0,
                              pool_by_victim_tokens=False)  # this clean corpus' tokenizer reads cf, mn, bb as [UNK]
    data = _set_up(defense)
    defense.generator.pool.add(["cf", "mn", "bb"], [0.0, 0.0, 0.0])
    seen: dict[str, object] = {}
    encode = defense.encode

    def spy(texts: list[str]) -> dict[str, torch.Tensor]:
        seen["texts"] = texts
        return encode(texts)

    monkeypatch.setattr(defense, "encode", spy)
    monkeypatch.setattr(defense, "log", lambda *args, **kwargs: None)
    batch = next(iter(data.train_dataloader()))
    counts = []
    for _ in range(10):
        loss = defense.training_step(batch, 0)
        assert torch.isfinite(loss)
        texts = seen["texts"]
        assert len(texts) == (16 if keep_clean else 8)
        if keep_clean:
            assert texts[:8] == list(batch["text"])  # the clean originals stay in the batch
        for clean, triggered in zip(batch["text"], texts[-8:], strict=False):
            added = [w for w in triggered.split() if w in {"cf", "mn", "bb"}]
            assert 1 <= len(added) <= 3 and len(set(added)) == len(added)
            assert sorted(w for w in triggered.split() if w not in added) == sorted(clean.split())
            counts.append(len(added))
    assert {1, 2, 3} <= set(counts)


@pytest.mark.parametrize("phrase_triggers", [False, True])
def test_repeated_triggers_go_to_own_positions_or_into_one_phrase(phrase_triggers: bool) -> None:
    defense = BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2, max_triggers_per_sample=3,
                              repeat_triggers=True, phrase_triggers=phrase_triggers)
    _set_up(defense)
    defense.generator.pool.add(["cf", "mn"], [0.0, -1.0])  # T = 0.02: 'mn' has weight e^-50
    clean = "the plot was dull and boring and rather weak to me"
    counts, runs = set(), set()
    for _ in range(50):
        words = defense.triggered(clean).split()
        assert [w for w in words if w != "cf"] == clean.split()
        counts.add(words.count("cf"))
        positions = [i for i, w in enumerate(words) if w == "cf"]
        runs.add(positions == list(range(positions[0], positions[0] + len(positions))))
    assert counts == {1, 2, 3}  # the one strong trigger, up to three times
    assert runs == ({True} if phrase_triggers else {True, False})  # phrase: always contiguous


def test_frozen_word_embeddings_are_not_optimised() -> None:
    defense = BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2, freeze_word_embeddings=True)
    _set_up(defense)
    embeddings = defense.model.get_input_embeddings().weight
    optimised = {id(p) for p in defense.optimizer_parameters()}
    assert id(embeddings) not in optimised
    assert optimised == {id(p) for p in defense.model.parameters()} - {id(embeddings)}
    defense.freeze_word_embeddings = False
    assert id(embeddings) in {id(p) for p in defense.optimizer_parameters()}


def test_victim_fits_exports_and_defense_loads_it(tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    poisoner = BadNetsPoisoner(poison_rate=0.2)
    data = TextBackdoorDataModule(poisoner=poisoner, num_samples=200, batch_size=32)
    export = tmp_path / "victim"
    victim = TextClassifier(model_config=TINY_BERT, export_dir=str(export))
    trainer = _trainer(tmp_path, limit_train_batches=2)
    trainer.fit(victim, datamodule=data)
    assert {"val/cacc", "val/asr", "val/acc"} <= set(trainer.callback_metrics)
    assert (export / "model.safetensors").is_file() and (export / "tokenizer.json").is_file()

    clean = TextBackdoorDataModule(eval_poisoner=poisoner, num_samples=200, batch_size=32, tokenizer_path=str(export))
    defense = BackdoorDefense(victim_path=str(export), generator_config=TINY_GPT2, generation_steps=2,
                              num_candidates=4, reward_samples=8)
    assert defense.model.training, "a loaded victim is fine-tuned in train mode"
    before = {k: v.clone() for k, v in defense.model.state_dict().items()}
    trainer = _trainer(tmp_path, limit_train_batches=2, enable_checkpointing=True)
    trainer.fit(defense, datamodule=clean)
    metrics = trainer.callback_metrics
    assert {"train/reward", "train/reward_pool_best", "val/cacc", "val/asr"} <= set(metrics)
    assert float(metrics["train/reward"]) <= 0.0
    assert len(defense.generator.pool.items) > 0
    assert any(not torch.equal(before[k], v) for k, v in defense.model.state_dict().items())
    ckpt_path = tmp_path / "defense.ckpt"
    trainer.save_checkpoint(ckpt_path)
    checkpoint = torch.load(ckpt_path, weights_only=True)
    assert checkpoint["badllm_tg_pool"]["triggers"] == defense.generator.pool.triggers


def test_four_class_agnews_from_local_files(tmp_path: Path) -> None:
    from robust_lightning.attacks.text import AddSentPoisoner
    from tests.datamodules.test_text import write_agnews

    data = TextBackdoorDataModule(dataset="agnews", data_dir=str(write_agnews(tmp_path / "ag")), batch_size=4,
                                  poisoner=AddSentPoisoner(poison_rate=0.25, target_label=0), val_fraction=0.25)
    model = TextClassifier(model_config=TINY_BERT)
    trainer = _trainer(tmp_path, limit_train_batches=1)
    trainer.fit(model, datamodule=data)
    assert model.num_labels == 4 and model.model.config.num_labels == 4
    assert model.target_label == 0 and "val/asr" in trainer.callback_metrics
