"""VoltVarTD3 + VoltVarDataModule: a short fit, losses, schedules, checkpoints, argument checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from robust_lightning.lightning_modules.voltage_rl import VoltVarDataModule, VoltVarTD3

SMALL_MODEL = {"hidden": (16, 16), "batch_size": 32, "buffer_size": 2000, "warmup_transitions": 64,
               "eval_attack_eps": (0.05,), "eval_attack_steps": 3}


@pytest.fixture(scope="module")
def data() -> VoltVarDataModule:
    return VoltVarDataModule(num_envs=2, num_train_days=4, num_val_days=2, num_test_days=2, eval_days_per_batch=2,
                             steps_per_epoch=6, eval_power_flow="zbus")


def _fit(model: VoltVarTD3, data: VoltVarDataModule, epochs: int = 1, **trainer_kwargs: Any) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         **trainer_kwargs)
    trainer.fit(model, data)
    return trainer


def test_fit_updates_networks_targets_and_logs_clean_and_attacked_metrics(data: VoltVarDataModule) -> None:
    model = VoltVarTD3(**SMALL_MODEL, policy_delay=2)
    trainer = _fit(model, data)
    assert trainer.global_step == data.steps_per_epoch, "one optimizer step per training step"
    assert int(model.updates) == data.steps_per_epoch
    # Warm-up transitions plus num_envs per update went into the buffer.
    assert len(model.buffer) == 64 + data.num_envs * data.steps_per_epoch
    metrics = trainer.callback_metrics
    tag = "pgd3_action_linf_eps0.05"
    for key in ("train/critic_loss", "train/actor_loss", "val/return", "val/violation_rate", "val/q_use",
                "val/bus_violation_rate", f"val/robust_violation_rate/{tag}", f"val/robust_return/{tag}",
                f"val/robust_q_use/{tag}"):
        assert key in metrics, f"{key} not logged"
    assert 0.0 <= float(metrics["val/violation_rate"]) <= 1.0
    # Targets trail the online networks by Polyak averaging: moved, but not equal.
    for online, target in ((model.actor, model.actor_target), (model.critic, model.critic_target)):
        gap = max((p - t).abs().max().item() for p, t in zip(online.parameters(), target.parameters(), strict=False))
        assert gap > 0
        assert all(not t.requires_grad for t in target.parameters())
    assert model.hparams.obs_dim == data.obs_dim and model.hparams.act_dim == data.act_dim

    tested = trainer.test(model, data, verbose=False)[0]
    assert "test/violation_rate" in tested and f"test/robust_violation_rate/{tag}" in tested


def test_actor_loss_trains_the_actor_only(data: VoltVarDataModule) -> None:
    model = VoltVarTD3(**SMALL_MODEL, obs_dim=data.obs_dim, act_dim=data.act_dim, measurement_dim=data.measurement_dim)
    obs = torch.rand(8, data.obs_dim)
    model._actor_loss(obs).backward()
    assert all(p.grad is None for p in model.critic.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.actor.parameters())


def test_adversarial_obs_mix_clean_and_attacked_rows(data: VoltVarDataModule) -> None:
    dims = {"obs_dim": data.obs_dim, "act_dim": data.act_dim, "measurement_dim": data.measurement_dim}
    torch.manual_seed(0)  # the networks and observations, so the outcome does not follow test order
    for selection in ("random", "impact"):
        model = VoltVarTD3(**SMALL_MODEL, **dims, method="adversarial", adv_fraction=0.25, adv_selection=selection,
                           eps_schedule="constant", adv_eps=0.05)
        obs = torch.rand(16, data.obs_dim) * 0.8 + 0.1
        attacked, mask = model._adversarial_obs(obs)
        assert int(mask.sum()) == 4
        assert torch.equal(attacked[~mask], obs[~mask])
        delta = (attacked[mask] - obs[mask]).abs()
        assert delta.max() <= 0.05 + 1e-6 and delta[:, : data.measurement_dim].max() > 0
        assert torch.equal(attacked[:, data.measurement_dim:], obs[:, data.measurement_dim:])
        if selection == "impact":
            # The attacked rows are the ones whose (full-batch) attack lowered Q_1 most.
            with torch.no_grad():
                drop = model.critic.q1(obs, model.actor(obs)) - model.critic.q1(obs, model.actor(attacked))
            assert drop[mask].min() >= drop[~mask].max() - 1e-6


def test_noise_control_perturbs_the_same_rows_by_the_budget_without_the_attack(
        data: VoltVarDataModule, monkeypatch: pytest.MonkeyPatch) -> None:
    dims = {"obs_dim": data.obs_dim, "act_dim": data.act_dim, "measurement_dim": data.measurement_dim}
    model = VoltVarTD3(**SMALL_MODEL, **dims, method="noise", adv_fraction=0.25, eps_schedule="constant", adv_eps=0.05)

    def no_attack(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise AssertionError("method='noise' must not run the attack")

    monkeypatch.setattr(model, "attack", no_attack)
    obs = torch.rand(16, data.obs_dim) * 0.8 + 0.1
    noisy, mask = model._adversarial_obs(obs)
    assert int(mask.sum()) == 4 and torch.equal(noisy[~mask], obs[~mask])
    # Every measurement of a perturbed row moves by exactly eps (inside [0, 1]); the state does not.
    delta = (noisy[mask] - obs[mask])[:, : data.measurement_dim].abs()
    torch.testing.assert_close(delta, torch.full_like(delta, 0.05))
    assert torch.equal(noisy[:, data.measurement_dim:], obs[:, data.measurement_dim:])
    _fit(model, data, limit_val_batches=0)
    assert model.updates > 0


def test_eps_schedules(data: VoltVarDataModule) -> None:
    linear = VoltVarTD3(**SMALL_MODEL, method="adversarial", eps_schedule="linear", adv_eps=0.04, eps_ramp_updates=8)
    _fit(linear, data)
    # Updates 0, 2, 4 trained the actor (policy_delay=2); the last one saw eps = 0.04 * 4 / 8.
    assert float(linear.current_eps) == pytest.approx(0.02)
    adaptive = VoltVarTD3(**SMALL_MODEL, method="adversarial", eps_schedule="adaptive", adv_eps=0.05, eps_min=0.01,
                          eps_adapt_rate=0.5, impact_target=10.0)
    _fit(adaptive, data)
    # Deviations stay below an unreachable target, so every actor update grew eps, up to the cap.
    assert float(adaptive.current_eps) == pytest.approx(min(0.05, 0.01 * 1.5**3))
    assert float(adaptive.current_eps) > 0.01


def test_checkpoint_holds_plain_data_and_rebuilds_the_agent(data: VoltVarDataModule, tmp_path: Path) -> None:
    model = VoltVarTD3(**SMALL_MODEL, method="adversarial", eps_schedule="constant")
    trainer = _fit(model, data, limit_val_batches=0)
    path = tmp_path / "agent.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["obs_dim"] == data.obs_dim
    restored = VoltVarTD3.load_from_checkpoint(path)
    obs = torch.rand(3, data.obs_dim)
    torch.testing.assert_close(restored(obs), model(obs))
    assert restored.measurement_dim == data.measurement_dim and restored.method == "adversarial"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "ppo"}, "method"),
    ({"eps_schedule": "cosine"}, "eps_schedule"),
    ({"adv_selection": "worst"}, "adv_selection"),
    ({"method": "noise", "adv_selection": "impact"}, "adv_selection"),
    ({"adv_objective": "reward"}, "adv_objective"),
    ({"adv_fraction": 1.5}, "adv_fraction"),
    ({"adv_eps": "1/0"}, "adv_eps"),
    ({"gamma": 1.2}, "gamma"),
    ({"hidden": []}, "hidden"),
    ({"eval_attack_eps": "0.05"}, "eval_attack_eps"),
    ({"eval_attack_eps": [0.0]}, "eval_attack_eps"),
    ({"obs_dim": 10}, "together"),
    ({"obs_dim": 10, "act_dim": 2, "measurement_dim": 11}, "measurement_dim"),
    ({"eps_schedule": "adaptive", "adv_eps": 0.01, "eps_min": 0.02}, "eps_min"),
])
def test_bad_module_arguments_name_the_argument(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VoltVarTD3(**kwargs)


def test_module_needs_the_volt_var_datamodule() -> None:

    model = VoltVarTD3(**SMALL_MODEL)
    trainer = pl.Trainer(accelerator="cpu", logger=False, max_steps=1)
    with pytest.raises(TypeError, match="VoltVarDataModule"):
        trainer.fit(model, datamodule=pl.LightningDataModule())
    with pytest.raises(RuntimeError, match="build"):
        model(torch.rand(1, 4))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"eval_power_flow": "dc"}, "eval_power_flow"),
    ({"num_envs": 0}, "num_envs"),
    ({"env_seed": -1}, "env_seed"),
    ({"pv_buses": [40]}, "pv_buses"),
])
def test_bad_datamodule_arguments_name_the_argument(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VoltVarDataModule(**kwargs)
