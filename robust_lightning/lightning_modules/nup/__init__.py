"""NUP: input–gradient uncertainty probes and ConjMask (Neural Uncertainty Principle)."""

from robust_lightning.lightning_modules.nup.lightning_module import (
    TRAIN_LABELS,
    ConjMaskClassifier,
)
from robust_lightning.lightning_modules.nup.model import (
    LM_LOSSES,
    PROBE_STATISTICS,
    SCORES,
    ConjMask,
    causal_lm_prefill_probe,
    conj_mask,
    conj_mask_inputs,
    input_gradient,
    probe_statistics,
)

__all__ = [
    "LM_LOSSES",
    "PROBE_STATISTICS",
    "SCORES",
    "TRAIN_LABELS",
    "ConjMask",
    "ConjMaskClassifier",
    "causal_lm_prefill_probe",
    "conj_mask",
    "conj_mask_inputs",
    "input_gradient",
    "probe_statistics",
]
