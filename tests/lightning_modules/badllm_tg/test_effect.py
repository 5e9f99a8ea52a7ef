"""BadLLM-TG effect on the generated corpus with BadNets and AddSent backdoors (issue 11, deliverable 4).

Poisoned tiny-BERT victim: ASR > 90 %. After 5 rounds of RL trigger generation and fine-tuning
with true labels: ASR at most half of before, CACC drop < 3 points.

Control: the clean fine-tuning defence, the same ``BackdoorDefense`` run (same 600 clean
samples, same 5 epochs, same generator rounds) with ``defense_ratio=0``, so no generated
trigger ever reaches the victim; if the triggered samples did nothing, it would lower ASR as
much. Measured on seeds 0-9 for both attacks (benchmarks/results/badllm_tg_evidence*.json and
badllm_tg_clean_finetune_control*.json, README "Control"): the control keeps ASR at 74-100%,
the defence ends 40-100 points under it on all 20 runs, CACC at most 1.2 points lower; but
"at most half" fails once: AddSent seed 9 keeps 58% ASR (control 98%). The test runs seed 0
only (each case is a victim fit plus two defence fits).

The generator's vocabulary is still the victim's word tokenizer, built from every split of the
poisoned corpus, so trigger words are directly sampleable: the pool holds them in control runs
too (seed 0 control pools ``mn cf``, ``moving 3d``). The rediscovery check below is therefore not
evidence that the RL search earned them (README, "Control").
"""

from __future__ import annotations

import pytest

from benchmarks.experiments.badllm_tg import run_badllm_tg


def _check(result: dict, control: dict, trigger_words: set[str]) -> None:
    before, after = result["before"], result["after"]
    assert before["asr"] > 0.9, result
    assert after["asr"] <= before["asr"] / 2, result
    assert before["cacc"] - after["cacc"] < 0.03, result
    # The same victim (same seed) fine-tuned on the same clean samples without triggers keeps
    # most of its backdoor: the generated triggers, not the fine-tuning, remove it.
    assert control["before"] == pytest.approx(before), (control, result)  # same victim
    assert control["after"]["asr"] > 0.7, control
    assert after["asr"] < control["after"]["asr"] - 0.3, (result, control)
    pooled = " ".join(t for t, _ in result["pool"]).split()
    assert trigger_words & set(pooled), "the generator must rediscover (a fragment of) the trigger"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_defense_halves_badnets_asr_and_keeps_cacc(seed: int) -> None:
    _check(run_badllm_tg("badnets", seed), run_badllm_tg("badnets", seed, defense_kwargs={"defense_ratio": 0.0}),
           {"cf", "mn", "bb", "tq"})


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_defense_halves_addsent_asr_and_keeps_cacc(seed: int) -> None:
    _check(run_badllm_tg("addsent", seed), run_badllm_tg("addsent", seed, defense_kwargs={"defense_ratio": 0.0}),
           {"3d", "watch"})
