"""NERO-Net: neuroevolution of adversarially robust CNNs (Valentim, Antunes, Lourenco).

* :mod:`.genotype`: Fast-DENSER's two-level genotype, grammar ranges and mutations.
* :mod:`.model`: genotype -> ``nn.Module`` with shape inference and repair (pure torch).
* :mod:`.search`: the (1+lambda)-ES with the FGSM-thresholded fitness, checkpointing,
  resume and ``torch.distributed`` evaluation (``robust-lightning evolve``).
* :mod:`.lightning_module`: :class:`NeroNetClassifier`, a genotype trained further with any
  :class:`~robust_lightning.RobustClassifier` recipe (``robust-lightning fit``).
"""

from robust_lightning.lightning_modules.nero_net.genotype import (
    Genotype,
    MutationRates,
    SearchSpace,
    default_genotype,
    load_genotype,
    mutate,
    random_genotype,
    validate_genotype,
)
from robust_lightning.lightning_modules.nero_net.lightning_module import NeroNetClassifier
from robust_lightning.lightning_modules.nero_net.model import (
    InvalidGenotypeError,
    NeroNet,
    build_network,
    infer_shapes,
    repair_genotype,
)
from robust_lightning.lightning_modules.nero_net.search import (
    FitnessConfig,
    NeroNetSearch,
    plot_fitness,
    robust_fitness,
)

__all__ = [
    "FitnessConfig",
    "Genotype",
    "InvalidGenotypeError",
    "MutationRates",
    "NeroNet",
    "NeroNetClassifier",
    "NeroNetSearch",
    "SearchSpace",
    "build_network",
    "default_genotype",
    "infer_shapes",
    "load_genotype",
    "mutate",
    "plot_fitness",
    "random_genotype",
    "repair_genotype",
    "robust_fitness",
    "validate_genotype",
]
