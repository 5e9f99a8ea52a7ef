"""Di[M]O and Soft-Di[M]O: one-step discrete image generation distilled from a masked teacher."""

from robust_lightning.lightning_modules.soft_dimo.lightning_module import (
    TEACHER_CONFIG,
    DiMODistillation,
    MaskedTokenTeacher,
    SoftDiMODistillation,
    load_teacher,
)
from robust_lightning.lightning_modules.soft_dimo.metrics import (
    classifier_frechet_distance,
    precision_recall,
    sample_quality,
    save_sample_grid,
)
from robust_lightning.lightning_modules.soft_dimo.model import (
    DigitFeatureClassifier,
    ImageDiscriminator,
    MaskedTokenTransformer,
    ScalarQuantizer,
    VQAutoencoder,
    dimo_generator_loss,
    distillation_gradient,
    maskgit_sample,
)

__all__ = [
    "TEACHER_CONFIG",
    "DiMODistillation",
    "DigitFeatureClassifier",
    "ImageDiscriminator",
    "MaskedTokenTeacher",
    "MaskedTokenTransformer",
    "ScalarQuantizer",
    "SoftDiMODistillation",
    "VQAutoencoder",
    "classifier_frechet_distance",
    "dimo_generator_loss",
    "distillation_gradient",
    "load_teacher",
    "maskgit_sample",
    "precision_recall",
    "sample_quality",
    "save_sample_grid",
]
