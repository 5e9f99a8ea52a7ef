"""BadLLM-TG with a BERT-style tokenizer (no eos): a generator tokenizer without eos is refused
with a message saying why; a BERT victim still works, as the generator has its own tokenizer."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
from transformers import BertTokenizerFast

from benchmarks.experiments.badllm_tg import TINY_BERT, TINY_GPT2
from robust_lightning.datamodules.text import TextBackdoorDataModule
from robust_lightning.errors import InvalidArgumentError, MissingFileError
from robust_lightning.lightning_modules.badllm_tg import BackdoorDefense, TextClassifier, TriggerGenerator


def _bert_tokenizer(folder: Path) -> Path:
    """A WordPiece tokenizer as BERT checkpoints ship it ([CLS]/[SEP], no eos), built offline."""
    corpus = TextBackdoorDataModule(num_samples=60)
    corpus.setup("fit")
    words = sorted({w for split in corpus.splits.values() for text, _ in split for w in text.lower().split()})
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    assert tokenizer.eos_token_id is None
    tokenizer.save_pretrained(folder)
    return folder


def test_trigger_generator_names_the_missing_eos(tmp_path: Path) -> None:
    tokenizer = BertTokenizerFast.from_pretrained(_bert_tokenizer(tmp_path / "bert"), local_files_only=True)
    with pytest.raises(InvalidArgumentError, match=r"\(BertTokenizer\w*\) has no eos token.*BERT-style"):
        TriggerGenerator(tokenizer, policy_config=TINY_GPT2)


def test_defense_with_bert_victim_builds_its_own_generator_tokenizer(tmp_path: Path) -> None:
    """A BERT-style victim tokenizer (no eos) is no obstacle: the generator never uses it, it
    gets a sub-word tokenizer with an eos built from the clean training text."""
    data = TextBackdoorDataModule(num_samples=60, batch_size=8, tokenizer_path=str(_bert_tokenizer(tmp_path / "bert")))
    defense = BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2, generation_steps=1,
                              num_candidates=2, reward_samples=4)
    trainer = pl.Trainer(accelerator="cpu", fast_dev_run=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(defense, data)
    assert defense.generator.tokenizer is not data.tokenizer
    assert defense.generator.tokenizer.eos_token_id is not None and defense.generator.pool.items


def test_missing_victim_folder_is_named_not_a_hub_error(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"model folder .*victim_addsent does not exist"):
        TextClassifier(model_path=str(tmp_path / "runs" / "victim_addsent"))
