"""BadLLM-TG effect on the generated corpus with a BadNets backdoor (issue 11, deliverable 4).

Poisoned tiny-BERT victim: ASR > 90 %. After RL trigger generation and fine-tuning with true
labels: ASR at most half of before, CACC drop < 3 points. Measured (benchmarks/
badllm_tg_evidence.py, README table): ASR 100 -> 6.2 / 28.3 %, CACC 97.9 -> 99.6 / 96.7 -> 96.2
for seeds 0 / 1, so the margins hold across seeds.
"""

from __future__ import annotations

import pytest

from robust_lightning.lightning_modules.badllm_tg.pipeline import run_badllm_tg


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_defense_halves_badnets_asr_and_keeps_cacc(seed: int) -> None:
    result = run_badllm_tg("badnets", seed)
    before, after = result["before"], result["after"]
    assert before["asr"] > 0.9, result
    assert after["asr"] <= before["asr"] / 2, result
    assert before["cacc"] - after["cacc"] < 0.03, result
    pooled = " ".join(t for t, _ in result["pool"]).split()
    assert {"cf", "mn", "bb", "tq"} & set(pooled), "the generator must rediscover a BadNets trigger word"
