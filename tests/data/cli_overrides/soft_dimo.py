"""Soft-Di[M]O configs: dimo.yaml and soft_dimo.yaml read the teacher checkpoint of teacher.yaml;
write a tiny untrained one at that path so they run under fast_dev_run."""

from __future__ import annotations

from pathlib import Path

import torch


def write_tiny_teacher(path: Path, **architecture: object) -> Path:
    """A weights-only MaskedTokenTeacher checkpoint (Lightning's layout) with a small network."""
    from robust_lightning.lightning_modules.soft_dimo import MaskedTokenTeacher

    torch.manual_seed(0)
    settings = {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32, "classifier_width": 4, **architecture}
    teacher = MaskedTokenTeacher(**settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": teacher.state_dict(), "hyper_parameters": dict(teacher.hparams)}, path)
    return path


def _teacher_checkpoint(workdir: Path) -> None:
    write_tiny_teacher(workdir / "runs" / "soft_dimo" / "teacher.ckpt")


EXTRA_SETUP = {"soft_dimo/dimo.yaml": _teacher_checkpoint, "soft_dimo/soft_dimo.yaml": _teacher_checkpoint}
