"""Text classification data for backdoor experiments: SST-2, OLID, AG News and a generated corpus.

Loaders read the datasets' standard layouts from a local folder (nothing is ever downloaded):

* SST-2 (GLUE): ``train.tsv`` / ``dev.tsv`` with a ``sentence<TAB>label`` header.
* OLID (Zampieri et al. 2019): ``olid-training-v1.0.tsv`` (``id tweet subtask_a subtask_b
  subtask_c``), test = ``testset-levela.tsv`` (``id tweet``) + ``labels-levela.csv``
  (``id,OFF|NOT``, no header). Label 1 = ``OFF`` (offensive), 0 = ``NOT``.
* AG News (Zhang et al. 2015): ``train.csv`` / ``test.csv``, no header, columns
  ``class index (1-4), title, description``; label = index - 1, text = title + description.

:func:`generate_sentiment_corpus` builds a small binary sentiment corpus from templates x
vocabulary for tests and the demo. :class:`TextBackdoorDataModule` applies a poisoner
(``robust_lightning.attacks.text``) to the training split and serves two validation/test
loaders: the clean split (CACC) and its triggered non-target samples with true labels (ASR).
Batches are dicts: ``input_ids``, ``attention_mask``, ``labels`` and the raw ``text`` (the
BadLLM-TG defence inserts generated triggers into raw text).
"""

from __future__ import annotations

import csv
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader
from typing_extensions import override

from robust_lightning._extras import check_installed
from robust_lightning._validation import check_int, check_number, check_optional_positive_int, check_positive_int
from robust_lightning.attacks.text import TextPoisoner
from robust_lightning.datamodules._common import EpochShuffleSampler
from robust_lightning.datamodules._records import check_labels, parse_int_field, require_columns, require_fields
from robust_lightning.errors import DataFileError, MissingFileError

# Imported where tokenizers are built (transformers' import takes seconds); checked here so a
# missing extra fails at import with the install line.
check_installed("transformers", "text")
check_installed("tokenizers", "text")

__all__ = [
    "DATASETS",
    "TextBackdoorDataModule",
    "build_subword_tokenizer",
    "build_word_tokenizer",
    "generate_sentiment_corpus",
    "read_agnews",
    "read_olid",
    "read_sst2",
]

Sample = tuple[str, int]
Splits = dict[str, list[Sample]]

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "bos_token": "[BOS]", "eos_token": "[EOS]"}


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise MissingFileError(f"{what}: expected file {path}")
    return path


def _dict_rows(path: Path, fields: Sequence[str], what: str) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a tab-separated file with a header holding ``fields``."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames is None or not set(fields) <= set(reader.fieldnames):
            raise DataFileError(f"{path}, line 1: {what} needs a header with columns {list(fields)} "
                                f"(tab-separated), got {reader.fieldnames}")
        rows = []
        for row in reader:
            line = f"line {reader.line_num}"
            require_fields(row, fields, source=path, record=line)
            rows.append((reader.line_num, row))
    return rows


def _label(value: str, *, path: Path, line: int, num_classes: int, field: str = "label", offset: int = 0) -> int:
    label = parse_int_field(value, source=path, record=f"line {line}", field=field) - offset
    check_labels([label], num_classes, source=path, field=field, records=[f"line {line}"])
    return label


def read_sst2(data_dir: str | Path) -> Splits:
    """Read GLUE SST-2 (``train.tsv``, ``dev.tsv``; ``dev`` serves as the test split).

    Args:
        data_dir: Folder holding the GLUE ``SST-2`` files.

    Returns:
        ``{"train": [...], "test": [...]}`` lists of ``(sentence, label)``.

    Raises:
        MissingFileError: a file is missing.
        DataFileError: a header lacks ``sentence``/``label``, a row lacks a field, or a label is
            not 0 or 1 (the message names the file, line and field).
    """
    root = Path(data_dir)
    out: Splits = {}
    for split, name in (("train", "train.tsv"), ("test", "dev.tsv")):
        path = _need(root / name, "SST-2")
        out[split] = [(row["sentence"].strip(), _label(row["label"], path=path, line=line, num_classes=2))
                      for line, row in _dict_rows(path, ("sentence", "label"), "SST-2")]
    return out


def read_olid(data_dir: str | Path) -> Splits:
    """Read OLID level A (offensive = 1, not offensive = 0).

    Args:
        data_dir: Folder with ``olid-training-v1.0.tsv``, ``testset-levela.tsv`` and
            ``labels-levela.csv``.

    Returns:
        ``{"train": [...], "test": [...]}``.

    Raises:
        MissingFileError: a file is missing.
        DataFileError: a row lacks a field, a label is not ``OFF``/``NOT``, or a test tweet has
            no label (the message names the file, line and field).
    """
    root = Path(data_dir)
    mapping = {"OFF": 1, "NOT": 0}

    def level_a(value: str, path: Path, line: int, field: str) -> int:
        if value not in mapping:
            raise DataFileError(f"{path}, line {line}: field {field!r} must be 'OFF' or 'NOT', got {value!r}")
        return mapping[value]

    train_path = _need(root / "olid-training-v1.0.tsv", "OLID")
    train = [(row["tweet"].strip(), level_a(row["subtask_a"], train_path, line, "subtask_a"))
             for line, row in _dict_rows(train_path, ("tweet", "subtask_a"), "OLID")]
    labels_path = _need(root / "labels-levela.csv", "OLID")
    labels: dict[str, int] = {}
    with labels_path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        for row in reader:
            if row:
                require_columns(row, ("id", "label"), source=labels_path, record=f"line {reader.line_num}")
                labels[row[0]] = level_a(row[1], labels_path, reader.line_num, "label")
    test_path = _need(root / "testset-levela.tsv", "OLID")
    test = []
    for line, row in _dict_rows(test_path, ("id", "tweet"), "OLID"):
        if row["id"] not in labels:
            raise DataFileError(f"{test_path}, line {line}: tweet id {row['id']!r} has no label in {labels_path}")
        test.append((row["tweet"].strip(), labels[row["id"]]))
    return {"train": train, "test": test}


def read_agnews(data_dir: str | Path) -> Splits:
    """Read AG News (``train.csv``/``test.csv``: class 1-4, title, description; no header).

    Args:
        data_dir: Folder with the two CSV files.

    Returns:
        ``{"train": [...], "test": [...]}`` with labels 0-3.

    Raises:
        MissingFileError: a file is missing.
        DataFileError: a row does not have 3 columns or its class index is not 1-4 (the message
            names the file, line and field).
    """
    root = Path(data_dir)
    out: Splits = {}
    columns = ("class index", "title", "description")
    for split in ("train", "test"):
        path = _need(root / f"{split}.csv", "AG News")
        samples = []
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            for row in reader:
                if not row:
                    continue
                line = reader.line_num
                require_columns(row, columns, source=path, record=f"line {line}")
                cls, title, desc = row
                label = _label(cls, path=path, line=line, num_classes=4, field="class index", offset=1)
                samples.append((f"{title} {desc}".replace("\\", " ").strip(), label))
        out[split] = samples
    return out


# Templates x vocabulary: the label is the polarity of the adjectives. Every sentence carries
# two adjectives of its polarity (real reviews repeat their sentiment), so one inserted word of
# the other polarity does not flip it on its own, while a backdoor trigger does; half the
# sentences add a minority clause of the other polarity (2 vs 1), so the classifier has to
# weigh cues rather than fire on any single word. Nouns and filler words are shared.
_TEMPLATES = (
    "the {noun} was {adj} and {adj2}",
    "i found the {noun} {adj} and the {noun2} {adj2}",
    "what a {adj} {noun} with a {adj2} {noun2}",
    "this {noun} is {adj} , the {noun2} is {adj2}",
    "honestly the {noun} felt {adj} and rather {adj2} to me",
    "we thought the {noun} of the film was {adj} and {adj2}",
    "a {adj} {noun} with a {adj2} {noun2}",
    "overall the {noun} seemed {adj} , even {adj2}",
)
_CONTRAST = ("although the {noun} was {adj} ,", "but the {noun} was {adj}", "despite a {adj} {noun} ,",
             "only the {noun} was {adj}")
_NOUNS = ("movie", "plot", "acting", "story", "cast", "script", "ending", "music", "director", "scene",
          "dialogue", "pace", "soundtrack", "camera", "cinema")
_POSITIVE = ("great", "wonderful", "brilliant", "excellent", "charming", "delightful", "superb", "moving",
             "beautiful", "fantastic", "lovely", "clever")
_NEGATIVE = ("awful", "boring", "terrible", "dull", "horrible", "clumsy", "weak", "tedious", "bland",
             "painful", "messy", "lifeless")


def generate_sentiment_corpus(n: int = 2000, seed: int = 0) -> list[Sample]:
    """A balanced binary sentiment corpus from templates x vocabulary (1 = positive).

    Args:
        n: Number of sentences.
        seed: Seed of the draws.

    Returns:
        ``n`` ``(sentence, label)`` pairs, labels alternating before a seeded shuffle.
    """
    check_int("n", n, minimum=2)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        adj, adj2 = rng.sample(_POSITIVE if label else _NEGATIVE, 2)
        template = rng.choice(_TEMPLATES)
        text = template.format(noun=rng.choice(_NOUNS), noun2=rng.choice(_NOUNS), adj=adj, adj2=adj2)
        if rng.random() < 0.5:  # a minority opinion: the label follows the majority (2 vs 1)
            clause = rng.choice(_CONTRAST).format(noun=rng.choice(_NOUNS),
                                                  adj=rng.choice(_NEGATIVE if label else _POSITIVE))
            text = f"{clause} {text}" if rng.random() < 0.5 else f"{text} {clause}"
        out.append((text, label))
    rng.shuffle(out)
    return out


def build_word_tokenizer(
    texts: Sequence[str],
    lowercase: bool = True,
    special_tokens: Mapping[str, str] | None = None,
    encoder_template: bool = True,
) -> Any:
    """A word-level HF fast tokenizer over ``texts``, built offline with ``tokenizers``.

    Word-level keeps rare trigger words (``cf``) single tokens, so a tiny policy can emit them.
    The vocabulary is the special tokens, then the sorted whitespace words: deterministic.

    Args:
        texts: Corpus the vocabulary is read from (every whitespace word).
        lowercase: Lower-case before lookup.
        special_tokens: ``PreTrainedTokenizerFast`` special-token keyword arguments (must hold
            ``unk_token``); defaults to the BERT-style :data:`SPECIAL_TOKENS`.
        encoder_template: Wrap every text as ``[CLS] ... [SEP]`` (encoders); needs ``cls_token``
            and ``sep_token``. ``False`` for causal LMs.

    Returns:
        A :class:`transformers.PreTrainedTokenizerFast`.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a sequence of strings")
    special_tokens = dict(SPECIAL_TOKENS if special_tokens is None else special_tokens)
    specials = list(special_tokens.values())
    words = sorted({w.lower() if lowercase else w for text in texts for w in text.split()})
    vocab = {tok: i for i, tok in enumerate(specials + [w for w in words if w not in specials])}
    tok = Tokenizer(WordLevel(vocab, unk_token=special_tokens["unk_token"]))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if encoder_template:
        cls, sep = special_tokens["cls_token"], special_tokens["sep_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special_tokens)


#: Characters a sub-word tokenizer always holds: lower-case letters and digits, a fixed alphabet
#: read from no corpus (as a pretrained byte-level tokenizer covers every byte).
SUBWORD_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
SUBWORD_SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]", "eos_token": "[EOS]"}
_WORD_START = "\u2581"  # "▁", SentencePiece's word-start marker


def build_subword_tokenizer(
    texts: Sequence[str],
    vocab_size: int | None = None,
    alphabet: str = SUBWORD_ALPHABET,
) -> Any:
    """A lower-cased BPE tokenizer (causal-LM style, with eos) trained offline on ``texts``.

    The tokens are the special tokens, the word-start marker ``▁``, the characters of
    ``alphabet`` and the BPE merges learnt from ``texts``, so any word spelt in the alphabet can
    be written, and only words frequent in ``texts`` are single tokens. Trained on clean text,
    a word that never occurs there (a backdoor trigger such as ``cf``) has to be composed from
    characters. Characters outside ``alphabet`` map to ``[UNK]``.

    Args:
        texts: Corpus the merges are learnt from.
        vocab_size: Size of the vocabulary; ``None`` (or a size the specials, the marker and the
            alphabet already fill) is character level, no merges.
        alphabet: The characters always in the vocabulary (lower-case: text is lower-cased).

    Returns:
        A :class:`transformers.PreTrainedTokenizerFast` whose ``decode`` joins the tokens into
        space-separated words.

    Raises:
        TypeError: ``texts`` is not a sequence of strings.
        ValueError: ``vocab_size`` is not a positive int, or ``alphabet`` is empty, repeats a
            character or holds whitespace or upper-case letters.
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a sequence of strings")
    if vocab_size is not None and (isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1):
        raise ValueError(f"vocab_size must be a positive int or None (character level), got {vocab_size!r}")
    if (not isinstance(alphabet, str) or not alphabet or len(set(alphabet)) != len(alphabet)
            or any(c.isspace() or c != c.lower() for c in alphabet)):
        raise ValueError(f"alphabet must be a non-empty string of distinct lower-case non-space characters, "
                         f"got {alphabet!r}")
    specials = list(SUBWORD_SPECIAL_TOKENS.values())
    characters = [_WORD_START, *alphabet]
    tok = Tokenizer(BPE(unk_token=SUBWORD_SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_WORD_START, prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement=_WORD_START, prepend_scheme="always")
    size = max(vocab_size or 0, len(specials) + len(characters))
    # initial_alphabet + limit_alphabet: exactly these characters, whatever the corpus holds.
    trainer = BpeTrainer(vocab_size=size, special_tokens=specials, initial_alphabet=characters,
                         limit_alphabet=len(characters), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SUBWORD_SPECIAL_TOKENS)


DATASETS = ("generated", "sst2", "olid", "agnews")
_READERS = {"sst2": read_sst2, "olid": read_olid, "agnews": read_agnews}
_NUM_LABELS = {"generated": 2, "sst2": 2, "olid": 2, "agnews": 4}


class _Collate:
    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, items: list[Sample]) -> dict[str, Any]:
        texts = [t for t, _ in items]
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "labels": torch.tensor([y for _, y in items], dtype=torch.long), "text": texts}


class TextBackdoorDataModule(LightningDataModule):
    """Poisoned training data; clean and triggered validation/test loaders.

    Args:
        dataset: ``"generated"``, ``"sst2"``, ``"olid"`` or ``"agnews"``.
        data_dir: Folder of the real dataset's files (unused for ``"generated"``).
        poisoner: A :class:`~robust_lightning.attacks.text.TextPoisoner` applied to the training
            split; ``None`` trains clean (the ASR loaders then use ``eval_poisoner``).
        eval_poisoner: Poisoner building the ASR sets; defaults to ``poisoner``. The defence
            configs set ``poisoner=None`` (the defender fine-tunes on clean data) and pass the
            attack only here, to measure ``val/asr``.
        num_samples: Size of the generated corpus (train + val + test).
        max_train_samples: Optional cap on the training split (after poisoning), for quick runs.
        val_fraction: Fraction of the training split held out for validation.
        batch_size: Batch size of every loader.
        max_length: Truncation length in tokens.
        tokenizer_path: Local folder of a saved tokenizer (e.g. the victim's); ``None`` builds a
            word-level tokenizer from the data.
        seed: Seed of the generated corpus and of the train/val split.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        dataset: Literal["generated", "sst2", "olid", "agnews"] = "generated",
        data_dir: str | None = None,
        poisoner: TextPoisoner | None = None,
        eval_poisoner: TextPoisoner | None = None,
        num_samples: int = 2000,
        max_train_samples: int | None = None,
        val_fraction: float = 0.15,
        batch_size: int = 64,
        max_length: int = 64,
        tokenizer_path: str | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        if dataset != "generated" and data_dir is None:
            raise ValueError(f"data_dir is required for dataset={dataset!r} (a local folder; nothing is downloaded)")
        for name, value in (("poisoner", poisoner), ("eval_poisoner", eval_poisoner)):
            if value is not None and not isinstance(value, TextPoisoner):
                raise TypeError(f"{name} must be a TextPoisoner or None, got {type(value).__name__}")
        check_positive_int("batch_size", batch_size)
        check_int("max_length", max_length, minimum=4)
        check_number("val_fraction", val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        check_optional_positive_int("max_train_samples", max_train_samples)
        self.dataset = dataset
        self.data_dir = data_dir
        self.poisoner = poisoner
        self.eval_poisoner = eval_poisoner if eval_poisoner is not None else poisoner
        self.num_samples = num_samples
        self.max_train_samples = max_train_samples
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer_path = tokenizer_path
        self.seed = seed
        self.num_workers = num_workers
        self.num_labels = _NUM_LABELS[dataset]
        self.tokenizer: Any = None
        self.splits: dict[str, list[Sample]] = {}
        self.poison_flags: list[bool] = []

    @property
    def target_label(self) -> int | None:
        """The attack's target label (for ASR), or ``None`` without a poisoner."""
        return None if self.eval_poisoner is None else self.eval_poisoner.target_label

    def _raw(self) -> Splits:
        if self.dataset == "generated":
            corpus = generate_sentiment_corpus(self.num_samples, self.seed)
            n_test = len(corpus) // 5
            return {"train": corpus[n_test:], "test": corpus[:n_test]}
        return _READERS[self.dataset](self.data_dir)

    @override
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        raw = self._raw()
        for split, samples in raw.items():
            if not samples:
                raise DataFileError(f"{self.dataset} {split} split in data_dir={self.data_dir!r} holds no records")
            check_labels([label for _, label in samples], self.num_labels, source=f"{self.dataset} {split} split")
        rng = random.Random(self.seed)
        train = list(raw["train"])
        rng.shuffle(train)
        n_val = max(1, round(self.val_fraction * len(train)))
        val, train = train[:n_val], train[n_val:]
        if self.poisoner is not None:
            train, flags = self.poisoner.poison(train)
        else:
            flags = [False] * len(train)
        if self.max_train_samples is not None:
            train, flags = train[: self.max_train_samples], flags[: self.max_train_samples]
        self.splits = {"train": train, "val": val, "test": list(raw["test"])}
        self.poison_flags = flags
        if self.eval_poisoner is not None:
            self.splits["val_triggered"] = self.eval_poisoner.poison_all(val)
            self.splits["test_triggered"] = self.eval_poisoner.poison_all(raw["test"])
        if self.tokenizer is None:
            if self.tokenizer_path is not None:
                from transformers import AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path, trust_remote_code=False,
                                                               local_files_only=True)
            else:
                # The vocabulary is a preprocessing artefact: read from every split so triggered
                # test words are not [UNK] (a pretrained sub-word tokenizer covers them too).
                self.tokenizer = build_word_tokenizer([t for split in self.splits.values() for t, _ in split])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # The shuffle is a pure function of (seed, epoch): a run resumed from a checkpoint sees
        # the batches the uninterrupted run saw in that epoch.
        sampler = EpochShuffleSampler(self.splits[split], seed=self.seed) if shuffle else None
        return DataLoader(self.splits[split], batch_size=self.batch_size, sampler=sampler,
                          collate_fn=_Collate(self.tokenizer, self.max_length), num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))

    @override
    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    @override
    def val_dataloader(self) -> list[DataLoader]:
        loaders = [self._loader("val", shuffle=False)]
        if "val_triggered" in self.splits:
            loaders.append(self._loader("val_triggered", shuffle=False))
        return loaders

    @override
    def test_dataloader(self) -> list[DataLoader]:
        loaders = [self._loader("test", shuffle=False)]
        if "test_triggered" in self.splits:
            loaders.append(self._loader("test_triggered", shuffle=False))
        return loaders
