"""Quality-assessment metrics: MSE, LCC (Pearson) and SRCC (Spearman) per aspect, at utterance
and system level, plus the post-hoc linear domain probe.

The released code (610494/domainGRL, ``train_domainGRL.py``, ``_evaluate``) reports MSE, PCC and
SRCC per aspect over the whole split and selects the checkpoint on the dev SRCC of production
quality. System level (the VoiceMOS/AudioMOS convention): predictions and targets are first
averaged per system, then correlated. Utterance-level values come from torchmetrics; the
system-level metric keeps ``cat`` states so DDP ranks are gathered before grouping.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.functional import mean_squared_error, pearson_corrcoef, spearman_corrcoef
from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef, SpearmanCorrCoef
from torchmetrics.utilities import dim_zero_cat
from typing_extensions import override

__all__ = ["SystemLevelCorrelation", "domain_probe_accuracy", "quality_metrics"]


def quality_metrics(num_aspects: int) -> MetricCollection:
    """Utterance-level ``mse``, ``lcc``, ``srcc`` (each ``(num_aspects,)``) as a collection."""
    return MetricCollection({
        "mse": MeanSquaredError(num_outputs=num_aspects),
        "lcc": PearsonCorrCoef(num_outputs=num_aspects),
        "srcc": SpearmanCorrCoef(num_outputs=num_aspects),
    })


class SystemLevelCorrelation(Metric):
    """MSE, LCC and SRCC of per-system mean predictions against per-system mean targets.

    ``update(preds (B, k), target (B, k), system (B,) int64)``; ``compute()`` returns
    ``{"mse", "lcc", "srcc"}`` each ``(k,)``, NaN where fewer than 2 systems were seen.
    """

    full_state_update = False

    def __init__(self, num_aspects: int) -> None:
        super().__init__()
        self.num_aspects = num_aspects
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("system", default=[], dist_reduce_fx="cat")

    @override
    def update(self, preds: Tensor, target: Tensor, system: Tensor) -> None:  # type: ignore[override]
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().float())
        self.system.append(system.detach().long())

    @override
    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        preds, target, system = (dim_zero_cat(s) for s in (self.preds, self.target, self.system))
        ids, inverse = torch.unique(system, return_inverse=True)
        if ids.numel() < 2:
            nan = torch.full((self.num_aspects,), float("nan"), device=preds.device)
            return {"mse": nan, "lcc": nan.clone(), "srcc": nan.clone()}
        counts = torch.bincount(inverse, minlength=ids.numel()).float().unsqueeze(1)
        index = inverse.unsqueeze(1).expand_as(preds)
        sums = torch.zeros(ids.numel(), preds.shape[1], device=preds.device)
        mean_preds = sums.scatter_add(0, index, preds) / counts
        mean_target = sums.scatter_add(0, index, target) / counts
        return {
            "mse": mean_squared_error(mean_preds, mean_target, num_outputs=self.num_aspects),
            "lcc": pearson_corrcoef(mean_preds, mean_target),
            "srcc": spearman_corrcoef(mean_preds, mean_target),
        }


def domain_probe_accuracy(features: Tensor | np.ndarray, labels: Tensor | np.ndarray, folds: int = 5,
                          seed: int = 0) -> float:
    """Post-hoc linear probe: cross-validated accuracy of a logistic regression predicting the
    domain from (frozen) encoder features.

    Run it on a split where the domain is independent of quality (the generated corpus's test
    split): there, a probe can only read the domain from features that carry the domain itself,
    not from quality information that happens to correlate with it.

    Args:
        features: ``(N, D)`` encoder outputs.
        labels: ``(N,)`` integer domain labels.
        folds: Stratified cross-validation folds.
        seed: Fold shuffling seed.

    Returns:
        Mean held-out accuracy over the folds.

    Raises:
        ValueError: If shapes disagree or a class has fewer than ``folds`` members.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features must be (N, D) and labels (N,), got {x.shape} and {y.shape}")
    _, counts = np.unique(y, return_counts=True)
    if counts.size < 2 or counts.min() < folds:
        raise ValueError(f"every domain needs at least folds={folds} samples, got counts {counts.tolist()}")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(probe, x, y, cv=splits)))


def aspect_names(names: Sequence[str] | None, num_aspects: int) -> list[str]:
    """Metric-name suffix of each aspect (``aspect<i>`` when no names are known)."""
    if names is None:
        return [f"aspect{i}" for i in range(num_aspects)]
    if len(names) != num_aspects:
        raise ValueError(f"aspect_names has {len(names)} names for num_aspects={num_aspects}")
    return list(names)
