"""BadLLM-TG building blocks (pure torch + transformers, no Lightning).

* :func:`build_hf_model`: an HF model from a local path (``trust_remote_code=False``, never a
  download) or from a config dict (tests, demo).
* :func:`trigger_reward`: the victim-derived reward of a candidate trigger.
* :class:`TriggerGenerator`: a causal-LM policy that writes trigger text after a prompt,
  trained by REINFORCE with a moving baseline and a KL penalty to the frozen initial policy,
  keeping the best triggers found (its own samples and exploration samples of the initial
  policy) in a replay pool.

Paper: Zhang et al., "BadLLM-TG: A Backdoor Defender powered by LLM Trigger Generator". The
authors' repository (bettyzry/BadLLM-TG) is not in our reference index, so every detail below
that is not in the issue's summary of the paper is marked "our reading".
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._extras import check_installed
from robust_lightning._validation import check_positive_int
from robust_lightning.errors import InvalidArgumentError, MissingFileError

# transformers is imported where models are built (its import takes seconds); a missing extra
# fails here, at import, with the install line.
check_installed("transformers", "text", feature="badllm_tg")

__all__ = ["ReplayPool", "TriggerGenerator", "build_hf_model", "insert_trigger", "trigger_reward"]

# Below this the rewards of a round count as equal and the advantage is left unscaled.
_MIN_REWARD_SPREAD = 1e-3


def build_hf_model(
    kind: str,
    path: str | None = None,
    config: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Load an HF model from a local folder or build it (randomly initialised) from a config.

    Args:
        kind: ``"sequence_classification"`` or ``"causal_lm"``.
        path: Local folder of a saved model; loaded with ``trust_remote_code=False`` and
            ``local_files_only=True`` (never a network call).
        config: Config kwargs with a ``model_type`` key (e.g. ``{"model_type": "bert",
            "hidden_size": 32, ...}``), used when ``path`` is ``None``.
        **overrides: Extra config values (``vocab_size``, ``num_labels``, token ids).

    Returns:
        The model.

    Raises:
        ValueError: If neither or both of ``path`` and ``config`` are given, or ``kind`` is unknown.
        MissingFileError: ``path`` is not a folder (huggingface_hub would otherwise read it as a
            hub repo id and fail with "Repo id must be in the form 'repo_name'").
    """
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
    )

    factories = {"sequence_classification": AutoModelForSequenceClassification, "causal_lm": AutoModelForCausalLM}
    if kind not in factories:
        raise ValueError(f"kind must be one of {tuple(factories)}, got {kind!r}")
    if (path is None) == (config is None):
        raise ValueError("give exactly one of path (a local model folder) and config (a dict with 'model_type')")
    factory = factories[kind]
    if path is not None:
        if not Path(path).expanduser().is_dir():
            raise MissingFileError(f"model folder {path} does not exist; expected a local folder written by "
                                   "save_pretrained (a TextClassifier's export_dir)")
        return factory.from_pretrained(path, trust_remote_code=False, local_files_only=True,
                                       **{k: v for k, v in overrides.items() if k == "num_labels"})
    if not isinstance(config, Mapping) or "model_type" not in config:
        raise ValueError(f"config must be a dict with a 'model_type' key, got {config!r}")
    kwargs = dict(config)
    model_type = kwargs.pop("model_type")
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return factory.from_config(AutoConfig.for_model(model_type, **kwargs), trust_remote_code=False)


def insert_trigger(text: str, trigger: str, rng: random.Random) -> str:
    """Insert ``trigger`` at a random word position (as BadNets/AddSent poisoners do)."""
    words = text.split()
    position = rng.randint(0, len(words))
    return " ".join(words[:position] + trigger.split() + words[position:])


@torch.no_grad()
def trigger_reward(
    victim: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Tensor,
    triggers: Sequence[str],
    target_label: int | None,
    rng: random.Random,
    max_length: int = 64,
) -> Tensor:
    """Reward of each trigger: how strongly it pushes samples to the (other) target label.

    The paper's reward is low cross-entropy towards the target label of triggered non-target
    samples; we use its negative, the mean target log-probability,
    ``R(t) = 1/N sum_i log p_victim(y_target | insert(x_i, t))`` (our reading of "low CE = high
    reward"). With ``target_label=None`` (the defender does not know it; our reading) the
    target of sample ``i`` is its most likely label other than ``y_i``.

    Args:
        victim: Sequence classifier (HF, returns ``.logits``); run in its current mode.
        tokenizer: The victim's tokenizer.
        texts: Clean samples (those labelled with the target are ignored).
        labels: Their true labels ``(N,)``.
        triggers: Candidate trigger strings ``(K,)``.
        target_label: Attack target, or ``None``.
        rng: Source of the insertion positions.
        max_length: Truncation length.

    Returns:
        Rewards ``(K,)`` (float32, on the victim's device), all ``<= 0``.
    """
    device = next(victim.parameters()).device
    batch = [insert_trigger(t, trig, rng) for trig in triggers for t in texts]
    enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
    logp = F.log_softmax(victim(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.float(), -1)
    logp = logp.view(len(triggers), len(texts), -1)
    y = labels.to(device).view(1, -1).expand(len(triggers), -1)
    if target_label is not None:
        keep = (y != target_label).float()
        return (logp[..., target_label] * keep).sum(1) / keep.sum(1).clamp_min(1.0)
    # Unknown target: score every label c as the candidate target on the samples not labelled c
    # and keep the best, R(t) = max_c mean_{i: y_i != c} log p(c | x_i + t) (a trigger flips
    # every class to the target; a sentiment word only flips the opposite class part-way).
    keep = (y.unsqueeze(-1) != torch.arange(logp.shape[-1], device=device)).float()
    per_class = (logp * keep).sum(1) / keep.sum(1).clamp_min(1.0)
    return per_class.amax(-1)


@dataclass
class ReplayPool:
    """The best triggers seen so far, one per key, highest reward first.

    Args:
        capacity: Number of triggers kept.
        key: What makes two triggers the same; ``None`` is their text. The defence keys them
            by the victim's tokens, so strings the victim reads alike (every unknown word is
            ``[UNK]`` to a word-level victim) hold one slot, not the whole pool.
    """

    capacity: int = 8
    items: list[tuple[float, str]] = field(default_factory=list)
    key: Callable[[str], Hashable] | None = field(default=None, repr=False, compare=False)

    def add(self, triggers: Sequence[str], rewards: Sequence[float]) -> None:
        """Keep, per key, the trigger with the highest reward; then the ``capacity`` best."""
        key = self.key if self.key is not None else (lambda t: t)
        best = {key(t): (r, t) for r, t in self.items}
        for t, r in zip(triggers, rewards, strict=False):
            if t.strip():
                k = key(t)
                if k not in best or float(r) > best[k][0]:
                    best[k] = (float(r), t)
        self.items = sorted(best.values(), reverse=True)[: self.capacity]

    def draw(self, rng: random.Random, temperature: float, k: int = 1, replace: bool = False) -> list[str]:
        """Up to ``k`` pooled triggers, each drawn with probability ``softmax(reward / T)``.

        Drawn one by one, by default without replacement (renormalised over the rest), so one
        sample can carry several different fragments of a trigger that the pool only holds in
        parts; with ``replace=True`` a trigger can be drawn again, so one sample can also carry
        the same fragment several times.

        Args:
            rng: Source of the draws.
            temperature: ``T > 0``; small values concentrate the draws on the best triggers.
            k: Number of triggers (fewer if the pool is smaller and ``replace`` is off).
            replace: Draw with replacement.

        Returns:
            The drawn triggers (empty if the pool is empty).
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        check_positive_int("k", k)
        rest = list(self.items)
        out = []
        while rest and len(out) < k:
            top = max(r for r, _ in rest)
            # Shifted by the best remaining reward: that weight is 1, so the total never underflows.
            weights = [math.exp((r - top) / temperature) for r, _ in rest]
            index = rng.choices(range(len(rest)), weights)[0]
            out.append(rest[index][1] if replace else rest.pop(index)[1])
        return out

    def rescore(self, rewards: Sequence[float]) -> None:
        """Replace the pooled rewards (one per item, in order) with ``rewards`` and re-rank.

        Raises:
            ValueError: ``rewards`` does not have one value per pooled trigger.
        """
        if len(rewards) != len(self.items):
            raise ValueError(f"rescore needs one reward per pooled trigger ({len(self.items)}), got {len(rewards)}")
        self.items = sorted(((float(r), t) for r, (_, t) in zip(rewards, self.items, strict=True)), reverse=True)

    @property
    def triggers(self) -> list[str]:
        return [t for _, t in self.items]

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "rewards": [r for r, _ in self.items], "triggers": self.triggers}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self.items = list(zip(state["rewards"], state["triggers"], strict=False))


class TriggerGenerator(nn.Module):
    """A causal-LM policy that writes trigger text after a prompt (BadLLM-TG's generator).

    The paper prompts an LLM to propose trigger transformations and improves it over rounds
    with prompt-driven RL. Here the policy ``pi_theta`` is any HF causal LM (local path or
    config) trained with REINFORCE (Williams 1992):
    ``L = -mean_k (R_k - b) / s * log pi_theta(t_k | prompt) + beta * KL(pi_theta || pi_0)``,
    ``b <- m b + (1 - m) mean_k R_k`` (moving baseline), ``s`` the batch reward std, and the KL
    summed exactly over the vocabulary at each generated position against the frozen initial
    policy ``pi_0`` (keeps the generator near its prior, as RLHF-style fine-tuning does).
    Our reading: a trigger is 1-``max_words`` policy tokens ending at ``eos`` (characters with
    the defence's character-level vocabulary, decoded to words by the policy's tokenizer and
    re-tokenised by the victim's); special tokens are never emitted; the trigger is inserted at
    a random word position (the transformation of BadNets/AddSent-style backdoors).

    Args:
        tokenizer: The policy's tokenizer (needs ``eos_token_id``).
        policy_path: Local folder of a causal LM (``trust_remote_code=False``).
        policy_config: Config dict with ``model_type`` (e.g. a tiny ``gpt2``) when no path.
        prompt: The instruction the policy continues.
        max_words: Longest trigger in tokens.
        baseline_momentum: ``m`` of the moving baseline.
        kl_coef: ``beta``.
        pool_size: Replay pool capacity.
    """

    def __init__(
        self,
        tokenizer: Any,
        policy_path: str | None = None,
        policy_config: Mapping[str, Any] | None = None,
        prompt: str = "write a short trigger phrase :",
        max_words: int = 3,
        baseline_momentum: float = 0.9,
        kl_coef: float = 0.05,
        pool_size: int = 8,
    ) -> None:
        super().__init__()
        if tokenizer is None or getattr(tokenizer, "eos_token_id", None) is None:
            raise InvalidArgumentError(
                f"the trigger generator's tokenizer ({type(tokenizer).__name__}) has no eos token, and a generated "
                "trigger ends at eos; BERT-style tokenizers have [SEP] but no eos: use a causal-LM tokenizer "
                "(e.g. GPT-2's) or one with an eos_token")
        check_positive_int("max_words", max_words)
        if not 0.0 <= baseline_momentum < 1.0:
            raise ValueError(f"baseline_momentum must be in [0, 1), got {baseline_momentum!r}")
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef!r}")
        self.tokenizer = tokenizer
        ids = {k: getattr(tokenizer, f"{k}_token_id", None) for k in ("bos", "eos", "pad")}
        self.policy = build_hf_model("causal_lm", policy_path, policy_config,
                                     vocab_size=None if policy_path else len(tokenizer),
                                     bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])
        # pi_0: frozen copy of the initial policy for the KL penalty.
        self.reference = copy.deepcopy(self.policy).requires_grad_(False).eval()
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if ids["bos"] is not None:
            prompt_ids = [ids["bos"], *prompt_ids]
        self.register_buffer("prompt_ids", torch.tensor(prompt_ids, dtype=torch.long), persistent=False)
        vocab = self.policy.get_output_embeddings().weight.shape[0]
        banned = torch.zeros(vocab, dtype=torch.bool)
        for tok_id in tokenizer.all_special_ids:
            if tok_id < vocab and tok_id != ids["eos"]:
                banned[tok_id] = True
        self.register_buffer("banned", banned, persistent=False)
        self.eos_id = int(ids["eos"])
        self.max_words = max_words
        self.baseline_momentum = baseline_momentum
        self.kl_coef = kl_coef
        self.register_buffer("baseline", torch.zeros(()))
        self.register_buffer("baseline_set", torch.zeros((), dtype=torch.bool))
        self.pool = ReplayPool(pool_size)
        self.train()

    @override
    def train(self, mode: bool = True) -> TriggerGenerator:
        """Dropout stays off in both policies (as RLHF trainers do): with it, sampling, the
        policy-gradient log-probabilities and the KL would each see a different network.
        """
        super().train(mode)
        self.policy.eval()
        self.reference.eval()
        return self

    def _masked_logits(self, model: nn.Module, seqs: Tensor, step: int) -> Tensor:
        logits = model(input_ids=seqs).logits[:, -1].float()
        mask = self.banned.clone()
        if step == 0:
            mask[self.eos_id] = True  # at least one word
        return logits.masked_fill(mask, float("-inf"))

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None,
               from_prior: bool = False) -> tuple[Tensor, Tensor]:
        """Sample ``num`` triggers; returns token ids ``(num, max_words)`` and a validity mask.

        ``from_prior=True`` samples the frozen initial policy ``pi_0`` instead of ``pi_theta``.
        """
        model = self.reference if from_prior else self.policy
        device = self.prompt_ids.device
        seqs = self.prompt_ids.unsqueeze(0).expand(num, -1)
        alive = torch.ones(num, dtype=torch.bool, device=device)
        tokens, valid = [], []
        for step in range(self.max_words):
            probs = F.softmax(self._masked_logits(model, seqs, step), -1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
            valid.append(alive.clone())
            tokens.append(nxt)
            alive = alive & (nxt != self.eos_id)
            seqs = torch.cat([seqs, nxt.unsqueeze(1)], 1)
        return torch.stack(tokens, 1), torch.stack(valid, 1)

    def decode(self, tokens: Tensor, valid: Tensor) -> list[str]:
        """Trigger strings (words before ``eos``)."""
        out = []
        for row, ok in zip(tokens.tolist(), valid.tolist(), strict=False):
            words = [t for t, v in zip(row, ok, strict=False) if v and t != self.eos_id]
            out.append(self.tokenizer.decode(words, skip_special_tokens=True).strip())
        return out

    def log_prob_and_kl(self, tokens: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """``log pi_theta(t)`` and ``sum_positions KL(pi_theta || pi_0)`` per trigger (with grad)."""
        num = tokens.shape[0]
        seqs = torch.cat([self.prompt_ids.unsqueeze(0).expand(num, -1), tokens], 1)
        start = self.prompt_ids.numel() - 1
        logits = self.policy(input_ids=seqs).logits[:, start:start + tokens.shape[1]].float()
        with torch.no_grad():
            ref_logits = self.reference(input_ids=seqs).logits[:, start:start + tokens.shape[1]].float()
        mask = self.banned.view(1, 1, -1).expand_as(logits).clone()
        mask[:, 0, self.eos_id] = True
        # A large finite negative instead of -inf: exp(-inf) * (-inf - -inf) has a NaN gradient.
        logp = F.log_softmax(logits.masked_fill(mask, -1e4), -1)
        ref_logp = F.log_softmax(ref_logits.masked_fill(mask, -1e4), -1)
        token_logp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        p = logp.exp()
        kl = (p * (logp - ref_logp)).sum(-1)
        valid = valid.float()
        return (token_logp * valid).sum(1), (kl * valid).sum(1)

    def reinforce_step(
        self,
        reward_fn: Any,
        optimizer: torch.optim.Optimizer,
        num_samples: int = 16,
        generator: torch.Generator | None = None,
        num_explore: int = 0,
    ) -> dict[str, Any]:
        """One REINFORCE round: sample, score with ``reward_fn(triggers) -> (K,)``, update, pool.

        Args:
            reward_fn: Rewards ``(K,)`` of a list of ``K`` trigger strings.
            optimizer: Optimizer of ``policy``.
            num_samples: Triggers sampled from the policy (the policy-gradient batch).
            generator: Source of the sampling.
            num_explore: Extra triggers sampled from the frozen initial policy ``pi_0`` and
                scored into the replay pool only (no gradient: they are off-policy). Once the
                policy concentrates on the first trigger it finds, these keep the search over
                the whole prior, so the pool can hold several different triggers (our reading
                of the pool's diversity).

        Returns:
            ``{"reward_mean", "reward_max", "kl", "loss", "triggers", "rewards"}`` of the
            policy's samples (``reward_max`` and the pool also count the exploration samples).
        """
        if isinstance(num_explore, bool) or not isinstance(num_explore, int) or num_explore < 0:
            raise ValueError(f"num_explore must be an int >= 0, got {num_explore!r}")
        tokens, valid = self.sample(num_samples, generator)
        triggers = self.decode(tokens, valid)
        explore: list[str] = []
        if num_explore:
            explore = self.decode(*self.sample(num_explore, generator, from_prior=True))
        all_rewards = reward_fn(triggers + explore).detach().float().to(self.baseline.device)
        rewards = all_rewards[:num_samples]
        if not bool(self.baseline_set):
            self.baseline.copy_(rewards.mean())
            self.baseline_set.fill_(True)
        advantage = rewards - self.baseline
        spread = rewards.std() if num_samples > 1 else rewards.new_zeros(())
        # Scale by the reward spread only where there is one: when every sample gets the same
        # reward, dividing by std + 1e-6 blew a baseline offset up a million-fold (loss -8.6e5).
        if float(spread) > _MIN_REWARD_SPREAD:
            advantage = advantage / spread
        self.baseline.mul_(self.baseline_momentum).add_((1 - self.baseline_momentum) * rewards.mean())
        logp, kl = self.log_prob_and_kl(tokens, valid)
        loss = -(advantage * logp).mean() + self.kl_coef * kl.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.pool.add(triggers + explore, all_rewards.tolist())
        return {"reward_mean": float(rewards.mean()), "reward_max": float(all_rewards.max()),
                "kl": float(kl.mean().detach()),
                "loss": float(loss.detach()), "triggers": triggers, "rewards": rewards.tolist()}
