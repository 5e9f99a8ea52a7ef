"""TransferAttack: crafted on the surrogate only, loaded from checkpoints safely."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_lightning import PGD, TransferAttack
from robust_lightning.attacks.transfer import load_surrogate
from robust_lightning.errors import CheckpointError


def _linear(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def test_perturbation_is_the_surrogate_attack_and_ignores_the_target():
    surrogate = _linear(0)
    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    attack = PGD(eps=0.1, alpha=0.03, steps=5, random_start=False)
    transfer = TransferAttack(attack, surrogate=surrogate)

    def target_must_not_be_called(_):
        raise AssertionError("a transfer attack never queries the target")

    x_adv = transfer.perturb_logits(target_must_not_be_called, x, y)
    expected = attack(lambda z: F.cross_entropy(surrogate(z), y, reduction="none"), x)
    torch.testing.assert_close(x_adv, expected)
    assert transfer.name == "transfer-pgd5_linf_eps0.1" and transfer.white_box is False


def test_with_eps_changes_the_inner_attack():
    transfer = TransferAttack(PGD(eps=0.1, steps=2), surrogate=_linear(0))
    wider = transfer.with_eps(0.2)
    assert wider.eps == 0.2 and wider.attack.eps == 0.2 and transfer.attack.eps == 0.1


def test_checkpoint_loading_accepts_lightning_and_bare_state_dicts(tmp_path):
    source = _linear(1)
    bare, lightning = tmp_path / "bare.pt", tmp_path / "model.ckpt"
    torch.save(source.state_dict(), bare)
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, lightning)
    for path in (bare, lightning):
        loaded = load_surrogate(_linear(2), path)
        torch.testing.assert_close(loaded[1].weight, source[1].weight)


class _RunsACommand:
    """Unpickling this calls os.system: a weights-only load must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_are_loaded_without_unpickling_objects(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": _linear(0).state_dict(), "payload": object()}, path)
    with pytest.raises(CheckpointError, match=r"surrogate_checkpoint .*evil\.ckpt.* not allowed") as info:
        load_surrogate(_linear(0), path)
    assert "weights_only=False" not in str(info.value)


def test_a_surrogate_checkpoint_with_an_os_system_payload_never_runs(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "payload.ckpt"
    torch.save({"state_dict": _linear(0).state_dict(), "payload": _RunsACommand(marker)}, path)
    with pytest.raises(CheckpointError, match=r"payload\.ckpt.*'posix\.system'"):
        TransferAttack(PGD(), surrogate=_linear(0), surrogate_checkpoint=str(path))
    assert not marker.exists()


def test_missing_or_mismatched_checkpoints_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="surrogate_checkpoint"):
        TransferAttack(PGD(), surrogate=_linear(0), surrogate_checkpoint=str(tmp_path / "none.ckpt"))
    other = tmp_path / "other.pt"
    torch.save(nn.Linear(5, 5).state_dict(), other)
    with pytest.raises(ValueError, match="does not match the surrogate"):
        load_surrogate(_linear(0), other)


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="attack"):
        TransferAttack("pgd", surrogate=_linear(0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="surrogate"):
        TransferAttack(PGD(), surrogate="model.ckpt")  # type: ignore[arg-type]
