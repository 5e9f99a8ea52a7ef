"""Attacks: a functional core (:func:`pgd`, :func:`fgsm`) and config-friendly classes."""

from robust_lightning.attacks.base import FGSM, PGD, Attack
from robust_lightning.attacks.core import attack_mode, eps_tag, fgsm, parse_budget, pgd

__all__ = ["FGSM", "PGD", "Attack", "attack_mode", "eps_tag", "fgsm", "parse_budget", "pgd"]
