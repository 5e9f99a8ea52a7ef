"""BadLLM-TG configs: the defence configs load a victim folder written by the victim config.

``EXTRA_SETUP`` writes a tiny untrained victim (HF ``save_pretrained`` of a 1-layer BERT and the
word-level tokenizer of the same generated corpus) where the defence YAMLs look for it, so each
YAML runs on its own under ``fast_dev_run``. The generated corpus needs no data files.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.experiments.badllm_tg import TINY_BERT
from robust_lightning.datamodules.text import TextBackdoorDataModule
from robust_lightning.lightning_modules.badllm_tg.model import build_hf_model


def write_tiny_victim(folder: Path, num_samples: int = 2000, seed: int = 0) -> Path:
    """Save an untrained tiny BERT classifier and the corpus tokenizer into ``folder``."""
    from robust_lightning.attacks.text import AddSentPoisoner, BadNetsPoisoner

    # Both attacks' trigger words in the vocabulary, as a victim trained on either would have.
    datamodules = [TextBackdoorDataModule(poisoner=p, num_samples=num_samples, seed=seed)
                   for p in (BadNetsPoisoner(), AddSentPoisoner())]
    texts = []
    for dm in datamodules:
        dm.setup("fit")
        texts += [t for split in dm.splits.values() for t, _ in split]
    from robust_lightning.datamodules.text import build_word_tokenizer

    tokenizer = build_word_tokenizer(texts)
    model = build_hf_model("sequence_classification", config=TINY_BERT, vocab_size=len(tokenizer),
                           pad_token_id=tokenizer.pad_token_id, num_labels=2)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _victim(attack: str):
    def setup(tmp_path: Path) -> None:
        write_tiny_victim(tmp_path / "runs" / "badllm_tg" / f"victim_{attack}")

    return setup


EXTRA_SETUP = {f"badllm_tg/generated_{a}_defense.yaml": _victim(a) for a in ("badnets", "addsent")}
