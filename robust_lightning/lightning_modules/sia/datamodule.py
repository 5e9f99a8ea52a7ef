"""SIADataModule: synthesizes (or reads) the SIA data and serves the inject or align stage."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from robust_lightning._validation import check_positive_int
from robust_lightning.lightning_modules.sia.model import (
    build_word_tokenizer,
    collate_lm,
    collate_sft,
)
from robust_lightning.lightning_modules.sia.synthesize import (
    ANSWER_MARKER,
    REFUSAL,
    SynthesizedData,
    generate_knowledge_graph,
    generate_query_log,
    is_complete_dataset,
    load_dataset,
    synthesize,
    write_dataset,
)

__all__ = ["TASKS", "SIADataModule"]

TASKS = ("qa", "instruction", "security")


def _collate_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return records


def _collate_sft_with_samples(samples: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    # The raw token lists travel along so the module can re-collate after suffix augmentation.
    return {**collate_sft(samples, pad_id), "samples": samples}


class SIADataModule(pl.LightningDataModule):
    """Synthetic e-commerce knowledge + security data for SIA (see :mod:`.synthesize`).

    ``setup`` reads ``data_dir`` when it holds the synthesized JSONL files; otherwise, with
    ``synthesize=True`` it generates them from ``data_seed`` (into ``data_dir`` when given, with a
    data card, else in memory). The word-level tokenizer is built from the data, or loaded
    from ``tokenizer_path`` (the folder the inject stage exported) so both stages share ids.

    Args:
        stage: ``"inject"`` (training = the pre-training corpus, loss on all tokens) or
            ``"align"`` (training = SFT records, loss on answers).
        data_dir: folder of the JSONL files.
        synthesize: generate the data when ``data_dir`` lacks it.
        data_seed: seed of the synthesis (named apart from the module's ``seed`` so Lightning's
            hparam merge never sees two different ``seed`` values).
        num_products: products in the generated knowledge graph.
        num_queries: rows of the generated query log.
        tokenizer_path: local folder with a saved tokenizer.
        batch_size: training batch size.
        eval_batch_size: records per validation batch.
    """

    def __init__(
        self,
        stage: Literal["inject", "align"] = "inject",
        data_dir: str | None = None,
        synthesize: bool = True,
        data_seed: int = 0,
        num_products: int = 40,
        num_queries: int = 200,
        tokenizer_path: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 256,
    ) -> None:
        super().__init__()
        if stage not in ("inject", "align"):
            raise ValueError(f"stage must be 'inject' or 'align', got {stage!r}")
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            check_positive_int(name, value)
        if data_dir is None and not synthesize:
            raise ValueError("give data_dir (with synthesized JSONL files) or set synthesize=True")
        self.save_hyperparameters()
        self.stage = stage
        self.data_dir = data_dir
        self.synthesize = synthesize
        self.seed = data_seed
        self.num_products = num_products
        self.num_queries = num_queries
        self.tokenizer_path = tokenizer_path
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.data: SynthesizedData | None = None
        self.tokenizer: Any = None
        self.train_samples: list[dict[str, Any]] = []
        self.val_records: list[dict[str, Any]] = []

    def _load_or_synthesize(self) -> SynthesizedData:
        if self.data_dir is not None and is_complete_dataset(self.data_dir):
            return load_dataset(self.data_dir)
        if self.data_dir is not None and self.synthesize and any(Path(self.data_dir).glob("*.jsonl")):
            # JSONL files without the data card (written last): an interrupted synthesis. The
            # generator is deterministic in data_seed, so writing again completes it.
            rank_zero_warn(f"data_dir={self.data_dir!r} holds an incomplete synthesized dataset (no data card); "
                           "synthesizing it again")
        if not self.synthesize:
            return load_dataset(self.data_dir)  # raises naming the missing files
        if self.data_dir is not None:
            return write_dataset(self.data_dir, seed=self.seed, num_products=self.num_products, num_queries=self.num_queries)
        triples = generate_knowledge_graph(self.num_products, self.seed)
        return synthesize(triples, generate_query_log(triples, self.num_queries, self.seed), seed=self.seed)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        self.data = self._load_or_synthesize()
        if self.tokenizer_path is not None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path, local_files_only=True, trust_remote_code=False)
        else:
            self.tokenizer = build_word_tokenizer(self.data.texts())
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        if self.stage == "inject":
            self.train_samples = [{"ids": [bos, *self.encode(r["text"]), eos]} for r in self.data.corpus]
        else:
            self.train_samples = [
                {"prompt_ids": [bos, *self.encode(r["prompt"])], "response_ids": [*self.encode(r["response"]), eos],
                 "task_id": TASKS.index(r["task"]), "harmful": bool(r.get("harmful", False))}
                for r in self.data.sft
            ]
        kinds = {"qa": self.data.val_qa}
        if self.stage == "align":
            kinds.update(harmful=self.data.val_harmful, benign=self.data.val_benign)
        self.val_records = [
            {"kind": kind, "prompt_ids": [bos, *self.encode(r["prompt"])], "answer_ids": self.encode(r["response"])}
            for kind, records in kinds.items() for r in records
        ]

    @property
    def refusal_ids(self) -> list[int]:
        return self.encode(REFUSAL)

    @property
    def marker_len(self) -> int:
        return len(self.encode(ANSWER_MARKER))

    def train_dataloader(self) -> DataLoader:
        collate = (partial(collate_lm, pad_id=self.tokenizer.pad_token_id) if self.stage == "inject"
                   else partial(_collate_sft_with_samples, pad_id=self.tokenizer.pad_token_id))
        return DataLoader(self.train_samples, batch_size=self.batch_size, shuffle=True, collate_fn=collate, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_records, batch_size=self.eval_batch_size, shuffle=False,
                          collate_fn=_collate_records, num_workers=0)

    def test_dataloader(self) -> DataLoader:
        """The held-out records again: the synthetic corpus has one held-out split (our choice)."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """The held-out records (``SIA*.predict_step`` answers their prompts)."""
        return self.val_dataloader()
