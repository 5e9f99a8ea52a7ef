"""Attacks: a functional core (:func:`pgd`, :func:`fgsm`, :func:`apgd`, :func:`fab_attack`),
config-friendly classes, input-gradient probes and textual backdoor poisoners.

Module names never equal the function names they define (``autopgd.apgd``, ``fab.fab_attack``,
``square.square_attack``), so ``import robust_lightning.attacks.<module>`` always yields the module.
"""

from robust_lightning.attacks.autoattack import AutoAttack, AutoAttackResult
from robust_lightning.attacks.autopgd import APGD, apgd, dlr_loss, targeted_dlr_loss
from robust_lightning.attacks.base import FGSM, NFGSM, PGD, Attack
from robust_lightning.attacks.constrained import (
    ConstrainedPGD,
    FlowConstraints,
    constrained_pgd,
)
from robust_lightning.attacks.core import attack_mode, eps_tag, fgsm, parse_budget, pgd
from robust_lightning.attacks.detection import (
    DetectionAttack,
    detection_attack,
    split_detection_losses,
)
from robust_lightning.attacks.engine import ATTACK_PRECISIONS, AttackEngine
from robust_lightning.attacks.ensemble import worst_case_robustness
from robust_lightning.attacks.external import ExternalAttack
from robust_lightning.attacks.fab import FAB, FABResult, fab_attack, robust_accuracy_at_radii
from robust_lightning.attacks.fast import EarlyStoppedPGD, gradient_alignment_penalty
from robust_lightning.attacks.generators import RankGenerator
from robust_lightning.attacks.square import Square, square_attack
from robust_lightning.attacks.text import (
    POISONERS,
    AddSentPoisoner,
    BadNetsPoisoner,
    StyleTemplatePoisoner,
    SyntacticTemplatePoisoner,
    TextPoisoner,
)
from robust_lightning.attacks.transfer import TransferAttack, load_surrogate

__all__ = [
    "APGD",
    "ATTACK_PRECISIONS",
    "FAB",
    "FGSM",
    "NFGSM",
    "PGD",
    "POISONERS",
    "RankGenerator",
    "AddSentPoisoner",
    "Attack",
    "AttackEngine",
    "AutoAttack",
    "AutoAttackResult",
    "BadNetsPoisoner",
    "ConstrainedPGD",
    "DetectionAttack",
    "EarlyStoppedPGD",
    "ExternalAttack",
    "FABResult",
    "FlowConstraints",
    "Square",
    "StyleTemplatePoisoner",
    "SyntacticTemplatePoisoner",
    "TextPoisoner",
    "TransferAttack",
    "apgd",
    "attack_mode",
    "constrained_pgd",
    "detection_attack",
    "dlr_loss",
    "eps_tag",
    "fab_attack",
    "fgsm",
    "gradient_alignment_penalty",
    "load_surrogate",
    "parse_budget",
    "pgd",
    "robust_accuracy_at_radii",
    "split_detection_losses",
    "square_attack",
    "targeted_dlr_loss",
    "worst_case_robustness",
]
