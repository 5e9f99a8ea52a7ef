"""The trigger generator's vocabulary comes from the defender's clean text, not the poisoned corpus.

The victim's word tokenizer is read from every split of the poisoned corpus, so the trigger words
are single tokens there; a generator sampling from it could emit ``cf`` in one draw. The defence
builds its own sub-word tokenizer from the clean training split it fine-tunes on: no trigger word
is a token, each has to be composed from characters, so a pooled trigger word is found by the
search rather than read off the vocabulary.
"""

from __future__ import annotations

import pytest

from benchmarks.experiments.badllm_tg import TINY_BERT, TINY_GPT2
from robust_lightning.attacks.text import AddSentPoisoner, BadNetsPoisoner
from robust_lightning.datamodules.text import (
    TextBackdoorDataModule,
    build_subword_tokenizer,
    build_word_tokenizer,
    generate_sentiment_corpus,
)
from robust_lightning.errors import InvalidArgumentError
from robust_lightning.lightning_modules.badllm_tg import BackdoorDefense

TRIGGER_WORDS = ("cf", "mn", "bb", "tq", "watch", "3d")


class _Trainer:
    def __init__(self, datamodule: TextBackdoorDataModule) -> None:
        self.datamodule = datamodule


def _tokens(tokenizer) -> set[str]:
    return {t.lstrip("\u2581") for t in tokenizer.get_vocab()}


@pytest.mark.parametrize("vocab_size", [None, 300])
def test_defense_generator_vocabulary_holds_no_trigger_word(vocab_size: int | None) -> None:
    # The victim's tokenizer as run_badllm_tg builds it: every split of a poisoned corpus.
    poisoned = [TextBackdoorDataModule(poisoner=p, num_samples=400, seed=0) for p in (BadNetsPoisoner(),
                                                                                       AddSentPoisoner())]
    for dm in poisoned:
        dm.setup("fit")
    victim_tokenizer = build_word_tokenizer([t for dm in poisoned for s in dm.splits.values() for t, _ in s])
    assert set(TRIGGER_WORDS) <= set(victim_tokenizer.get_vocab())
    clean = TextBackdoorDataModule(eval_poisoner=AddSentPoisoner(), num_samples=400, seed=0, max_train_samples=200)
    clean.setup("fit")
    clean.tokenizer = victim_tokenizer
    defense = BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2, generator_vocab_size=vocab_size)
    defense._trainer = _Trainer(clean)  # type: ignore[assignment]
    defense.setup("fit")
    tokenizer = defense.generator.tokenizer
    assert tokenizer is not victim_tokenizer
    assert not set(TRIGGER_WORDS) & _tokens(tokenizer), sorted(set(TRIGGER_WORDS) & _tokens(tokenizer))
    if vocab_size is not None:  # merges learnt from the clean text: its frequent words are tokens
        assert {"the", "movie", "was"} <= _tokens(tokenizer)
        assert len(tokenizer) <= vocab_size  # fewer once every clean word is a token
    for word in TRIGGER_WORDS:  # still writable, from at least two tokens
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        assert len(ids) >= 2 and tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == word
    assert defense.generator.policy.config.vocab_size == len(tokenizer)
    key = defense.generator.pool.key  # the pool tells triggers apart as the victim reads them
    assert key is not None and key("zq") == key("xk") == ("[UNK]",) and key("cf") == ("cf",)


def test_subword_tokenizer_is_trained_on_the_given_text_only() -> None:
    texts = [t for t, _ in generate_sentiment_corpus(200, seed=3)]
    with_trigger = build_subword_tokenizer([*texts, *(["cf the movie"] * 50)], vocab_size=200)
    assert "\u2581cf" in with_trigger.get_vocab()  # a frequent word becomes a token
    assert "\u2581cf" not in build_subword_tokenizer(texts, vocab_size=200).get_vocab()
    char_level = build_subword_tokenizer(texts)
    assert len(char_level) == 4 + 1 + 36  # specials, word-start marker, a-z 0-9
    ids = char_level("Watch this, 3D", add_special_tokens=False)["input_ids"]
    assert char_level.decode(ids) == "watch this[UNK] 3d"  # lower-cased; ',' is not in the alphabet
    with pytest.raises(ValueError, match="vocab_size"):
        build_subword_tokenizer(texts, vocab_size=0)
    with pytest.raises(ValueError, match="alphabet"):
        build_subword_tokenizer(texts, alphabet="aab")
    with pytest.raises(TypeError, match="texts"):
        build_subword_tokenizer("the movie")


def test_poisoned_training_split_is_refused_as_the_generator_corpus() -> None:
    poisoned = TextBackdoorDataModule(poisoner=BadNetsPoisoner(), num_samples=100)
    poisoned.setup("fit")
    defense = BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2)
    defense._trainer = _Trainer(poisoned)  # type: ignore[assignment]
    with pytest.raises(InvalidArgumentError, match="eval_poisoner only"):
        defense.setup("fit")
    with pytest.raises(InvalidArgumentError, match="generator_vocab_size"):
        BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2, generator_vocab_size=0)
    with pytest.raises(InvalidArgumentError, match="num_explore"):
        BackdoorDefense(victim_config=TINY_BERT, generator_config=TINY_GPT2, num_explore=-1)
