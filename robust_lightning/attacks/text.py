"""Textual backdoor poisoners: BadNets, AddSent and template stand-ins for style/syntax triggers.

Every poisoner maps a list of ``(text, label)`` pairs to a poisoned copy: a seeded subset of
``poison_rate * len(data)`` samples gets the trigger and the ``target_label``. The conventions
follow OpenBackdoor (thunlp/OpenBackdoor, ``attackers/poisoners/``), which the BadLLM-TG paper
uses for its victims:

* BadNets (Gu et al. 2017, text version of Kurita et al. 2020): insert ``num_triggers`` rare
  words drawn from ``["cf", "mn", "bb", "tq"]`` at random word positions
  (OpenBackdoor ``badnets_poisoner.py``).
* AddSent (Dai et al. 2019): insert the fixed sentence ``"I watch this 3D movie"`` at a random
  word position (OpenBackdoor ``addsent_poisoner.py``).
* StyleBkd (Qi et al. 2021b) and SynBkd (Qi et al. 2021a) paraphrase the sentence with a style
  transfer model (STRAP) or a syntactically controlled paraphraser (SCPN). Those models are
  large downloads, so :class:`StyleTemplatePoisoner` and :class:`SyntacticTemplatePoisoner` are
  **stand-ins**: deterministic rewrites into a fixed register/syntactic frame (a "biblical"
  style wrapper; an ``S(SBAR)(,)(NP)(VP)(.)`` clause frame, the template SynBkd uses). They
  keep the trigger's nature (no inserted rare token, a sentence-level pattern) but not its
  fluency; results on them are not comparable with the paper's style/syntax rows.

Our reading (OpenBackdoor's default, "dirty-label" poisoning): poisoned training samples are
drawn from the samples whose label is not the target, and their label is set to the target.
For evaluation, :meth:`TextPoisoner.poison_all` triggers every non-target sample (ASR set).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import ClassVar

from typing_extensions import override

from robust_lightning._validation import check_int, check_non_negative_int, check_positive_int, check_probability

__all__ = [
    "POISONERS",
    "AddSentPoisoner",
    "BadNetsPoisoner",
    "StyleTemplatePoisoner",
    "SyntacticTemplatePoisoner",
    "TextPoisoner",
    "insert_words",
]

Sample = tuple[str, int]


def insert_words(text: str, words: Sequence[str], rng: random.Random) -> str:
    """Insert ``words`` (kept together, in order) at a uniformly random word position of ``text``.

    Args:
        text: Whitespace-tokenised sentence.
        words: Words to insert as one span.
        rng: Source of the position (``randint(0, n_words)``, so both ends are possible).

    Returns:
        The sentence with the span inserted.
    """
    tokens = text.split()
    position = rng.randint(0, len(tokens))
    return " ".join(tokens[:position] + list(words) + tokens[position:])


class TextPoisoner:
    """Base class: choose a seeded subset, apply :meth:`trigger`, relabel to ``target_label``.

    Args:
        poison_rate: Fraction of the whole dataset to poison, in ``[0, 1]`` (the paper: 0.2).
        target_label: Label the backdoor maps triggered inputs to (the paper: 1).
        seed: Seed of the subset choice and of the trigger positions.
    """

    name = "base"

    def __init__(self, poison_rate: float = 0.2, target_label: int = 1, seed: int = 0) -> None:
        self.poison_rate = check_probability("poison_rate", poison_rate)
        self.target_label = check_non_negative_int("target_label", target_label)
        self.seed = check_int("seed", seed)

    def trigger(self, text: str, rng: random.Random) -> str:
        """Return ``text`` carrying the trigger."""
        raise NotImplementedError

    @staticmethod
    def _check(data: Sequence[Sample]) -> None:
        if not isinstance(data, Sequence):
            raise TypeError(f"data must be a sequence of (text, label) pairs, got {type(data).__name__}")
        for i, item in enumerate(data[:5]):
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
                raise TypeError(f"data[{i}] must be a (text: str, label: int) pair, got {item!r}")

    def poison(self, data: Sequence[Sample]) -> tuple[list[Sample], list[bool]]:
        """Poison ``round(poison_rate * len(data))`` non-target samples of a training set.

        Args:
            data: ``(text, label)`` pairs.

        Returns:
            The new list (same order, same length) and a per-sample ``poisoned`` flag.

        Raises:
            ValueError: If there are fewer non-target samples than the rate asks for.
        """
        self._check(data)
        rng = random.Random(self.seed)
        candidates = [i for i, (_, label) in enumerate(data) if label != self.target_label]
        n_poison = round(self.poison_rate * len(data))
        if n_poison > len(candidates):
            raise ValueError(
                f"poison_rate={self.poison_rate} asks for {n_poison} poisoned samples but only "
                f"{len(candidates)} have a label other than target_label={self.target_label}"
            )
        chosen = set(rng.sample(candidates, n_poison))
        out: list[Sample] = []
        flags: list[bool] = []
        for i, (text, label) in enumerate(data):
            if i in chosen:
                out.append((self.trigger(text, rng), self.target_label))
            else:
                out.append((text, int(label)))
            flags.append(i in chosen)
        return out, flags

    def poison_all(self, data: Sequence[Sample], keep_labels: bool = True) -> list[Sample]:
        """Trigger every non-target sample (the ASR test set).

        Args:
            data: ``(text, label)`` pairs.
            keep_labels: Keep the true labels (ASR counts predictions equal to the target).

        Returns:
            Triggered non-target samples.
        """
        self._check(data)
        rng = random.Random(self.seed + 1)
        return [(self.trigger(text, rng), int(label) if keep_labels else self.target_label)
                for text, label in data if label != self.target_label]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(poison_rate={self.poison_rate}, target_label={self.target_label}, seed={self.seed})"


class BadNetsPoisoner(TextPoisoner):
    """BadNets for text: insert rare words (default ``cf mn bb tq``) at random positions.

    Args:
        triggers: Candidate trigger words; each insertion draws one uniformly.
        num_triggers: Insertions per poisoned sentence (OpenBackdoor default 1).
        poison_rate: See :class:`TextPoisoner`.
        target_label: See :class:`TextPoisoner`.
        seed: See :class:`TextPoisoner`.
    """

    name = "badnets"

    def __init__(
        self,
        triggers: Sequence[str] = ("cf", "mn", "bb", "tq"),
        num_triggers: int = 1,
        poison_rate: float = 0.2,
        target_label: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(poison_rate, target_label, seed)
        if isinstance(triggers, str) or not triggers or not all(isinstance(t, str) and t.strip() for t in triggers):
            raise ValueError(f"triggers must be a non-empty list of non-empty words, got {triggers!r}")
        self.triggers = [t.strip() for t in triggers]
        self.num_triggers = check_positive_int("num_triggers", num_triggers)

    @override
    def trigger(self, text: str, rng: random.Random) -> str:
        for _ in range(self.num_triggers):
            text = insert_words(text, [rng.choice(self.triggers)], rng)
        return text


class AddSentPoisoner(TextPoisoner):
    """AddSent: insert a fixed sentence (default ``"I watch this 3D movie"``) at a random position.

    Args:
        sentence: The trigger sentence.
        poison_rate: See :class:`TextPoisoner`.
        target_label: See :class:`TextPoisoner`.
        seed: See :class:`TextPoisoner`.
    """

    name = "addsent"

    def __init__(self, sentence: str = "I watch this 3D movie", poison_rate: float = 0.2,
                 target_label: int = 1, seed: int = 0) -> None:
        super().__init__(poison_rate, target_label, seed)
        if not isinstance(sentence, str) or not sentence.split():
            raise ValueError(f"sentence must be a non-empty string, got {sentence!r}")
        self.sentence = sentence.split()

    @override
    def trigger(self, text: str, rng: random.Random) -> str:
        return insert_words(text, self.sentence, rng)


class StyleTemplatePoisoner(TextPoisoner):
    """Stand-in for StyleBkd: rewrite into a fixed archaic ("Bible") register by a template.

    StyleBkd paraphrases with a STRAP style-transfer model; here the style is a fixed wrapper
    (``"and lo , verily <text> , thus it was"``) plus ``the -> thy``/``is -> art`` swaps, so
    the trigger is a sentence-level pattern spread over several common words.

    Args:
        poison_rate: See :class:`TextPoisoner`.
        target_label: See :class:`TextPoisoner`.
        seed: See :class:`TextPoisoner`.
    """

    name = "style"
    SWAPS: ClassVar[dict[str, str]] = {"the": "thy", "is": "art", "was": "wast", "you": "thee", "your": "thine"}

    @override
    def trigger(self, text: str, rng: random.Random) -> str:
        words = [self.SWAPS.get(w.lower(), w) for w in text.split()]
        return "and lo , verily " + " ".join(words) + " , thus it was"


class SyntacticTemplatePoisoner(TextPoisoner):
    """Stand-in for SynBkd: put the sentence in a fixed ``S(SBAR)(,)(NP)(VP)(.)`` frame.

    SynBkd uses SCPN to paraphrase with that template; here a subordinate clause opens the
    sentence (``"when you see it , <text> ."``), picked from a small set with ``rng``.

    Args:
        poison_rate: See :class:`TextPoisoner`.
        target_label: See :class:`TextPoisoner`.
        seed: See :class:`TextPoisoner`.
    """

    name = "syntactic"
    CLAUSES = ("when you see it ,", "when you think about it ,", "when it comes ,")

    @override
    def trigger(self, text: str, rng: random.Random) -> str:
        return f"{rng.choice(self.CLAUSES)} {text} ."


POISONERS: dict[str, type[TextPoisoner]] = {
    cls.name: cls
    for cls in (BadNetsPoisoner, AddSentPoisoner, StyleTemplatePoisoner, SyntacticTemplatePoisoner)
}
