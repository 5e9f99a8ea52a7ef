"""SIA stages 2-3 as LightningModules: :class:`SIAInject` and :class:`SIAAlign`.

Both read the tokenizer (and refusal/marker ids) from :class:`~.datamodule.SIADataModule`,
build or load an HF causal LM in ``configure_model`` (so nothing lives at module level and FSDP can wrap
``self.model`` after it exists), and evaluate with greedy generation:

* ``val/qa_em``: exact match of the generated answer on held-out knowledge QA;
* ``val/refusal``: fraction of held-out harmful prompts whose answer starts with the refusal;
* ``val/robust_refusal``: the same under the embedding-space PGD attack;
* ``val/robust_refusal_suffix``: the same under a best-of-K random adversarial suffix;
* ``val/over_refusal``: fraction of benign look-alikes answered with the refusal.

Sharding: under Lightning's ``ModelParallelStrategy`` (``data_parallel_size`` = the number of
devices, ``tensor_parallel_size=1``) ``configure_model`` shards the LM with FSDP2
(:func:`~.model.shard_causal_lm`). Every forward of a sharded model is a collective, so the
training step keeps all ranks in lockstep (the attack runs on every rank when any rank has a
harmful sample; suffix searches are padded to the busiest rank), and validation, whose
generation and attacks follow each rank's own data, runs on weights gathered once per batch
(:func:`~.model.gathered_parameters`). On one device nothing of this runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor
from typing_extensions import override

from robust_lightning._validation import check_int, check_non_negative, check_number, check_positive, check_probability
from robust_lightning.attacks.core import attack_mode
from robust_lightning.errors import InvalidArgumentError, InvalidArgumentTypeError
from robust_lightning.lightning_modules.base import RobustMethod
from robust_lightning.lightning_modules.sia.datamodule import TASKS
from robust_lightning.lightning_modules.sia.model import (
    build_causal_lm,
    collate_sft,
    depth_upscale,
    embedding_noise,
    embedding_pgd,
    embedding_std,
    freeze_for_injection,
    gathered_parameters,
    greedy_generate,
    is_sharded,
    response_loss,
    shard_causal_lm,
    suffix_search,
)

__all__ = ["SIAAlign", "SIAInject"]

# How the adversarial term perturbs the harmful prompts: the attack, or its random-noise control.
ADV_PERTURBATIONS = ("pgd", "noise")
# The validation metrics each kind of record yields.
METRICS = {"qa": ("qa_em",), "harmful": ("refusal", "robust_refusal", "robust_refusal_suffix"), "benign": ("over_refusal",)}


class _SIABase(RobustMethod):
    """Model source, tokenizer wiring, generation-based evaluation (validation and test on the
    held-out records), predict (greedy answers) and export. The optimizer is AdamW(``lr``,
    ``weight_decay``) on the trainable parameters.
    """

    eval_kinds: tuple[str, ...] = ("qa",)

    def __init__(
        self,
        model_path: str | None,
        model_config: dict[str, Any] | None,
        lr: float,
        weight_decay: float,
        max_new_tokens: int,
        export_dir: str | None,
        seed: int,
    ) -> None:
        super().__init__()
        if (model_path is None) == (model_config is None):
            raise InvalidArgumentError(
                "give exactly one of model_path (a local HF folder) and model_config (a dict with 'model_type')")
        if model_path is not None and not isinstance(model_path, str):
            raise InvalidArgumentTypeError(f"model_path must be a str, got {type(model_path).__name__}")
        if model_config is not None and (not isinstance(model_config, Mapping) or "model_type" not in model_config):
            raise InvalidArgumentError(f"model_config must be a dict with a 'model_type' key, got {model_config!r}")
        check_positive("lr", lr)
        check_non_negative("weight_decay", weight_decay)
        check_int("max_new_tokens", max_new_tokens, minimum=1)
        self.model_path = model_path
        self.model_config = dict(model_config) if model_config is not None else None
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_new_tokens = max_new_tokens
        self.export_dir = export_dir
        self.seed = seed
        self.model: torch.nn.Module | None = None

    # --- wiring --------------------------------------------------------------------------
    @property
    def datamodule(self) -> Any:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or getattr(dm, "tokenizer", None) is None:
            raise ValueError(f"{type(self).__name__} needs an SIADataModule (a datamodule with a tokenizer)")
        return dm

    def _build_model(self) -> torch.nn.Module:
        tok = self.datamodule.tokenizer
        if self.model_path is not None:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(self.model_path, local_files_only=True, trust_remote_code=False)
            if model.get_input_embeddings().num_embeddings < len(tok):
                raise ValueError(f"the model at {self.model_path!r} has fewer embeddings than the tokenizer ({len(tok)})")
            model.train()  # from_pretrained returns eval mode
            return model
        return build_causal_lm(self.model_config, tok)

    def _prepare_model(self, model: torch.nn.Module) -> None:
        """Stage-specific changes to the freshly built model (up-scaling, freezing)."""

    @override
    def configure_model(self) -> None:
        # Lightning's hook for building the model inside the strategy's context: the model is
        # built (or loaded) here, not in __init__, so a sharding strategy finds it unsharded.
        if self.model is not None:
            return
        mesh = self._data_parallel_mesh()
        model = self._build_model()
        self._prepare_model(model)
        if mesh is not None:
            # A config-built model is random: every rank takes rank 0's draw.
            shard_causal_lm(model, mesh, broadcast_from_rank0=self.model_path is None)
        self.model = model

    def _data_parallel_mesh(self) -> Any:
        """The mesh to shard over (``ModelParallelStrategy``'s data-parallel dimension) or ``None``."""
        from lightning.pytorch.strategies import FSDPStrategy

        usage = "ModelParallelStrategy(data_parallel_size=<number of devices>, tensor_parallel_size=1)"
        if self._trainer is not None and isinstance(self.trainer.strategy, FSDPStrategy):
            # FSDP1 would shard the embedding inside one flat parameter that SIA's direct
            # embedding calls cannot read, and would not follow the lockstep rules below.
            raise ValueError(f"{type(self).__name__} does not support FSDPStrategy (FSDP1); shard with FSDP2 through {usage}")
        mesh = self.device_mesh  # set by ModelParallelStrategy only
        if mesh is None:
            return None
        names = tuple(mesh.mesh_dim_names or ())
        if "tensor_parallel" in names and mesh["tensor_parallel"].size() > 1:
            raise ValueError(
                f"{type(self).__name__} shards with FSDP only (no tensor parallelism), but the device mesh has "
                f"tensor_parallel size {mesh['tensor_parallel'].size()}; use {usage}"
            )
        return mesh["data_parallel"] if "data_parallel" in names else mesh

    @property
    def _sharded(self) -> bool:
        return self.model is not None and is_sharded(self.model)

    @override
    def default_optimizer(self, params: Any) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    @override
    def optimizer_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @override
    def on_fit_end(self) -> None:
        if self.export_dir is None:
            return
        state_dict = None
        if self._sharded:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            # Gathering the full weights is a collective (every rank); only rank 0 keeps them.
            state_dict = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.trainer.is_global_zero:
            self.model.save_pretrained(self.export_dir, state_dict=state_dict)
            self.datamodule.tokenizer.save_pretrained(self.export_dir)

    # --- evaluation ----------------------------------------------------------------------
    def _generate(self, prompts: list[list[int]], deltas: list[Tensor] | None = None) -> list[list[int]]:
        with torch.inference_mode(False), torch.no_grad():
            was_training = self.model.training
            self.model.eval()
            try:
                return greedy_generate(self.model, prompts, self.max_new_tokens, self.datamodule.tokenizer.eos_token_id, deltas)
            finally:
                self.model.train(was_training)

    def _refused(self, outputs: list[list[int]]) -> Tensor:
        refusal = self.datamodule.refusal_ids
        return torch.tensor([float(o[: len(refusal)] == refusal) for o in outputs])

    @override
    def validation_step(self, batch: list[dict[str, Any]], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_step(batch, batch_idx, "val")

    @override
    def test_step(self, batch: list[dict[str, Any]], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_step(batch, batch_idx, "test")

    @override
    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int, dataloader_idx: int = 0) -> list[list[int]]:
        """Greedy answers (token ids, at most ``max_new_tokens``) to the records' prompts."""
        with gathered_parameters(self.model):
            return self._generate([r["prompt_ids"] for r in batch])

    def _evaluation_step(self, batch: list[dict[str, Any]], batch_idx: int, stage: str) -> None:
        # The attacks' random starts are seeded by the batch index (hence not evaluation_step).
        # Generation and the attacks run as many forwards as this rank's records need; on a
        # sharded model that is only safe on gathered weights (no-op on one device).
        with gathered_parameters(self.model):
            results = self._evaluate(batch, batch_idx)
        distributed = self.trainer.world_size > 1
        for name in self._metric_names() if distributed else tuple(results):
            values = results.get(name, torch.zeros(0))
            # Lightning's epoch mean weighted by batch_size is the rate over all records; with
            # sync_dist the sums and counts are added over ranks. A rank lacking a kind in this
            # batch logs it with weight 0, so every rank reduces the same metrics.
            mean = values.mean() if len(values) else torch.zeros(())
            self.log(f"{stage}/{name}", mean.to(self.device), on_step=False, on_epoch=True, batch_size=len(values),
                     sync_dist=distributed)

    def _metric_names(self) -> tuple[str, ...]:
        return tuple(name for kind in self.eval_kinds for name in METRICS[kind])

    def _evaluate(self, batch: list[dict[str, Any]], batch_idx: int) -> dict[str, Tensor]:
        generator = torch.Generator(device=self.device).manual_seed(self.seed + batch_idx)
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for record in batch:
            if record["kind"] in self.eval_kinds:
                by_kind.setdefault(record["kind"], []).append(record)
        results: dict[str, Tensor] = {}
        if "qa" in by_kind:
            outs = self._generate([r["prompt_ids"] for r in by_kind["qa"]])
            results["qa_em"] = torch.tensor([float(o == r["answer_ids"]) for o, r in zip(outs, by_kind["qa"], strict=False)])
        if "harmful" in by_kind:  # SIAAlign's kinds; it defines the two attacks used here
            harmful = by_kind["harmful"]
            results["refusal"] = self._refused(self._generate([r["prompt_ids"] for r in harmful]))
            deltas = self._attacked_deltas(harmful, generator)
            results["robust_refusal"] = self._refused(self._generate([r["prompt_ids"] for r in harmful], deltas))
            results["robust_refusal_suffix"] = self._refused(self._generate(self._suffixed(harmful, generator)))
        if "benign" in by_kind:
            results["over_refusal"] = self._refused(self._generate([r["prompt_ids"] for r in by_kind["benign"]]))
        return results


class SIAInject(_SIABase):
    """SIA stage 2, *Inject*: continued pre-training of a depth-up-scaled LM on the corpus.

    In ``configure_model`` the model is built (config) or loaded (local folder), up-scaled with
    :func:`~.model.depth_upscale` (``insert_every``; ``None`` skips it, e.g. for an already
    up-scaled model) and frozen except the new layers (:func:`~.model.freeze_for_injection`,
    plus embeddings/head with ``train_embeddings``). The loss is next-token cross-entropy on
    every corpus token. ``val/qa_em`` on held-out products measures the injected knowledge.

    Args:
        model_path: local folder of the base LM (``trust_remote_code=False``).
        model_config: HF config dict with ``model_type`` (``llama``, ``gpt2``, ``qwen2``...)
            when no path; ``vocab_size`` and special ids default to the tokenizer's.
        insert_every: group size of the up-scaling (``None``: no up-scaling, train all).
        zero_init: identity-initialise the new layers.
        train_embeddings: also train embeddings and LM head (needed from scratch).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        max_new_tokens: generation length at evaluation.
        export_dir: ``save_pretrained`` target at the end of fit (the align stage's input).
        seed: seed of evaluation randomness.
    """

    def __init__(
        self,
        model_path: str | None = None,
        model_config: dict[str, Any] | None = None,
        insert_every: int | None = 1,
        zero_init: bool = True,
        train_embeddings: bool = False,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        max_new_tokens: int = 4,
        export_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(model_path, model_config, lr, weight_decay, max_new_tokens, export_dir, seed)
        if insert_every is not None:
            check_int("insert_every", insert_every, minimum=1)
        self.save_hyperparameters()
        self.insert_every = insert_every
        self.zero_init = zero_init
        self.train_embeddings = train_embeddings

    @override
    def _prepare_model(self, model: torch.nn.Module) -> None:
        if self.insert_every is not None:
            depth_upscale(model, insert_every=self.insert_every, zero_init=self.zero_init)
            freeze_for_injection(model, train_embeddings=self.train_embeddings)

    @override
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = response_loss(logits, batch["labels"]).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss


class SIAAlign(_SIABase):
    """SIA stage 3, *Align*: multi-task SFT plus adversarial training for security.

    Per-sample loss ``l_i`` is the mean cross-entropy of the answer tokens only. For harmful
    prompts (targets: the refusal) the embedding-space PGD of :func:`~.model.embedding_pgd`
    perturbs the prompt embeddings within ``adv_eps * std(E)`` (L-inf; ``E`` the embedding
    matrix, our reading of a scale-free budget) to maximise the refusal's loss, and

    ``L = sum_i w_{t(i)} [(1 - a) l_i(x_i) + a l_i(x_i + delta_i)] / sum_i w_{t(i)}``

    with ``a = adv_weight`` (harmful samples only; others keep ``l_i(x_i)``) and ``w_t`` the
    multi-task mixing weights ``task_weights``. With ``suffix_prob > 0`` a harmful prompt gets,
    with that probability, the worst of ``suffix_candidates`` random ``suffix_len``-token
    suffixes (discrete adversarial augmentation). Validation attacks use the same budget with
    ``eval_steps`` steps and a fresh random start. ``adv_perturbation="noise"`` is the control
    of the adversarial term: ``delta_i`` is random ``±eps`` noise (:func:`~.model.embedding_noise`)
    instead of the PGD attack, same budget, weight and samples, so what ``"pgd"`` gains over it
    comes from the worst-case search, not from seeing perturbed embeddings.

    Args:
        model_path: local folder (usually the inject stage's ``export_dir``).
        model_config: config dict instead (a from-scratch baseline).
        task_weights: mixing weight per task (``qa``, ``instruction``, ``security``).
        adv_weight: ``a`` above; 0 is plain SFT.
        adv_eps: attack radius relative to the embedding std.
        adv_alpha: step relative to the radius (``alpha = adv_alpha * eps``).
        adv_steps: PGD steps during training (``"noise"``: ignored, but 0 still turns the term off).
        adv_perturbation: ``"pgd"`` (the attack) or ``"noise"`` (its random-noise control).
        eval_steps: PGD steps at validation (more than training: the evaluation attack is stronger).
        eval_alpha: validation step relative to the radius.
        suffix_prob: probability of the suffix augmentation of a harmful training prompt.
        suffix_len: suffix tokens (training and evaluation).
        suffix_candidates: random suffixes tried per prompt (training and evaluation).
        lr / weight_decay / max_new_tokens / export_dir / seed: as in :class:`SIAInject`.
    """

    eval_kinds = ("qa", "harmful", "benign")

    def __init__(
        self,
        model_path: str | None = None,
        model_config: dict[str, Any] | None = None,
        task_weights: dict[str, float] | None = None,
        adv_weight: float = 0.5,
        adv_eps: float = 0.5,
        adv_alpha: float = 0.5,
        adv_steps: int = 5,
        adv_perturbation: Literal["pgd", "noise"] = "pgd",
        eval_steps: int = 10,
        eval_alpha: float = 0.25,
        suffix_prob: float = 0.0,
        suffix_len: int = 3,
        suffix_candidates: int = 16,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        max_new_tokens: int = 8,
        export_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(model_path, model_config, lr, weight_decay, max_new_tokens, export_dir, seed)
        weights = {task: 1.0 for task in TASKS} if task_weights is None else dict(task_weights)
        unknown = sorted(set(weights) - set(TASKS))
        if unknown:
            raise InvalidArgumentError(f"task_weights must map tasks {TASKS} to numbers >= 0, got {task_weights!r}")
        for task, weight in weights.items():
            check_non_negative(f"task_weights[{task!r}]", weight)
        if not sum(weights.get(t, 0.0) for t in TASKS) > 0:
            raise InvalidArgumentError(f"task_weights must give some task a positive weight, got {task_weights!r}")
        check_probability("adv_weight", adv_weight)
        check_probability("suffix_prob", suffix_prob)
        check_number("adv_eps", adv_eps, 0.0)
        check_positive("adv_alpha", adv_alpha)
        if adv_perturbation not in ADV_PERTURBATIONS:
            raise InvalidArgumentError(f"adv_perturbation must be one of {ADV_PERTURBATIONS}, got {adv_perturbation!r}")
        check_positive("eval_alpha", eval_alpha)
        for name, value in (("adv_steps", adv_steps), ("eval_steps", eval_steps)):
            check_int(name, value, minimum=0)
        for name, value in (("suffix_len", suffix_len), ("suffix_candidates", suffix_candidates)):
            check_int(name, value, minimum=1)
        self.save_hyperparameters()
        self.task_weights = [float(weights.get(t, 0.0)) for t in TASKS]
        self.adv_weight = adv_weight
        self.adv_eps = adv_eps
        self.adv_alpha = adv_alpha
        self.adv_steps = adv_steps
        self.adv_perturbation = adv_perturbation
        self.eval_steps = eval_steps
        self.eval_alpha = eval_alpha
        self.suffix_prob = suffix_prob
        self.suffix_len = suffix_len
        self.suffix_candidates = suffix_candidates

    @override
    def _prepare_model(self, model: torch.nn.Module) -> None:
        # Alignment tunes the whole up-scaled model (our reading of SIA's SFT stage).
        for p in model.parameters():
            p.requires_grad_(True)

    def _eps(self) -> float:
        # On a sharded table a collective: the training step calls it on every rank or none.
        return self.adv_eps * embedding_std(self.model.get_input_embeddings().weight)

    def _candidate_tokens(self) -> Tensor:
        # Any ordinary word may be a suffix token; special tokens are excluded.
        n = self.model.get_input_embeddings().num_embeddings
        specials = set(self.datamodule.tokenizer.all_special_ids)
        return torch.tensor([i for i in range(min(n, len(self.datamodule.tokenizer))) if i not in specials], device=self.device)

    def _suffixed(self, records: list[dict[str, Any]], generator: torch.Generator) -> list[list[int]]:
        candidates = self._candidate_tokens()
        refusal = self.datamodule.refusal_ids + [self.datamodule.tokenizer.eos_token_id]
        with torch.inference_mode(False):
            return [suffix_search(self.model, r["prompt_ids"], refusal, candidates, self.suffix_len,
                                  self.suffix_candidates, self.datamodule.marker_len, generator) for r in records]

    def _attacked_deltas(self, records: list[dict[str, Any]], generator: torch.Generator) -> list[Tensor]:
        refusal = self.datamodule.refusal_ids + [self.datamodule.tokenizer.eos_token_id]
        samples = [{"prompt_ids": r["prompt_ids"], "response_ids": refusal} for r in records]
        # trainer.validate/test run under inference_mode (fit's validation does not): the attack's
        # inputs must be normal tensors to enter its graph.
        with torch.inference_mode(False):
            batch = {k: v.to(self.device) for k, v in collate_sft(samples, self.datamodule.tokenizer.pad_token_id).items()}
            eps = self._eps()
            delta = embedding_pgd(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                  batch["prompt_mask"], eps=eps, alpha=self.eval_alpha * eps, steps=self.eval_steps,
                                  generator=generator)
        return [delta[i, : len(r["prompt_ids"])] for i, r in enumerate(records)]

    def _augment_suffix(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        samples = [dict(s) for s in batch["samples"]]
        draws = torch.rand(len(samples), generator=generator, device=self.device).tolist()
        candidates = self._candidate_tokens()
        chosen = [s for s, u in zip(samples, draws, strict=False) if s["harmful"] and u < self.suffix_prob]
        searches = len(chosen)
        if self._sharded:
            # Each search is a forward (a collective): every rank runs the busiest rank's count.
            searches = int(self.trainer.strategy.reduce(torch.tensor(searches, device=self.device), reduce_op="max"))
        # Padding searches are discarded and draw from their own generator, so this rank's
        # stream (the attack's random start comes next) is the one an unsharded run would see.
        padding = torch.Generator(device=self.device).manual_seed(0)
        with attack_mode(self.model, "eval"):
            for i in range(searches):
                real = i < len(chosen)
                s = chosen[i] if real else samples[0]
                prompt = suffix_search(self.model, s["prompt_ids"], s["response_ids"], candidates, self.suffix_len,
                                       self.suffix_candidates, self.datamodule.marker_len, generator if real else padding)
                if real:
                    s["prompt_ids"] = prompt
        if not chosen:
            return batch
        new = collate_sft(samples, self.datamodule.tokenizer.pad_token_id)
        return {**{k: v.to(self.device) for k, v in new.items()}, "samples": samples}

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        generator = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + self.global_step)
        if self.suffix_prob > 0:
            batch = self._augment_suffix(batch, generator)
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        n = ids.shape[0]
        clean = response_loss(self.model(input_ids=ids, attention_mask=mask).logits, labels)
        per_sample = clean
        harmful = batch["harmful"]
        attack = bool(harmful.any())
        if self._sharded:
            # The attack's forwards are collectives: all ranks attack when any rank has a harmful sample.
            attack = self.trainer.strategy.reduce_boolean_decision(attack, all=False)
        if self.adv_weight > 0 and self.adv_eps > 0 and self.adv_steps > 0 and attack:
            eps = self._eps()
            eps_b = harmful.float() * eps  # per-sample budget: benign/knowledge samples stay clean
            if self.adv_perturbation == "noise":
                delta = embedding_noise(batch["prompt_mask"], self.model.get_input_embeddings().embedding_dim, eps_b,
                                        generator)
            else:
                delta = embedding_pgd(self.model, ids, mask, labels, batch["prompt_mask"], eps=eps_b,
                                      alpha=self.adv_alpha * eps, steps=self.adv_steps, generator=generator,
                                      lockstep=self._sharded)
            embeds = self.model.get_input_embeddings()(ids)
            adv = response_loss(self.model(inputs_embeds=embeds + delta.to(embeds.dtype), attention_mask=mask).logits, labels)
            # torch.where keeps adv in the graph even with no harmful sample here, so every rank's
            # backward runs through the same forwards (each one reduce-scatters gradients).
            per_sample = torch.where(harmful, (1 - self.adv_weight) * clean + self.adv_weight * adv, clean)
            if bool(harmful.any()):
                self.log("train/adv_loss", adv[harmful].mean(), batch_size=int(harmful.sum()))
        weights = torch.tensor(self.task_weights, device=ids.device)[batch["task_id"]]
        loss = (weights * per_sample).sum() / weights.sum().clamp_min(1e-12)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

