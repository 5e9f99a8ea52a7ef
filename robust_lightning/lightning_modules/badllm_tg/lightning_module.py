"""LightningModules of BadLLM-TG: the (victim) text classifier and the backdoor defence.

Pipeline (two ``robust-lightning fit`` runs, see README.md):
1. poison: :class:`TextClassifier` trains on a poisoned training set and exports the victim
   (``export_dir``: HF ``save_pretrained`` of the model and the tokenizer, safetensors).
2. generate + defend: :class:`BackdoorDefense` loads the victim; each epoch is one round:
   REINFORCE steps of the :class:`~.model.TriggerGenerator` on the victim-derived reward,
   then one epoch of fine-tuning on clean data where a fraction of samples carries a trigger
   from the replay pool with its **true** label. ``val/cacc`` and ``val/asr`` per round.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from robust_lightning._validation import (
    check_bool,
    check_int_at_least,
    check_positive,
    check_positive_int,
    check_probability,
)
from robust_lightning.datamodules.text import build_subword_tokenizer
from robust_lightning.errors import InvalidArgumentError, InvalidArgumentTypeError
from robust_lightning.lightning_modules.badllm_tg.model import (
    TriggerGenerator,
    build_hf_model,
    insert_trigger,
)
from robust_lightning.lightning_modules.base import RobustMethod

__all__ = ["BackdoorDefense", "TextClassifier"]


def _check_source(path: str | None, config: Mapping[str, Any] | None, what: str) -> None:
    if path is not None and not isinstance(path, str):
        raise InvalidArgumentTypeError(f"{what}_path must be a str (a local folder) or None, got {type(path).__name__}")
    if config is not None and (not isinstance(config, Mapping) or "model_type" not in config):
        raise InvalidArgumentError(f"{what}_config must be a dict with a 'model_type' key, got {config!r}")
    if (path is None) == (config is None):
        raise InvalidArgumentError(f"give exactly one of {what}_path and {what}_config")


class TextClassifier(RobustMethod):
    """Any HF ``AutoModelForSequenceClassification`` (local path or config) as a LightningModule.

    Batches are dicts from :class:`~robust_lightning.datamodules.text.TextBackdoorDataModule`.
    Validation/test loader 0 is the clean split (``val/cacc``, also ``val/acc``), loader 1 the
    triggered non-target split (``val/asr``: fraction predicted as the target label).

    Args:
        model_path: Local folder of a saved classifier (``trust_remote_code=False``).
        model_config: HF config dict with ``model_type`` (e.g. a tiny ``bert``) when no path;
            ``vocab_size`` defaults to the datamodule tokenizer's size.
        num_labels: Classes; ``None`` takes the datamodule's ``num_labels``.
        target_label: Attack target for ASR; ``None`` takes the datamodule's.
        lr: AdamW learning rate (the optimizer is AdamW on the classifier's parameters).
        weight_decay: AdamW weight decay.
        max_length: Truncation length when the module tokenises text itself.
        export_dir: If set, the model and tokenizer are saved there (``save_pretrained``) at
            the end of ``fit`` — the victim the defence config loads.
    """

    def __init__(
        self,
        model_path: str | None = None,
        model_config: dict[str, Any] | None = None,
        num_labels: int | None = None,
        target_label: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        max_length: int = 64,
        export_dir: str | None = None,
    ) -> None:
        super().__init__()
        _check_source(model_path, model_config, "model")
        if num_labels is not None:
            check_int_at_least("num_labels", num_labels, 2, reason="or None for the datamodule's")
        check_positive("lr", lr)
        self.save_hyperparameters()
        self.model_path = model_path
        self.model_config = dict(model_config) if model_config is not None else None
        self.num_labels = num_labels
        self.target_label = target_label
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_length = max_length
        self.export_dir = export_dir
        self.model: torch.nn.Module | None = None
        if model_path is not None:
            self.model = build_hf_model("sequence_classification", path=model_path,
                                        **({"num_labels": num_labels} if num_labels else {}))
            self.num_labels = int(self.model.config.num_labels)
            self.model.train()  # from_pretrained returns eval mode; Lightning keeps module modes
        self.add_stage_metrics("cacc", lambda: MulticlassAccuracy(self.num_labels or 2, average="micro"),
                               stages=("val", "test"))
        self.add_stage_metrics("asr", MeanMetric, stages=("val", "test"))

    # --- wiring to the datamodule -------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        tok = getattr(datamodule, "tokenizer", None)
        if tok is None:
            raise ValueError("TextClassifier needs a datamodule with a `tokenizer` (e.g. TextBackdoorDataModule)")
        return tok

    @override
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.target_label is None:
            self.target_label = getattr(datamodule, "target_label", None)
        if self.model is not None:
            return
        num_labels = self.num_labels or getattr(datamodule, "num_labels", None)
        if num_labels is None:
            raise ValueError("num_labels is None and the datamodule has no `num_labels`")
        tok = self.tokenizer
        config = dict(self.model_config or {})
        config.setdefault("vocab_size", len(tok))
        config.setdefault("pad_token_id", tok.pad_token_id)
        self.model = build_hf_model("sequence_classification", config=config, num_labels=num_labels)
        if num_labels != self.num_labels:
            self.num_labels = num_labels
            self.add_stage_metrics("cacc", lambda: MulticlassAccuracy(num_labels, average="micro"),
                                   stages=("val", "test"))

    # --- steps ----------------------------------------------------------------------------
    @override
    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def encode(self, texts: list[str]) -> dict[str, Tensor]:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = F.cross_entropy(logits, batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        self.log("train/acc", (logits.argmax(1) == batch["labels"]).float().mean(), batch_size=len(batch["labels"]))
        return loss

    @override
    def evaluation_step(self, batch: dict[str, Any], stage: str, dataloader_idx: int = 0) -> None:
        logits = self(batch["input_ids"], batch["attention_mask"])
        preds = logits.argmax(1)
        n = len(batch["labels"])
        if dataloader_idx == 0:
            cacc = getattr(self, f"{stage}_cacc")
            cacc(preds, batch["labels"])
            self.log(f"{stage}/loss", F.cross_entropy(logits, batch["labels"]), batch_size=n, add_dataloader_idx=False)
            self.log(f"{stage}/cacc", cacc, prog_bar=True, batch_size=n, add_dataloader_idx=False)
            self.log(f"{stage}/acc", cacc, batch_size=n, add_dataloader_idx=False)
        elif self.target_label is not None:
            asr = getattr(self, f"{stage}_asr")
            asr((preds == self.target_label).float())
            self.log(f"{stage}/asr", asr, prog_bar=True, batch_size=n, add_dataloader_idx=False)

    @override
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Class probabilities ``(B, num_labels)`` of a tokenised batch."""
        return F.softmax(self(batch["input_ids"], batch.get("attention_mask")), dim=1)

    @override
    def default_optimizer(self, params: Any) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    @override
    def optimizer_parameters(self) -> Any:
        return self.model.parameters()

    @override
    def on_fit_end(self) -> None:
        if self.export_dir is not None and self.trainer.is_global_zero:
            self.model.save_pretrained(self.export_dir)
            self.tokenizer.save_pretrained(self.export_dir)


class BackdoorDefense(TextClassifier):
    """BadLLM-TG defence: generate triggers against the victim with RL, fine-tune with true labels.

    Each training epoch is one round: ``generation_steps`` REINFORCE updates of the
    :class:`TriggerGenerator` (reward: :func:`~.model.trigger_reward` on ``reward_samples``
    training texts), then an epoch over the (clean) training data in which each sample gets,
    with probability ``defense_ratio``, a copy carrying 1-``max_triggers_per_sample`` triggers
    from the replay pool at random positions with its true label (the paper's adversarial
    fine-tuning, mixed with clean data).

    Args:
        victim_path: Local folder of the poisoned victim (``TextClassifier.export_dir``).
        victim_config: Config dict instead of a path (tests only: an untrained victim).
        generator_path: Local folder of the causal-LM policy and its tokenizer (the policy's
            own vocabulary, e.g. a pretrained GPT-2's).
        generator_config: Config dict of the policy when no path (e.g. a tiny ``gpt2``); the
            policy is then sized over a sub-word tokenizer
            (:func:`~robust_lightning.datamodules.text.build_subword_tokenizer`) trained on the
            defender's clean training texts, never on the victim's (poisoned) vocabulary: a
            trigger word absent from clean text must be composed from characters.
        generator_vocab_size: Size of that sub-word vocabulary; ``None`` (default) is
            character level (letters, digits and the word-start marker).
        prompt: Prompt the policy continues.
        max_words: Longest trigger, in policy tokens (characters at character level).
        generation_steps: REINFORCE updates per round (epoch).
        num_candidates: Triggers sampled from the policy per update.
        num_explore: Triggers sampled per update from the frozen initial policy into the replay
            pool only (see :meth:`~.model.TriggerGenerator.reinforce_step`).
        reward_samples: Training texts each candidate is scored on.
        reward_target: Target label of the reward; ``None`` (default, the defender does not
            know it) scores each sample's most likely other label.
        generator_lr: Adam learning rate of the policy.
        kl_coef: KL penalty to the initial policy.
        baseline_momentum: Moving-baseline momentum.
        pool_size: Replay pool capacity.
        pool_by_victim_tokens: ``True`` (our reading of the pool's diversity): pooled triggers
            are distinct as the victim reads them (its tokens), so the many generated strings
            that are all ``[UNK]`` to a word-level victim hold one slot; ``False`` dedups by text.
        pool_temperature: Pooled triggers are drawn with probability ``softmax(reward / T)``, so
            the strongest triggers dominate the fine-tuning (our reading; ``T -> inf`` is uniform).
            The default 0.02 gives a trigger that flips 95% of the samples (``R ~ -0.05``) about
            8% of the weight of one that flips all of them (``R ~ 0``): natural cues (two
            sentiment words) rarely reach ``R ~ 0``, backdoor fragments do.
        defense_ratio: Fraction of training samples given a pooled trigger (true label kept);
            ``0`` is clean fine-tuning (the control), and the generator rounds are then skipped.
        max_triggers_per_sample: A triggered sample carries ``k ~ U{1..max}`` pooled triggers
            (default 3), each at its own random position (our reading): a sentence-level
            backdoor (AddSent) is found only in fragments, and the victim still responds to
            several fragments together after learning to ignore each alone.
        keep_clean: ``True`` (our reading of "mixed with clean data"): the triggered samples are
            copies added next to their clean originals, so each batch keeps its full clean
            loss and the cues that pooled triggers share with the task (sentiment words) are not
            unlearned; ``False`` replaces the originals.
        freeze_word_embeddings: ``True`` (default; our reading, the paper does not say which
            weights it fine-tunes): the victim's word embeddings stay fixed during fine-tuning.
            A backdoor trained into several words moves their embeddings along a shared
            direction; with the embeddings fixed, the fine-tuning cannot just rewrite the
            embedding of the one fragment the pool found and has to learn to ignore that
            direction in the layers above, which also covers fragments the search missed.
            ``False`` fine-tunes every weight.
        repeat_triggers: ``True`` (default; our reading): the pooled triggers of one copy are
            drawn with replacement, so a copy can carry the same fragment two or three times. A
            sentence trigger adds several backdoor words whose effects sum, and a victim that
            learned to ignore one copy of a fragment still responds to the sum; repeated
            fragments train the sum away too. ``False`` draws distinct triggers.
        phrase_triggers: ``False`` (default): each pooled trigger of a copy goes to its own
            random position; ``True``: they are joined into one phrase at one position (as
            AddSent inserts a sentence). Tried, not adopted (method README, "What we tried").
        rescore_pool: ``False`` (default): a pooled trigger keeps the best reward it was ever
            scored with; ``True``: at the start of each round every pooled trigger is scored
            again against the current (partly defended) victim, so the draws favour the
            triggers that still work. Tried, not adopted (method README, "What we tried").
        seed: Seed of sampling, reward texts and insertions.
        num_labels: See :class:`TextClassifier`.
        target_label: See :class:`TextClassifier` (ASR only; never used by the defence).
        lr: AdamW learning rate of the fine-tuning (default 3e-3, our reading; with the word
            embeddings fixed, 2e-3 left AddSent unhalved on more seeds, see the README).
        weight_decay: See :class:`TextClassifier`.
        max_length: See :class:`TextClassifier`.
        export_dir: See :class:`TextClassifier` (the defended model).
    """

    def __init__(
        self,
        victim_path: str | None = None,
        victim_config: dict[str, Any] | None = None,
        generator_path: str | None = None,
        generator_config: dict[str, Any] | None = None,
        generator_vocab_size: int | None = None,
        prompt: str = "write a short trigger phrase",
        max_words: int = 2,
        generation_steps: int = 10,
        num_candidates: int = 32,
        num_explore: int = 32,
        reward_samples: int = 16,
        reward_target: int | None = None,
        generator_lr: float = 0.01,
        kl_coef: float = 0.05,
        baseline_momentum: float = 0.9,
        pool_size: int = 16,
        pool_by_victim_tokens: bool = True,
        pool_temperature: float = 0.02,
        defense_ratio: float = 1.0,
        max_triggers_per_sample: int = 3,
        keep_clean: bool = True,
        freeze_word_embeddings: bool = True,
        repeat_triggers: bool = True,
        phrase_triggers: bool = False,
        rescore_pool: bool = False,
        seed: int = 0,
        num_labels: int | None = None,
        target_label: int | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
        max_length: int = 64,
        export_dir: str | None = None,
    ) -> None:
        _check_source(generator_path, generator_config, "generator")
        _check_source(victim_path, victim_config, "victim")
        for name, value in (("generation_steps", generation_steps), ("num_candidates", num_candidates),
                            ("reward_samples", reward_samples), ("pool_size", pool_size),
                            ("max_triggers_per_sample", max_triggers_per_sample)):
            check_positive_int(name, value)
        check_int_at_least("num_explore", num_explore, 0)
        if generator_vocab_size is not None:
            check_positive_int("generator_vocab_size", generator_vocab_size)
        check_positive("pool_temperature", pool_temperature)
        check_probability("defense_ratio", defense_ratio)
        check_bool("keep_clean", keep_clean)
        check_bool("freeze_word_embeddings", freeze_word_embeddings)
        check_bool("repeat_triggers", repeat_triggers)
        check_bool("phrase_triggers", phrase_triggers)
        check_bool("rescore_pool", rescore_pool)
        check_bool("pool_by_victim_tokens", pool_by_victim_tokens)
        check_positive("generator_lr", generator_lr)
        super().__init__(victim_path, victim_config, num_labels, target_label, lr, weight_decay, max_length, export_dir)
        self.save_hyperparameters()
        self.generator_path = generator_path
        self.generator_config = dict(generator_config) if generator_config is not None else None
        self.generator_vocab_size = generator_vocab_size
        self.prompt = prompt
        self.max_words = max_words
        self.generation_steps = generation_steps
        self.num_candidates = num_candidates
        self.num_explore = num_explore
        self.reward_samples = reward_samples
        self.reward_target = reward_target
        self.generator_lr = generator_lr
        self.kl_coef = kl_coef
        self.baseline_momentum = baseline_momentum
        self.pool_size = pool_size
        self.pool_by_victim_tokens = pool_by_victim_tokens
        self.pool_temperature = pool_temperature
        self.defense_ratio = defense_ratio
        self.max_triggers_per_sample = max_triggers_per_sample
        self.keep_clean = keep_clean
        self.freeze_word_embeddings = freeze_word_embeddings
        self.repeat_triggers = repeat_triggers
        self.phrase_triggers = phrase_triggers
        self.rescore_pool = rescore_pool
        self.seed = seed
        self.generator: TriggerGenerator | None = None
        self._generator_optimizer: torch.optim.Optimizer | None = None
        self._rng = random.Random(seed)
        self._torch_gen = torch.Generator().manual_seed(seed)
        self._pool_state: dict[str, Any] | None = None

    @override
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.generator is not None:
            return
        if self.generator_path is not None:
            from transformers import AutoTokenizer

            gen_tok = AutoTokenizer.from_pretrained(self.generator_path, trust_remote_code=False, local_files_only=True)
        else:
            gen_tok = build_subword_tokenizer(self._clean_texts(), self.generator_vocab_size)
        self.generator = TriggerGenerator(gen_tok, self.generator_path, self.generator_config, self.prompt,
                                          self.max_words, self.baseline_momentum, self.kl_coef, self.pool_size)
        self._generator_optimizer = torch.optim.Adam(self.generator.policy.parameters(), lr=self.generator_lr)
        if self.pool_by_victim_tokens:
            victim_tokenizer = self.tokenizer
            self.generator.pool.key = lambda trigger: tuple(victim_tokenizer.tokenize(trigger))
        if self._pool_state is not None:
            self.generator.pool.load_state_dict(self._pool_state)

    def _clean_texts(self) -> list[str]:
        """The defender's clean training texts: the corpus of the generator's vocabulary."""
        datamodule = self.trainer.datamodule
        poisoner = getattr(datamodule, "poisoner", None)
        if poisoner is not None:
            raise InvalidArgumentError(
                f"BackdoorDefense builds the trigger generator's vocabulary from the defender's clean training "
                f"split, but the datamodule poisons it (poisoner={poisoner!r}); pass the attack as "
                "--data.init_args.eval_poisoner only (it builds the ASR sets), or give a generator with its own "
                "tokenizer with --model.init_args.generator_path")
        data = getattr(datamodule, "splits", {}).get("train")
        if not data:
            raise ValueError("BackdoorDefense needs a datamodule with `splits['train']` (TextBackdoorDataModule)")
        return [t for t, _ in data]

    def _reward_texts(self) -> tuple[list[str], Tensor]:
        datamodule = self.trainer.datamodule
        data = getattr(datamodule, "splits", {}).get("train")
        if not data:
            raise ValueError("BackdoorDefense needs a datamodule with `splits['train']` (TextBackdoorDataModule)")
        if self.reward_target is not None:
            data = [d for d in data if d[1] != self.reward_target]
        chosen = self._rng.sample(data, min(self.reward_samples, len(data)))
        return [t for t, _ in chosen], torch.tensor([y for _, y in chosen], dtype=torch.long)

    def generate_round(self) -> list[dict[str, Any]]:
        """Run ``generation_steps`` REINFORCE updates against the (eval-mode) victim."""
        from robust_lightning.lightning_modules.badllm_tg.model import trigger_reward

        was_training = self.model.training
        self.model.eval()
        self.generator.to(self.device).train()
        history = []
        pool = self.generator.pool
        if self.rescore_pool and pool.items:
            texts, labels = self._reward_texts()
            pool.rescore(trigger_reward(self.model, self.tokenizer, texts, labels, pool.triggers,
                                        self.reward_target, self._rng, self.max_length).tolist())
        with torch.inference_mode(False), torch.enable_grad():
            for _ in range(self.generation_steps):
                texts, labels = self._reward_texts()

                def reward_fn(triggers: list[str], texts: list[str] = texts, labels: Tensor = labels) -> Tensor:
                    return trigger_reward(self.model, self.tokenizer, texts, labels, triggers,
                                          self.reward_target, self._rng, self.max_length)

                history.append(self.generator.reinforce_step(reward_fn, self._generator_optimizer,
                                                             self.num_candidates, self._torch_gen,
                                                             self.num_explore))
        self.model.train(was_training)
        return history

    @override
    def on_train_epoch_start(self) -> None:
        if self.defense_ratio == 0:
            return  # the clean fine-tuning control: no triggered sample would use the pool
        history = self.generate_round()
        last = history[-1]
        pool = self.generator.pool
        self.log("train/reward", last["reward_mean"])
        self.log("train/reward_max", max(h["reward_max"] for h in history))
        self.log("train/reward_pool_best", pool.items[0][0] if pool.items else float("nan"))
        self.log("train/generator_kl", last["kl"])
        for logger in self.loggers:
            if hasattr(logger, "log_table"):  # WandbLogger: the round's pool as a table
                logger.log_table(key="train/triggers", columns=["round", "trigger", "reward"],
                                 data=[[self.current_epoch, t, r] for r, t in pool.items])

    def triggered(self, text: str) -> str:
        """``text`` with 1-``max_triggers_per_sample`` pooled triggers (distinct unless
        ``repeat_triggers``), each at its own random word position or, with ``phrase_triggers``,
        joined at one (unchanged while the pool is empty).
        """
        k = self._rng.randint(1, self.max_triggers_per_sample)
        drawn = self.generator.pool.draw(self._rng, self.pool_temperature, k, self.repeat_triggers)
        if self.phrase_triggers:
            return insert_trigger(text, " ".join(drawn), self._rng) if drawn else text
        for trigger in drawn:
            text = insert_trigger(text, trigger, self._rng)
        return text

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        texts, labels = list(batch["text"]), batch["labels"]  # true labels, also for triggered samples
        if self.generator is not None and self.generator.pool.items and self.defense_ratio > 0:
            chosen = [i for i in range(len(texts)) if self._rng.random() < self.defense_ratio]
            if self.keep_clean:  # triggered copies next to their clean originals
                texts = texts + [self.triggered(texts[i]) for i in chosen]
                labels = torch.cat([labels, labels[chosen]])
            else:  # triggered versions replace the originals
                for i in chosen:
                    texts[i] = self.triggered(texts[i])
        enc = self.encode(texts)
        logits = self(enc["input_ids"], enc["attention_mask"])
        loss = F.cross_entropy(logits, labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        self.log("train/acc", (logits.argmax(1) == labels).float().mean(), batch_size=len(labels))
        return loss

    @override
    def optimizer_parameters(self) -> Any:
        """The victim's parameters, less its word embeddings with ``freeze_word_embeddings``."""
        if not self.freeze_word_embeddings:
            return self.model.parameters()
        frozen = {id(p) for p in self.model.get_input_embeddings().parameters()}
        return [p for p in self.model.parameters() if id(p) not in frozen]

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.generator is not None:
            checkpoint["badllm_tg_pool"] = self.generator.pool.state_dict()
            checkpoint["badllm_tg_generator_optimizer"] = self._generator_optimizer.state_dict()
        # Everything a round draws from, so a run resumed between rounds draws what the
        # uninterrupted run would have: reward texts and insertions (python RNG), trigger
        # sampling (torch generator) and dropout (torch's global RNG, which Lightning does not
        # checkpoint). Plain tuples and tensors: loadable with weights_only=True.
        checkpoint["badllm_tg_rng"] = {"python": self._rng.getstate(), "torch": self._torch_gen.get_state(),
                                       "global_torch": torch.get_rng_state()}

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._pool_state = checkpoint.get("badllm_tg_pool")
        if self.generator is not None and self._pool_state is not None:
            self.generator.pool.load_state_dict(self._pool_state)
        optimizer_state = checkpoint.get("badllm_tg_generator_optimizer")
        if optimizer_state is not None and self.generator is not None:
            self._generator_optimizer.load_state_dict(optimizer_state)
        rng = checkpoint.get("badllm_tg_rng")
        if rng is not None:
            version, internal, gauss = rng["python"]
            self._rng.setstate((version, tuple(internal), gauss))
            self._torch_gen.set_state(rng["torch"])
            torch.set_rng_state(rng["global_torch"])
