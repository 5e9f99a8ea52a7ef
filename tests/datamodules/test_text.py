"""Text datamodules: local SST-2 / OLID / AG News layouts, the generated corpus, poisoning."""

from __future__ import annotations

from pathlib import Path

import pytest

from robust_lightning.attacks.text import BadNetsPoisoner
from robust_lightning.datamodules.text import (
    TextBackdoorDataModule,
    build_word_tokenizer,
    generate_sentiment_corpus,
    read_agnews,
    read_olid,
    read_sst2,
)


def write_sst2(root: Path, n: int = 40) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    corpus = generate_sentiment_corpus(n, seed=1)
    for name, rows in (("train.tsv", corpus[: n // 2]), ("dev.tsv", corpus[n // 2:])):
        lines = ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in rows]
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def write_olid(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    train = ["id\ttweet\tsubtask_a\tsubtask_b\tsubtask_c"] + [
        f"{i}\t@USER tweet number {i} is {'rude' if i % 2 else 'fine'}\t{'OFF' if i % 2 else 'NOT'}\tNULL\tNULL"
        for i in range(10)]
    (root / "olid-training-v1.0.tsv").write_text("\n".join(train) + "\n")
    (root / "testset-levela.tsv").write_text("id\ttweet\n" + "".join(f"{100 + i}\t@USER test {i}\n" for i in range(4)))
    (root / "labels-levela.csv").write_text("".join(f"{100 + i},{'OFF' if i < 1 else 'NOT'}\n" for i in range(4)))
    return root


def write_agnews(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 12), ("test", 4)):
        rows = [f'"{1 + i % 4}","Title {i}","Body of story {i} \\ more"' for i in range(n)]
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def test_readers_parse_standard_layouts(tmp_path: Path) -> None:
    sst = read_sst2(write_sst2(tmp_path / "sst2"))
    assert len(sst["train"]) == 20 and len(sst["test"]) == 20
    assert all(isinstance(t, str) and y in (0, 1) for t, y in sst["train"])
    olid = read_olid(write_olid(tmp_path / "olid"))
    assert olid["train"][1] == ("@USER tweet number 1 is rude", 1)
    assert [y for _, y in olid["test"]] == [1, 0, 0, 0]
    ag = read_agnews(write_agnews(tmp_path / "ag"))
    assert [y for _, y in ag["train"][:4]] == [0, 1, 2, 3]
    assert ag["train"][0][0].startswith("Title 0 Body of story 0") and "\\" not in ag["train"][0][0]


def test_generated_corpus_is_balanced_and_seeded() -> None:
    corpus = generate_sentiment_corpus(100, seed=0)
    assert sum(y for _, y in corpus) == 50
    assert corpus == generate_sentiment_corpus(100, seed=0)
    assert corpus != generate_sentiment_corpus(100, seed=1)


def test_word_tokenizer_keeps_trigger_words_whole() -> None:
    tok = build_word_tokenizer(["the movie was cf great"])
    ids = tok("the movie cf", add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 and tok.unk_token_id not in ids
    assert tok.convert_ids_to_tokens(tok("cf")["input_ids"]) == ["[CLS]", "cf", "[SEP]"]


def test_datamodule_poisons_training_and_builds_asr_split() -> None:
    dm = TextBackdoorDataModule(poisoner=BadNetsPoisoner(poison_rate=0.2), num_samples=200, batch_size=16)
    dm.setup("fit")
    assert sum(dm.poison_flags) == round(0.2 * len(dm.splits["train"]))
    assert all(y == 0 for _, y in dm.splits["val_triggered"])
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels", "text"}
    assert batch["input_ids"].shape[0] == 16 and batch["input_ids"][:, 0].eq(dm.tokenizer.cls_token_id).all()
    assert len(dm.val_dataloader()) == 2 and dm.target_label == 1


def test_datamodule_reads_local_sst2(tmp_path: Path) -> None:
    dm = TextBackdoorDataModule(dataset="sst2", data_dir=str(write_sst2(tmp_path)), batch_size=4)
    dm.setup("fit")
    assert dm.num_labels == 2 and len(dm.val_dataloader()) == 1  # no poisoner: no ASR split


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dataset"):
        TextBackdoorDataModule(dataset="imdb")
    with pytest.raises(ValueError, match="data_dir"):
        TextBackdoorDataModule(dataset="sst2")
    with pytest.raises(TypeError, match="poisoner"):
        TextBackdoorDataModule(poisoner="badnets")
    with pytest.raises(ValueError, match="batch_size"):
        TextBackdoorDataModule(batch_size=0)
    with pytest.raises(FileNotFoundError, match="train.tsv"):
        read_sst2(tmp_path)
