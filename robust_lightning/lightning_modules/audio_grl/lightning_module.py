"""AudioQualityGRL: audio quality assessment with domain-adversarial (gradient-reversal) heads.

"Robust Generative Audio Quality Assessment: Disentangling Quality from Spurious Correlations"
(code: 610494/domainGRL). A frozen front-end gives features ``x``; a shared encoder ``z = E(x)``
feeds a quality head ``q(z)`` (aspect means and, for the Gaussian head, a Cholesky factor) and
domain classifiers ``d_h(R_lambda(z))`` behind a gradient-reversal layer ``R_lambda``. The loss
is::

    L = L_quality(q(z), y) + w_domain * sum_h w_h * CE(d_h(R_lambda(z)), domain_h)

so the classifiers learn to recognise the domain while the encoder receives ``-lambda`` times
their gradient and unlearns the domain cue. Our reading of the released code
(``train_domainGRL.py``, ``_train_once``): one ``domain_weight`` both multiplies the domain loss
and is the GRL's lambda; ``domain_loss_weight=None`` keeps that coupling (the encoder then sees
``-domain_weight**2`` times the classifier's gradient).

Domain labels (the released ``AESFeatures`` ``domain_grouping_strategy`` values): ``corpus``
(source corpus, their "GT"), ``type`` (audio/music/speech, their "TYPE"), ``kmeans`` (k-means
clusters of time-pooled frozen features of the training set, L2 or cosine, their "k-means")
and ``random``. Several heads combine with per-head weights (``train_domainGRL_multi.py``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from robust_lightning._validation import (
    check_choice,
    check_int,
    check_int_at_least,
    check_non_negative,
    check_positive_int,
)
from robust_lightning.errors import InvalidArgumentError, InvalidArgumentTypeError
from robust_lightning.lightning_modules.audio_grl.metrics import (
    SystemLevelCorrelation,
    aspect_names,
    quality_metrics,
)
from robust_lightning.lightning_modules.audio_grl.model import (
    AudioQualityGRLNet,
    FeatureCache,
    Frontend,
    ModuleFrontend,
    gaussian_nll,
)
from robust_lightning.lightning_modules.base import RobustMethod
from robust_lightning.nn.grl import dann_lambda

__all__ = ["DOMAIN_STRATEGIES", "AudioQualityGRL"]

DOMAIN_STRATEGIES: tuple[str, ...] = ("corpus", "type", "kmeans", "random")
#: Default head names ("type" would shadow nn.Module.type inside a ModuleDict).
_DEFAULT_NAMES = {"corpus": "corpus", "type": "content_type", "kmeans": "kmeans", "random": "random"}
#: Content types in the datamodule's id order (audio, music, speech).
_NUM_CONTENT_TYPES = 3


def _check_domains(domains: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(domains, Mapping) or not isinstance(domains, Sequence):
        raise TypeError(f"domains must be a list of dicts, got {type(domains).__name__}")
    specs, names = [], set()
    for i, spec in enumerate(domains):
        if not isinstance(spec, Mapping):
            raise TypeError(f"domains[{i}] must be a dict with 'strategy', got {spec!r}")
        unknown = set(spec) - {"strategy", "name", "num_domains", "weight", "metric", "seed"}
        if unknown:
            raise ValueError(f"domains[{i}] has unknown keys {sorted(unknown)}")
        strategy = spec.get("strategy")
        if strategy not in DOMAIN_STRATEGIES:
            raise ValueError(f"domains[{i}].strategy must be one of {DOMAIN_STRATEGIES}, got {strategy!r}")
        name = str(spec.get("name") or _DEFAULT_NAMES[strategy])
        if not name.isidentifier() or hasattr(nn.ModuleDict(), name):
            raise ValueError(
                f"domains[{i}].name must be an identifier that is not an nn.Module attribute, got {name!r}"
            )
        if name in names:
            raise ValueError(f"domains[{i}].name {name!r} is used twice; give each head a distinct name")
        names.add(name)
        num = check_int_at_least(f"domains[{i}].num_domains",
                                 spec.get("num_domains", _NUM_CONTENT_TYPES if strategy == "type" else None),
                                 2, reason=f"the number of {strategy} classes")
        weight = check_non_negative(f"domains[{i}].weight", spec.get("weight", 1.0))
        metric = check_choice(f"domains[{i}].metric", spec.get("metric", "l2"), ("l2", "cosine"))
        seed = check_int(f"domains[{i}].seed", spec.get("seed", 0))
        specs.append({"strategy": strategy, "name": name, "num_domains": num, "weight": float(weight),
                      "metric": metric, "seed": seed})
    return specs


class AudioQualityGRL(RobustMethod):
    """Quality regression with domain heads behind a gradient-reversal layer (or the baseline).

    Batches are the dicts of :mod:`robust_lightning.datamodules.audio_quality`: either
    ``waveform`` ``(B, N)`` (features computed by ``frontend``, once per clip thanks to the
    feature cache) or precomputed ``features`` ``(B, C, T)`` (``frontend=None``), plus ``scores``
    ``(B, k)``, ``corpus``, ``content_type``, ``system`` ``(B,)`` and ``key``.

    Args:
        frontend: Frozen feature extractor (:class:`LogMelFrontend`,
            :class:`TorchaudioSSLFrontend`, :class:`HFWav2Vec2Frontend`, or any ``nn.Module``
            from waveforms ``(B, N)`` to features, e.g. ``torchaudio.transforms.MelSpectrogram``
            or a ``torchaudio.pipelines`` bundle's ``get_model()``, wrapped in
            :class:`ModuleFrontend`); ``None`` for precomputed features. Its weights are not part
            of the module's checkpoints (they are rebuilt from the config).
        feature_shape: ``(channels, frames)`` of one clip's features; ``None`` infers it in
            ``setup`` from the datamodule (``clip_samples`` through the front-end, or
            ``feature_shape`` for precomputed features).
        num_aspects: Scores per clip (4 Audiobox aesthetics axes).
        aspects: Names used in metric keys (``val/srcc/<aspect>``); ``None`` takes the
            datamodule's ``aspects``.
        domains: Domain heads, each a dict ``{strategy: corpus|type|kmeans|random,
            num_domains: int, weight: 1.0, name: <strategy> (``content_type`` for ``type``),
            metric: l2|cosine (kmeans),
            seed: 0 (kmeans/random)}``. ``type`` defaults to 3 classes.
        adversarial: ``True`` reverses the heads' gradient into the encoder (the method);
            ``False`` is the no-GRL baseline (heads train on detached features, so their
            accuracy is still measured).
        grl_lambda: Reversal scale (their ``domain_weight``; 0.01-0.5 in their scripts).
        domain_loss_weight: Multiplies the summed domain losses; ``None`` = ``grl_lambda``,
            as in the released code.
        grl_schedule: ``"constant"`` (paper) or ``"dann"`` (Ganin et al.'s ramp of
            :func:`~robust_lightning.nn.grl.dann_lambda`, scaled by ``grl_lambda``).
        head: ``"gaussian"`` (multivariate Gaussian NLL, Cholesky-parametrised) or ``"mse"``.
        nll_log_det_floor: Lower clamp of ``log det Sigma`` in the NLL, as in the released code
            (1e-6); ``None`` trains on the exact NLL (see :func:`gaussian_nll`).
        conv_channels, kernel_size, pool_size, dropout: Encoder shape (paper: (32, 32), 5, 5, 0.3).
        quality_hidden, domain_hidden: MLP widths (paper: (64, 32) both).
        cache_dir: Disk folder of the frozen-feature cache (``None``: memory only).
        cache_features: Cache features at all (turn off for waveform augmentation).
        optimizer: Optimizer factory (``None``: Adam, lr 1e-4, no weight decay, as the released
            code: ``configs/domainGRL.gin``, ``TrainingLoop``).
        lr_scheduler: Optional callable building a scheduler from the optimizer (the released
            code has none).
        scheduler_interval: Step the scheduler every ``"epoch"`` or ``"step"``.

    Raises:
        ValueError/TypeError: For bad arguments, at construction.
    """

    def __init__(
        self,
        frontend: Frontend | torch.nn.Module | None = None,
        feature_shape: Sequence[int] | None = None,
        num_aspects: int = 4,
        aspects: Sequence[str] | None = None,
        domains: Sequence[Mapping[str, Any]] = ({"strategy": "corpus", "num_domains": 2},),
        adversarial: bool = True,
        grl_lambda: float = 0.1,
        domain_loss_weight: float | None = None,
        grl_schedule: Literal["constant", "dann"] = "constant",
        head: Literal["gaussian", "mse"] = "gaussian",
        nll_log_det_floor: float | None = 1e-6,
        conv_channels: Sequence[int] = (32, 32),
        kernel_size: int = 5,
        pool_size: int = 5,
        dropout: float = 0.3,
        quality_hidden: Sequence[int] = (64, 32),
        domain_hidden: Sequence[int] = (64, 32),
        cache_dir: str | None = None,
        cache_features: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
    ) -> None:
        super().__init__(optimizer, lr_scheduler, scheduler_interval)
        if frontend is not None and not isinstance(frontend, Frontend):
            if not isinstance(frontend, torch.nn.Module):
                raise InvalidArgumentTypeError(
                    f"frontend must be a torch.nn.Module mapping waveforms (B, N) to features (a robust_lightning "
                    f"Frontend, a torchaudio transform or model), or None for precomputed features, got "
                    f"{type(frontend).__name__}"
                )
            frontend = ModuleFrontend(frontend)
        check_positive_int("num_aspects", num_aspects)
        if aspects is not None:
            aspects = aspect_names(list(aspects), num_aspects)
        check_choice("head", head, ("gaussian", "mse"))
        check_choice("grl_schedule", grl_schedule, ("constant", "dann"))
        for name, value in (("grl_lambda", grl_lambda), ("domain_loss_weight", domain_loss_weight)):
            if value is not None:
                check_non_negative(name, value)
        if not 0.0 <= dropout < 1.0:
            raise InvalidArgumentError(f"dropout must be in [0, 1), got {dropout!r}")
        if feature_shape is not None:
            feature_shape = [int(v) for v in feature_shape]
            if len(feature_shape) != 2 or min(feature_shape) < 1:
                raise ValueError(f"feature_shape must be (channels, frames) of positive ints, got {feature_shape!r}")
        self.domain_specs = _check_domains(domains)
        self.save_hyperparameters(ignore=["frontend", "optimizer", "lr_scheduler"])
        self.hparams["domains"] = self.domain_specs  # normalised, so checkpoints hold plain dicts
        # Kept out of the module tree: the frozen front-end (hundreds of millions of parameters
        # for XLS-R) is rebuilt from the config, not copied into every checkpoint.
        self.__dict__["frontend"] = frontend
        self.feature_cache = FeatureCache(cache_dir) if cache_features else None
        self.aspects = list(aspects) if aspects is not None else None
        self.net: AudioQualityGRLNet | None = None
        self._grl_lambda = float(grl_lambda)
        self._domain_loss_weight = float(grl_lambda if domain_loss_weight is None else domain_loss_weight)
        if feature_shape is not None:
            self._build(*feature_shape)

    # -- construction ---------------------------------------------------------------------
    def _build(self, channels: int, frames: int) -> None:
        hp = self.hparams
        self.hparams["feature_shape"] = [int(channels), int(frames)]
        self.net = AudioQualityGRLNet(
            channels, frames, hp.num_aspects, {s["name"]: s["num_domains"] for s in self.domain_specs},
            hp.conv_channels, hp.kernel_size, hp.pool_size, hp.dropout, hp.quality_hidden, hp.domain_hidden,
            hp.head, self._grl_lambda, hp.adversarial,
        )
        for spec in self.domain_specs:
            if spec["strategy"] == "kmeans":
                # Centres are fitted on the training set at the start of fit and checkpointed.
                self.register_buffer(f"kmeans_{spec['name']}", torch.zeros(spec["num_domains"], channels))
        self.register_buffer("kmeans_fitted", torch.zeros((), dtype=torch.bool))
        self.metrics = nn.ModuleDict({
            stage: quality_metrics(hp.num_aspects) for stage in ("val", "test")
        })
        self.system_metrics = nn.ModuleDict({
            stage: SystemLevelCorrelation(hp.num_aspects) for stage in ("val", "test")
        })
        # "train" is an nn.Module method name, so ModuleDict keys carry a suffix.
        self.domain_acc = nn.ModuleDict({
            f"{stage}_": nn.ModuleDict({
                s["name"]: MulticlassAccuracy(s["num_domains"], average="micro") for s in self.domain_specs
            }) for stage in ("train", "val", "test")
        })

    @override
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.aspects is None:
            names = getattr(datamodule, "aspects", None)
            self.aspects = aspect_names(list(names) if names is not None else None, self.hparams.num_aspects)
        if self.net is None:
            self._build(*self._infer_feature_shape(datamodule))
        elif datamodule is not None and hasattr(datamodule, "clip_samples"):
            expected = tuple(self.hparams.feature_shape)
            found = self._infer_feature_shape(datamodule) if (
                self.frontend is not None or getattr(datamodule, "feature_shape", None) is not None) else expected
            if tuple(found) != expected:
                raise ValueError(
                    f"feature_shape={list(expected)} but the data gives features of shape {list(found)} "
                    "(clip length, sample rate or front-end changed); set feature_shape to null to infer it"
                )
        self._check_data(datamodule)

    def _infer_feature_shape(self, datamodule: Any) -> tuple[int, int]:
        if self.frontend is None:
            shape = getattr(datamodule, "feature_shape", None)
            if shape is None:
                raise ValueError(
                    "AudioQualityGRL has no frontend, so it needs precomputed features: give feature_shape "
                    "or a datamodule with features_dir (its feature_shape is read after setup)"
                )
            return int(shape[0]), int(shape[1])
        samples = getattr(datamodule, "clip_samples", None)
        if samples is None:
            raise ValueError("cannot infer feature_shape: give feature_shape or use a datamodule with clip_samples")
        return self.frontend.output_shape(int(samples))

    def _check_data(self, datamodule: Any) -> None:
        if datamodule is None:
            return
        if self.frontend is not None and getattr(datamodule, "features_dir", None) is not None:
            raise ValueError("the datamodule yields precomputed features (features_dir) but the model has a "
                             "frontend; set model.frontend to null")
        for spec in self.domain_specs:
            available = {"corpus": getattr(datamodule, "num_corpora", None),
                         "type": getattr(datamodule, "num_content_types", None)}.get(spec["strategy"])
            if available is not None and available > spec["num_domains"]:
                raise ValueError(
                    f"domain head {spec['name']!r} has num_domains={spec['num_domains']} but the data has "
                    f"{available} {spec['strategy']} classes; raise num_domains"
                )

    @override
    def default_optimizer(self, params: Any) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=1e-4)

    @override
    def optimizer_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- features -------------------------------------------------------------------------
    def features(self, batch: Mapping[str, Any]) -> Tensor:
        """Frozen features ``(B, C, T)`` of a batch (precomputed, cached or computed now)."""
        if "features" in batch:
            if self.frontend is not None:
                raise ValueError("batch holds precomputed 'features' but the model has a frontend")
            return batch["features"].float()
        if self.frontend is None:
            raise ValueError("batch holds waveforms but the model has no frontend to compute features")
        waveform = batch["waveform"]
        reference = next(iter(self.frontend.buffers()), None)
        if reference is None:
            reference = next(iter(self.frontend.parameters()), None)
        if reference is not None and reference.device != waveform.device:
            self.frontend.to(waveform.device)
        self.frontend.eval()
        lengths = batch.get("length")
        if self.feature_cache is None:
            return self.frontend(waveform, lengths).float()
        return self.feature_cache(self.frontend, waveform, lengths, batch.get("key"))

    @override
    def forward(self, features: Tensor) -> dict[str, Any]:
        """Network outputs (``z``, ``mean``, ``scale_tril``, ``domain_logits``) for features."""
        if self.net is None:
            raise RuntimeError("AudioQualityGRL is not built yet: give feature_shape or run it through a Trainer")
        return self.net(features)

    # -- domain labels ----------------------------------------------------------------------
    def domain_labels(self, batch: Mapping[str, Any], features: Tensor) -> dict[str, Tensor]:
        """Labels of every head whose labels are known for this batch."""
        labels: dict[str, Tensor] = {}
        for spec in self.domain_specs:
            strategy, name = spec["strategy"], spec["name"]
            if strategy == "corpus":
                labels[name] = batch["corpus"].long()
            elif strategy == "type":
                labels[name] = batch["content_type"].long()
            elif strategy == "random":
                # Our reading of their 'random' grouping (a seeded permutation split into equal
                # parts): a seeded hash of the clip's id, stable across epochs, splits, ranks and
                # machines. ``clip_id`` is location-free; the cache ``key`` (absolute path, mtime)
                # is the fallback for batches from other datasets.
                keys = batch.get("clip_id", batch.get("key"))
                if keys is None:
                    continue
                labels[name] = torch.tensor(
                    [int(hashlib.sha1(f"{spec['seed']}|{k}".encode()).hexdigest(), 16) % spec["num_domains"]
                     for k in keys], device=features.device)
            elif bool(self.kmeans_fitted):
                labels[name] = self._kmeans_assign(spec, features)
        for name, value in labels.items():
            num = next(s["num_domains"] for s in self.domain_specs if s["name"] == name)
            if value.numel() and int(value.max()) >= num:
                raise ValueError(f"domain head {name!r}: label {int(value.max())} >= num_domains={num}")
        return labels

    @staticmethod
    def _pool(features: Tensor, metric: str) -> Tensor:
        pooled = features.float().mean(dim=2)  # time average, as their k-means input
        return F.normalize(pooled, dim=1) if metric == "cosine" else pooled

    def _kmeans_assign(self, spec: Mapping[str, Any], features: Tensor) -> Tensor:
        centres = getattr(self, f"kmeans_{spec['name']}")
        return torch.cdist(self._pool(features, spec["metric"]), centres.to(features.device)).argmin(dim=1)

    def fit_kmeans(self, dataloader: Any) -> None:
        """Fits every ``kmeans`` head's centres on time-pooled frozen features of ``dataloader``.

        sklearn ``KMeans(n_clusters=k, random_state=seed, n_init=10)`` as in their
        ``AESFeatures``; cosine runs it on L2-normalised pooled features.
        """
        specs = [s for s in self.domain_specs if s["strategy"] == "kmeans"]
        if not specs:
            return
        from sklearn.cluster import KMeans

        pooled: list[Tensor] = []
        with torch.no_grad():
            for batch in dataloader:
                batch = self.trainer.strategy.batch_to_device(batch) if self._trainer is not None else batch
                pooled.append(self.features(batch).float().mean(dim=2).cpu())
        data = torch.cat(pooled)
        for spec in specs:
            x = F.normalize(data, dim=1) if spec["metric"] == "cosine" else data
            if x.shape[0] < spec["num_domains"]:
                raise ValueError(f"kmeans head {spec['name']!r}: {x.shape[0]} clips for {spec['num_domains']} clusters")
            km = KMeans(n_clusters=spec["num_domains"], random_state=spec["seed"], n_init=10).fit(x.numpy())
            getattr(self, f"kmeans_{spec['name']}").copy_(torch.as_tensor(km.cluster_centers_, dtype=torch.float32))
        self.kmeans_fitted.fill_(True)

    @override
    def on_train_start(self) -> None:
        if any(s["strategy"] == "kmeans" for s in self.domain_specs) and not bool(self.kmeans_fitted):
            loader = self.trainer.train_dataloader
            if self.trainer.is_global_zero:
                self.fit_kmeans(loader)
            # Every rank uses rank 0's clusters (its own shard would give other centres).
            for spec in self.domain_specs:
                if spec["strategy"] == "kmeans":
                    name = f"kmeans_{spec['name']}"
                    getattr(self, name).copy_(self.trainer.strategy.broadcast(getattr(self, name), src=0))
            self.kmeans_fitted.fill_(True)

    # -- losses and steps -------------------------------------------------------------------
    def current_grl_lambda(self) -> float:
        if self.hparams.grl_schedule == "constant" or self._trainer is None:
            return self._grl_lambda
        total = self.trainer.estimated_stepping_batches
        progress = min(1.0, self.global_step / max(1, total)) if total and total != float("inf") else 1.0
        return self._grl_lambda * dann_lambda(progress)

    def quality_loss(self, out: Mapping[str, Any], target: Tensor) -> Tensor:
        if out["scale_tril"] is None:
            return F.mse_loss(out["mean"], target)
        return gaussian_nll(out["mean"], out["scale_tril"], target, self.hparams.nll_log_det_floor).mean()

    def _domain_loss(self, out: Mapping[str, Any], labels: Mapping[str, Tensor], stage: str) -> Tensor:
        batch_size = out["mean"].shape[0]
        total = out["mean"].new_zeros(())
        for spec in self.domain_specs:
            name = spec["name"]
            if name not in labels:
                continue
            logits = out["domain_logits"][name]
            loss = F.cross_entropy(logits, labels[name])
            total = total + spec["weight"] * loss
            accuracy = self.domain_acc[f"{stage}_"][name]
            accuracy(logits.detach(), labels[name])
            self.log(f"{stage}/domain_loss/{name}", loss.detach(), sync_dist=stage != "train", batch_size=batch_size)
            self.log(f"{stage}/domain_acc/{name}", accuracy, prog_bar=stage != "train", batch_size=batch_size)
        return total

    @override
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        assert self.net is not None
        features = self.features(batch)
        self.net.grl.lambda_ = self.current_grl_lambda()
        out = self(features)
        quality = self.quality_loss(out, batch["scores"].float())
        domain = self._domain_loss(out, self.domain_labels(batch, features), "train")
        loss = quality + self._domain_loss_weight * domain
        batch_size = features.shape[0]
        self.log("train/quality_loss", quality.detach(), batch_size=batch_size)
        self.log("train/grl_lambda", self.net.grl.lambda_, batch_size=batch_size)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
        return loss

    @override
    def evaluation_step(self, batch: Mapping[str, Any], stage: str, dataloader_idx: int = 0) -> None:
        features = self.features(batch)
        out = self(features)
        target = batch["scores"].float()
        self.log(f"{stage}/loss", self.quality_loss(out, target), sync_dist=True, batch_size=target.shape[0])
        self._domain_loss(out, self.domain_labels(batch, features), stage)
        self.metrics[stage].update(out["mean"], target)
        self.system_metrics[stage].update(out["mean"], target, batch["system"])

    def _log_epoch(self, stage: str) -> None:
        values = self.metrics[stage].compute()
        system = self.system_metrics[stage].compute()
        assert self.aspects is not None
        for level, results in (("", values), ("sys_", system)):
            for metric, per_aspect in results.items():
                per_aspect = per_aspect.reshape(-1)
                for aspect, value in zip(self.aspects, per_aspect, strict=False):
                    self.log(f"{stage}/{level}{metric}/{aspect}", value)
                self.log(f"{stage}/{level}{metric}", per_aspect.nanmean(), prog_bar=metric == "srcc" and not level)
        self.metrics[stage].reset()
        self.system_metrics[stage].reset()

    @override
    def on_evaluation_epoch_end(self, stage: str) -> None:
        if not self.metrics[stage]["mse"].update_count:  # nothing to report before the first batch
            return
        with warnings.catch_warnings():
            if stage == "val":
                # A 1-batch sanity check may see constant targets: NaN correlation is the answer.
                warnings.filterwarnings("ignore", message=".*constant.*")
            self._log_epoch(stage)

    @override
    def predict_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """``{"mean" (B, k), "std" (B, k) (Gaussian head only), "z" (B, D)}``."""
        out = self(self.features(batch))
        result = {"mean": out["mean"], "z": out["z"]}
        if out["scale_tril"] is not None:
            result["std"] = out["scale_tril"].pow(2).sum(-1).sqrt()  # sqrt(diag(L L^T))
        return result

    @torch.no_grad()
    def encode(self, dataloader: Any) -> dict[str, Tensor]:
        """Encoder outputs and labels of a whole dataloader, in eval mode (for the linear probe).

        Returns:
            ``{"z" (N, D), "mean" (N, k), "scores", "corpus", "content_type", "system"}`` on CPU.
        """
        assert self.net is not None
        was_training = self.training
        self.eval()
        device = next(self.net.parameters()).device
        parts: dict[str, list[Tensor]] = {k: [] for k in ("z", "mean", "scores", "corpus", "content_type", "system")}
        for batch in dataloader:
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            out = self(self.features(batch))
            for key in ("z", "mean"):
                parts[key].append(out[key].cpu())
            for key in ("scores", "corpus", "content_type", "system"):
                parts[key].append(batch[key].cpu())
        self.train(was_training)
        return {k: torch.cat(v) for k, v in parts.items()}
