"""BadLLM-TG effect on the generated corpus with BadNets and AddSent backdoors, seeds 0-2.

Setting (``run_badllm_tg`` with ``DEFENSE_KWARGS``, the README table's): poisoned tiny-BERT victim,
then 10 rounds of RL trigger generation (a tiny GPT-2 writing at most 2 characters, over a
vocabulary built from the defender's 600 clean samples, so no trigger word is a token; see
test_generator_vocabulary.py) and fine-tuning (word embeddings fixed) on the clean samples plus
triggered copies (1-3 pooled triggers, drawn with replacement) with their true labels. The seed
varies the generated corpus, the train/validation split, the poisoned subset and every init
(checked below).

Control: clean fine-tuning, the same ``BackdoorDefense`` run (same victim, same 600 clean
samples, same 10 epochs, same fine-tuning settings) with ``defense_ratio=0``: no generated trigger
reaches the victim (and the generator rounds are skipped). If the triggered copies did nothing,
it would lower ASR as much.

Measured on seeds 0-9 (benchmarks/results/badllm_tg_evidence.json and
badllm_tg_clean_finetune_control.json, method README "Results"; these runs are deterministic and
the test reproduces them): the control keeps ASR at 68-99% and fails "halved" on all 20 runs; the
defence halves ASR on all 20 (BadNets 0-29%, AddSent 6-39% after) and ends 51-95 points under the
control. CACC: at most 1.7 points lost on AddSent; on BadNets at most 1.3, except seeds 7 and 8
(2.1 points, 5 of 240 validation sentences), which fail the deliverable's 2-point bound. On the
seeds tested here (0-2) the most lost is 0.8 points, the highest ASR ratio 0.40 (AddSent seed 2)
and the smallest gap to the control 56 points, so the test asserts the deliverable for both
attacks (halved, at most 2 points CACC lost) and the defence at least 25 points under the control.

The pool holds a trigger word on all 20 runs (every AddSent pool ``3d``, every BadNets pool at
least three of the four words), composed from characters. The control runs no search, so this is
not a comparison with it; how much of the finding is the policy gradient and how much the
exploration samples of the initial policy is not measured.

Runtime: 20-30 s per attack x seed case (defence plus control) in a fresh-clone CI run on the
2-core machine (pytest -n 2); 62-131 s at load 9-12.
"""

from __future__ import annotations

import pytest

from benchmarks.experiments.badllm_tg import run_badllm_tg
from robust_lightning.attacks.text import AddSentPoisoner
from robust_lightning.datamodules.text import TextBackdoorDataModule

SEEDS = (0, 1, 2)
TRIGGER_WORDS = {"badnets": {"cf", "mn", "bb", "tq"}, "addsent": {"3d", "watch"}}
# The deliverable for both attacks: ASR at most half of before, at most 2 points CACC lost.
MAX_ASR_RATIO, MAX_CACC_DROP = 0.5, 0.02


def test_the_seed_varies_the_corpus_and_the_split() -> None:
    splits = []
    for seed in SEEDS:
        data = TextBackdoorDataModule(poisoner=AddSentPoisoner(seed=seed), num_samples=2000, seed=seed)
        data.setup("fit")
        splits.append(data.splits)
    for key in ("train", "val", "test"):
        assert len({tuple(s[key]) for s in splits}) == len(SEEDS), key


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("attack", ["badnets", "addsent"])
def test_defense_halves_asr_keeps_cacc_and_beats_clean_finetuning(attack: str, seed: int) -> None:
    result = run_badllm_tg(attack, seed)
    control = run_badllm_tg(attack, seed, defense_kwargs={"defense_ratio": 0.0})
    before, after = result["before"], result["after"]
    assert control["before"] == pytest.approx(before), (control, result)  # the same victim
    assert before["asr"] > 0.9, result
    assert after["asr"] <= MAX_ASR_RATIO * before["asr"], result
    assert before["cacc"] - after["cacc"] <= MAX_CACC_DROP, result
    # Clean fine-tuning alone fails the halving rule: the triggered copies, not the fine-tuning,
    # remove the backdoor.
    assert control["after"]["asr"] > before["asr"] / 2, control
    assert after["asr"] < control["after"]["asr"] - 0.25, (result, control)
    # The pool holds a trigger word, composed from characters (none is a generator token).
    pooled = {w for t, _ in result["pool"] for w in t.split()}
    assert TRIGGER_WORDS[attack] & pooled, result["pool"]
