"""Poison -> generate -> defend in one Python call (the evidence test and benchmark use it).

The CLI runs the same two stages as two configs (``configs/badllm_tg/``); this helper keeps
everything in memory so a test can assert on the numbers.
"""

from __future__ import annotations

import tempfile
from typing import Any

import lightning.pytorch as pl

from robust_lightning.attacks.text import POISONERS
from robust_lightning.datamodules.text import TextBackdoorDataModule
from robust_lightning.lightning_modules.badllm_tg.lightning_module import (
    BackdoorDefense,
    TextClassifier,
)

__all__ = ["DEFENSE_EPOCHS", "DEFENSE_KWARGS", "TINY_BERT", "TINY_GPT2", "run_badllm_tg"]

TINY_BERT: dict[str, Any] = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}
TINY_GPT2: dict[str, Any] = {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 32}
#: The defence of the README table and the effect test (``BackdoorDefense`` arguments). The
#: generator writes characters (vocabulary from the defender's clean text), at most 2 per
#: trigger; each of the 10 updates per round scores 32 policy samples and 32 samples of the
#: initial policy (exploration, pool only) on 16 training texts; every clean sample gets a
#: triggered copy (``defense_ratio=1``) carrying 1-3 pooled triggers, drawn with replacement
#: (``repeat_triggers``); the victim's word embeddings stay fixed (``freeze_word_embeddings``)
#: and the rest is fine-tuned at ``lr=3e-3``.
DEFENSE_KWARGS: dict[str, Any] = {"generator_config": TINY_GPT2, "generator_vocab_size": None, "max_words": 2,
                                  "generation_steps": 10, "num_candidates": 32, "num_explore": 32,
                                  "reward_samples": 16, "defense_ratio": 1.0, "max_triggers_per_sample": 3,
                                  "pool_temperature": 0.02, "keep_clean": True, "pool_by_victim_tokens": True,
                                  "freeze_word_embeddings": True, "repeat_triggers": True, "phrase_triggers": False,
                                  "rescore_pool": False, "lr": 3e-3}
DEFENSE_EPOCHS = 10


def _trainer(epochs: int) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def _metrics(trainer: pl.Trainer, module: pl.LightningModule, datamodule: TextBackdoorDataModule) -> dict[str, float]:
    out = trainer.validate(module, datamodule=datamodule, verbose=False)
    merged = {k: float(v) for d in out for k, v in d.items()}
    return {"cacc": merged["val/cacc"], "asr": merged["val/asr"]}


def run_badllm_tg(
    attack: str = "badnets",
    seed: int = 0,
    num_samples: int = 2000,
    victim_epochs: int = 5,
    defense_epochs: int = DEFENSE_EPOCHS,
    defense_samples: int = 600,
    defense_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a poisoned victim, then defend it; returns CACC/ASR before and after and the pool.

    The defender fine-tunes on ``defense_samples`` clean training samples (our reading: the
    defender holds a small clean set, as in fine-tuning defences); the victim saw the full
    poisoned training set (poison rate 0.2, target label 1, the paper's setting). ``seed`` varies
    the generated corpus, the train/validation split, the poisoned subset and every init.
    ``defense_kwargs`` update :data:`DEFENSE_KWARGS` (``{"defense_ratio": 0.0}`` is the clean
    fine-tuning control).
    """
    pl.seed_everything(seed, workers=True, verbose=False)
    poisoner = POISONERS[attack](poison_rate=0.2, target_label=1, seed=seed)
    data = TextBackdoorDataModule(poisoner=poisoner, num_samples=num_samples, batch_size=64, seed=seed)
    victim = TextClassifier(model_config=TINY_BERT, lr=3e-3)
    trainer = _trainer(victim_epochs)
    trainer.fit(victim, datamodule=data)
    before = _metrics(trainer, victim, data)
    with tempfile.TemporaryDirectory() as tmp:
        victim.model.save_pretrained(tmp)
        data.tokenizer.save_pretrained(tmp)
        clean = TextBackdoorDataModule(poisoner=None, eval_poisoner=poisoner, num_samples=num_samples,
                                       max_train_samples=defense_samples, batch_size=32, seed=seed,
                                       tokenizer_path=tmp)
        kwargs = {**DEFENSE_KWARGS, "seed": seed, **(defense_kwargs or {})}
        defense = BackdoorDefense(victim_path=tmp, **kwargs)
        trainer = _trainer(defense_epochs)
        trainer.fit(defense, datamodule=clean)
        after = _metrics(trainer, defense, clean)
    return {"attack": attack, "seed": seed, "before": before, "after": after,
            "pool": [(t, round(r, 3)) for r, t in defense.generator.pool.items]}
