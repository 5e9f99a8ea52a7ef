"""SIA configs read data written by synthesize.yaml and a model exported by inject.yaml; write small ones."""

from __future__ import annotations

from pathlib import Path

import torch

_DATA = Path("runs") / "sia" / "data"
_MODEL = Path("runs") / "sia" / "inject"


def _data(workdir: Path) -> None:
    from robust_lightning.lightning_modules.sia.synthesize import write_dataset

    write_dataset(workdir / _DATA, seed=0, num_products=8, num_queries=20)


def _data_and_model(workdir: Path) -> None:
    from robust_lightning.lightning_modules.sia.model import (
        build_causal_lm,
        build_word_tokenizer,
        depth_upscale,
    )
    from robust_lightning.lightning_modules.sia.synthesize import load_dataset

    _data(workdir)
    tokenizer = build_word_tokenizer(load_dataset(workdir / _DATA).texts())
    torch.manual_seed(0)
    model = build_causal_lm({"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64}, tokenizer)
    depth_upscale(model, insert_every=1)
    model.save_pretrained(workdir / _MODEL)
    tokenizer.save_pretrained(workdir / _MODEL)


def _small_synthesis(tmp_path: Path) -> list[str]:
    return ["--data.init_args.num_products=8", "--data.init_args.num_queries=20"]


OVERRIDES = {"SIADataModule": _small_synthesis}
EXTRA_SETUP = {"sia/inject.yaml": _data, "sia/align.yaml": _data_and_model}
