"""BadLLM-TG effect on the generated corpus with BadNets and AddSent backdoors (issue 11, deliverable 4).

Poisoned tiny-BERT victim: ASR > 90 %. After 5 rounds of RL trigger generation and fine-tuning
with true labels: ASR at most half of before, CACC drop < 3 points. Measured (benchmarks/
badllm_tg_evidence.py, README table, seeds 0-7): BadNets ASR reduced by 68-100 %, AddSent by
63-89 %, CACC never lower by more than 1.2 points; seed 0 (tested here) gives BadNets
100 -> 3.9 % and AddSent 100 -> 36.7 %.
"""

from __future__ import annotations

import pytest

from benchmarks.experiments.badllm_tg import run_badllm_tg


def _check(result: dict, trigger_words: set[str]) -> None:
    before, after = result["before"], result["after"]
    assert before["asr"] > 0.9, result
    assert after["asr"] <= before["asr"] / 2, result
    assert before["cacc"] - after["cacc"] < 0.03, result
    pooled = " ".join(t for t, _ in result["pool"]).split()
    assert trigger_words & set(pooled), "the generator must rediscover (a fragment of) the trigger"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_defense_halves_badnets_asr_and_keeps_cacc(seed: int) -> None:
    _check(run_badllm_tg("badnets", seed), {"cf", "mn", "bb", "tq"})


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_defense_halves_addsent_asr_and_keeps_cacc(seed: int) -> None:
    _check(run_badllm_tg("addsent", seed), {"3d", "watch"})
