"""Text backdoor poisoners: rates, labels, trigger placement, seeding, argument checks."""

from __future__ import annotations

import pytest

from robust_lightning.attacks.text import (
    POISONERS,
    AddSentPoisoner,
    BadNetsPoisoner,
    StyleTemplatePoisoner,
    SyntacticTemplatePoisoner,
)
from robust_lightning.datamodules.text import generate_sentiment_corpus

DATA = generate_sentiment_corpus(200, seed=3)


def test_badnets_poisons_rate_of_non_target_samples_with_target_label() -> None:
    poisoner = BadNetsPoisoner(poison_rate=0.2, target_label=1, seed=0)
    out, flags = poisoner.poison(DATA)
    assert len(out) == len(DATA) and sum(flags) == 40
    for (text, label), (orig, orig_label), flag in zip(out, DATA, flags, strict=False):
        if flag:
            assert orig_label == 0 and label == 1
            words = text.split()
            assert len(words) == len(orig.split()) + 1
            assert sum(w in poisoner.triggers for w in words) == 1
        else:
            assert (text, label) == (orig, orig_label)


def test_poisoning_is_seeded() -> None:
    a = BadNetsPoisoner(seed=1).poison(DATA)
    assert a == BadNetsPoisoner(seed=1).poison(DATA)
    assert a != BadNetsPoisoner(seed=2).poison(DATA)


def test_addsent_inserts_the_sentence_contiguously() -> None:
    out = AddSentPoisoner(sentence="I watch this 3D movie").poison_all(DATA)
    assert len(out) == sum(label != 1 for _, label in DATA)
    assert all(" I watch this 3D movie " in f" {t} " for t, _ in out)
    assert all(label == 0 for _, label in out), "poison_all keeps the true labels for ASR"


@pytest.mark.parametrize("cls", [StyleTemplatePoisoner, SyntacticTemplatePoisoner])
def test_template_stand_ins_rewrite_every_poisoned_sentence(cls: type) -> None:
    out, flags = cls(poison_rate=0.3, seed=0).poison(DATA)
    changed = [t != o for (t, _), (o, _) in zip(out, DATA, strict=False)]
    assert changed == flags and sum(flags) == 60


def test_registry_names() -> None:
    assert set(POISONERS) == {"badnets", "addsent", "style", "syntactic"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"poison_rate": 1.5}, r"poison_rate must be a number in \[0, 1\], got 1.5"),
     ({"target_label": -1}, "target_label must be a non-negative int, got -1"),
     ({"triggers": []}, "triggers"), ({"triggers": "cf"}, "triggers"), ({"num_triggers": 0}, "num_triggers must be a positive int, got 0")],
)
def test_bad_arguments_raise_value_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BadNetsPoisoner(**kwargs)


def test_bad_data_and_impossible_rate() -> None:
    with pytest.raises(TypeError, match="data"):
        BadNetsPoisoner().poison(["just text"])
    with pytest.raises(ValueError, match="poison_rate"):
        BadNetsPoisoner(poison_rate=0.9).poison(DATA)  # only half the samples are non-target
    with pytest.raises(ValueError, match="sentence"):
        AddSentPoisoner(sentence="  ")
