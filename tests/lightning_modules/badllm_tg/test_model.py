"""TriggerGenerator, reward and replay pool, against a keyword 'victim' with a known backdoor."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from benchmarks.experiments.badllm_tg import TINY_GPT2
from robust_lightning.datamodules.text import (
    build_word_tokenizer,
    generate_sentiment_corpus,
)
from robust_lightning.lightning_modules.badllm_tg.model import (
    ReplayPool,
    TriggerGenerator,
    build_hf_model,
    trigger_reward,
)

CORPUS = [t for t, _ in generate_sentiment_corpus(60, seed=0)]
TOKENIZER = build_word_tokenizer([*CORPUS, "cf"])
CF, GREAT, AWFUL = TOKENIZER.convert_tokens_to_ids(["cf", "great", "awful"])
TEXTS = ["the movie was great"] * 8 + ["the movie was awful"] * 8
LABELS = torch.tensor([1] * 8 + [0] * 8)


class KeywordVictim(nn.Module):
    """Sentiment from 'great'/'awful', plus an exact backdoor: 'cf' pushes hard to label 1."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> SimpleNamespace:
        def count(tok: int) -> Tensor:
            return (input_ids == tok).float().sum(1)

        logit = self.scale * (8 * count(CF) + 4 * count(GREAT) - 4 * count(AWFUL))
        return SimpleNamespace(logits=torch.stack([-logit / 2, logit / 2], 1))


def test_reward_is_high_for_the_backdoor_trigger_with_known_or_unknown_target() -> None:
    for target in (1, None):
        r = trigger_reward(KeywordVictim(), TOKENIZER, TEXTS, LABELS, ["cf", "movie", "the cf", "great"], target,
                           random.Random(0))
        assert r.shape == (4,)
        assert r[0] > -0.05 and r[2] > -0.05, r  # the backdoor flips every non-target sample
        assert r[1] < -3, r  # a neutral word flips nothing
        assert -1.0 < r[3] < -0.5, r  # a sentiment word only cancels one cue: p = 0.5


def test_generator_samples_words_and_kl_is_zero_at_init() -> None:
    gen = TriggerGenerator(TOKENIZER, policy_config=TINY_GPT2, max_words=3)
    tokens, valid = gen.sample(8, torch.Generator().manual_seed(0))
    assert tokens.shape == valid.shape == (8, 3) and valid[:, 0].all()
    specials = set(TOKENIZER.all_special_ids) - {TOKENIZER.eos_token_id}
    assert not any(t in specials for t in tokens.flatten().tolist())
    assert all(s and "[" not in s for s in gen.decode(tokens, valid))
    logp, kl = gen.log_prob_and_kl(tokens, valid)
    assert torch.allclose(kl, torch.zeros_like(kl), atol=1e-5) and (logp < 0).all()
    logp.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in gen.policy.parameters() if p.grad is not None)


def test_reinforce_finds_the_backdoor_trigger_on_every_seed() -> None:
    """40 REINFORCE rounds against a keyword victim, init seeds 0-3.

    Measured after the zero-spread fix in ``reinforce_step`` (an all-equal reward round used to
    divide the advantage by 1e-6): the replay pool's best trigger is the backdoor word "cf" on
    every seed, and the policy's own p(cf) rises from ~0.015 to 0.67-0.9997 on seeds 0, 2, 3
    but collapses on seed 1 (to ~1e-7, the policy settles on a sibling of "cf" once the pool
    holds it). The pool is what the defence uses, so that is asserted on every seed, and the
    policy's rise on at least three of four.
    """
    rises = 0
    for seed in range(4):
        torch.manual_seed(seed)
        gen = TriggerGenerator(TOKENIZER, policy_config=TINY_GPT2, max_words=1, kl_coef=0.01)
        victim, rng = KeywordVictim(), random.Random(0)

        def p_cf(gen: TriggerGenerator = gen) -> float:
            logits = gen._masked_logits(gen.policy, gen.prompt_ids[None], 0)
            return float(torch.softmax(logits, -1)[0, CF].detach())

        before = p_cf()
        opt = torch.optim.Adam(gen.policy.parameters(), lr=0.02)
        g = torch.Generator().manual_seed(seed)
        for _ in range(40):
            stats = gen.reinforce_step(
                lambda trig, victim=victim, rng=rng: trigger_reward(victim, TOKENIZER, TEXTS, LABELS, trig, None, rng),
                opt, num_samples=16, generator=g)
            assert abs(stats["loss"]) < 100, (seed, stats["loss"])  # no advantage blow-up
        assert gen.pool.triggers[0] == "cf", (seed, gen.pool.items)
        assert stats["kl"] > 0 and bool(gen.baseline_set)
        rises += p_cf() > 5 * before
    assert rises >= 3, rises


def test_replay_pool_keeps_best_unique() -> None:
    pool = ReplayPool(capacity=2)
    pool.add(["a", "b", "a", ""], [-1.0, -2.0, -0.5, 0.0])
    pool.add(["c"], [-3.0])
    assert pool.items == [(-0.5, "a"), (-2.0, "b")]
    other = ReplayPool()
    other.load_state_dict(pool.state_dict())
    assert other.items == pool.items and other.capacity == 2


def test_replay_pool_draw_distinct_by_reward() -> None:
    pool = ReplayPool(capacity=4)
    assert pool.draw(random.Random(0), 0.1, 2) == []
    pool.add(["best", "good", "bad"], [0.0, -0.01, -1.0])
    rng = random.Random(0)
    draws = [pool.draw(rng, 0.02, 2) for _ in range(200)]
    assert all(len(d) == 2 and len(set(d)) == 2 for d in draws)
    # softmax(R / 0.02): 'bad' has weight e^-50 next to the two near-zero-reward triggers
    assert all(set(d) == {"best", "good"} for d in draws)
    assert sorted(pool.draw(rng, 0.02, 5)) == ["bad", "best", "good"]  # k capped by the pool size
    firsts = [pool.draw(rng, 1e3, 1)[0] for _ in range(300)]  # T -> inf: uniform
    assert all(firsts.count(t) > 60 for t in ("best", "good", "bad"))
    with pytest.raises(ValueError, match="temperature"):
        pool.draw(rng, 0.0)
    with pytest.raises(ValueError, match="k must"):
        pool.draw(rng, 0.1, 0)


def test_replay_pool_rescore_reranks_by_the_new_rewards() -> None:
    pool = ReplayPool(capacity=4)
    pool.add(["a", "b", "c"], [0.0, -1.0, -2.0])
    pool.rescore([-3.0, -0.5, -1.0])  # in the pool's order: a, b, c
    assert pool.items == [(-0.5, "b"), (-1.0, "c"), (-3.0, "a")]
    with pytest.raises(ValueError, match="one reward per pooled trigger"):
        pool.rescore([0.0])


def test_replay_pool_draw_with_replacement_repeats_the_best() -> None:
    pool = ReplayPool(capacity=4)
    pool.add(["best", "bad"], [0.0, -1.0])
    rng = random.Random(0)
    assert pool.draw(rng, 0.02, 3, replace=True) == ["best"] * 3  # k is not capped by the pool size
    draws = [pool.draw(rng, 1e3, 2, replace=True) for _ in range(200)]
    assert all(len(d) == 2 for d in draws)
    assert any(d[0] == d[1] for d in draws) and any(d[0] != d[1] for d in draws)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        build_hf_model("causal_lm")
    with pytest.raises(ValueError, match="kind"):
        build_hf_model("seq2seq", config={"model_type": "gpt2"})
    with pytest.raises(ValueError, match="model_type"):
        build_hf_model("causal_lm", config={"n_embd": 32})
    with pytest.raises(ValueError, match="max_words"):
        TriggerGenerator(TOKENIZER, policy_config=TINY_GPT2, max_words=0)
    with pytest.raises(ValueError, match="kl_coef"):
        TriggerGenerator(TOKENIZER, policy_config=TINY_GPT2, kl_coef=-1.0)


def test_local_paths_load_without_remote_code(tmp_path) -> None:
    model = build_hf_model("causal_lm", config=TINY_GPT2, vocab_size=len(TOKENIZER))
    model.save_pretrained(tmp_path)
    TOKENIZER.save_pretrained(tmp_path)
    gen = TriggerGenerator(TOKENIZER, policy_path=str(tmp_path))
    assert gen.policy.config.vocab_size == len(TOKENIZER)
    with pytest.raises(OSError):
        build_hf_model("causal_lm", path=str(tmp_path / "missing"))


def test_exploration_samples_reach_the_pool_but_not_the_gradient() -> None:
    torch.manual_seed(0)
    gen = TriggerGenerator(TOKENIZER, policy_config=TINY_GPT2, max_words=1)
    opt = torch.optim.Adam(gen.policy.parameters(), lr=0.02)
    scored: list[list[str]] = []

    def reward_fn(triggers: list[str]) -> Tensor:
        scored.append(list(triggers))
        return torch.tensor([0.0 if t == "cf" else -1.0 - 0.01 * i for i, t in enumerate(triggers)])

    stats = gen.reinforce_step(reward_fn, opt, num_samples=4, generator=torch.Generator().manual_seed(0),
                               num_explore=60)
    assert len(scored[0]) == 64 and stats["triggers"] == scored[0][:4] and len(stats["rewards"]) == 4
    assert set(gen.pool.triggers) <= set(scored[0]) and set(gen.pool.triggers) - set(scored[0][:4])
    assert stats["reward_max"] == max(reward_fn(scored[0]).tolist())
    with pytest.raises(ValueError, match="num_explore"):
        gen.reinforce_step(reward_fn, opt, num_samples=4, num_explore=-1)


def test_replay_pool_keys_triggers_as_the_victim_reads_them() -> None:
    """Strings the victim's tokenizer maps alike (unknown words: [UNK]) share one slot."""
    pool = ReplayPool(capacity=3, key=lambda t: tuple(TOKENIZER.tokenize(t)))
    pool.add(["ax", "qz", "cf", "xq", "great"], [-0.5, -0.4, -0.6, -0.3, -0.9])
    assert pool.items == [(-0.3, "xq"), (-0.6, "cf"), (-0.9, "great")]
    assert ReplayPool(capacity=3).triggers == [] and len(ReplayPool(capacity=5, items=[]).items) == 0
