"""Actor, twin critic, replay buffer and the observation attack (pure torch)."""

from __future__ import annotations

import pytest
import torch

from robust_lightning.lightning_modules.voltage_rl import (
    Actor,
    ReplayBuffer,
    TwinCritic,
    attack_observations,
    mlp,
    random_observation_noise,
)

OBS, ACT, MEASURED = 12, 3, 8


def _nets(seed: int = 0) -> tuple[Actor, TwinCritic]:
    torch.manual_seed(seed)
    return Actor(OBS, ACT, (32, 32)), TwinCritic(OBS, ACT, (32, 32))


def test_actor_and_critic_shapes_and_ranges() -> None:
    actor, critic = _nets()
    obs = torch.rand(5, OBS)
    action = actor(obs)
    assert action.shape == (5, ACT) and action.abs().max() <= 1
    q1, q2 = critic(obs, action)
    assert q1.shape == q2.shape == (5,)
    assert not torch.allclose(q1, q2), "the twin critics are initialised independently"
    torch.testing.assert_close(critic.q1(obs, action), q1)
    with pytest.raises(ValueError, match="hidden"):
        mlp(4, [8, 0], 2)


def test_replay_buffer_wraps_around_and_samples_stored_transitions() -> None:
    buffer = ReplayBuffer(5, obs_dim=2, act_dim=1)
    for start in (0, 3, 6):
        n = 3
        ids = torch.arange(start, start + n, dtype=torch.float32)
        buffer.add(ids[:, None].repeat(1, 2), ids[:, None], ids, ids[:, None].repeat(1, 2) + 0.5, torch.zeros(n))
    assert len(buffer) == 5
    # Capacity 5 after 9 adds: the oldest four (0..3) were overwritten.
    assert sorted(buffer.reward.tolist()) == [4.0, 5.0, 6.0, 7.0, 8.0]
    sample = buffer.sample(64, torch.Generator().manual_seed(0))
    assert set(sample["reward"].tolist()) <= {4.0, 5.0, 6.0, 7.0, 8.0}
    # Rows stay aligned: every field of a sampled transition comes from the same add().
    torch.testing.assert_close(sample["obs"][:, 0], sample["reward"])
    torch.testing.assert_close(sample["next_obs"][:, 0], sample["reward"] + 0.5)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0, 2, 1)
    with pytest.raises(RuntimeError, match="empty"):
        ReplayBuffer(3, 2, 1).sample(1)


def test_attack_stays_in_the_ball_and_bounds_and_touches_only_measurements() -> None:
    actor, critic = _nets()
    obs = torch.rand(16, OBS)
    obs[0, :MEASURED] = 1.0  # at the upper bound: the attack must not leave [0, 1]
    for objective in ("action", "critic"):
        adv = attack_observations(actor, obs, eps=0.05, steps=5, objective=objective, critic=critic,
                                  measurement_dim=MEASURED, generator=torch.Generator().manual_seed(0))
        assert (adv - obs).abs().max() <= 0.05 + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        torch.testing.assert_close(adv[:, MEASURED:], obs[:, MEASURED:], rtol=0, atol=0)
        assert not adv.requires_grad
    # Parameters keep their flags and receive no gradient from the attack.
    assert all(p.requires_grad and p.grad is None for p in [*actor.parameters(), *critic.parameters()])


def test_attack_objectives_beat_random_noise_of_the_same_budget() -> None:
    actor, critic = _nets(1)
    obs = torch.rand(64, OBS) * 0.8 + 0.1
    g = torch.Generator().manual_seed(0)
    noise = obs.clone()
    noise[:, :MEASURED] += (torch.rand(64, MEASURED, generator=g) * 2 - 1) * 0.1
    clean_action = actor(obs).detach()

    adv = attack_observations(actor, obs, eps=0.1, steps=10, objective="action", measurement_dim=MEASURED, generator=g)

    def deviation(x: torch.Tensor) -> float:
        return (actor(x) - clean_action).pow(2).sum(-1).mean().item()

    assert deviation(adv) > 2 * deviation(noise)

    adv = attack_observations(actor, obs, eps=0.1, steps=10, objective="critic", critic=critic,
                              measurement_dim=MEASURED, generator=g)
    with torch.no_grad():
        q_clean = critic.q1(obs, actor(obs)).mean()
        q_noise = critic.q1(obs, actor(noise)).mean()
        q_adv = critic.q1(obs, actor(adv)).mean()
    assert q_adv < q_noise and q_adv < q_clean


def test_random_observation_noise_is_a_corner_of_the_ball_on_measurements_only() -> None:
    obs = torch.rand(32, OBS) * 0.8 + 0.1
    obs[0, :MEASURED] = 1.0  # at the upper bound: clipped like the attack
    noisy = random_observation_noise(obs, 0.05, MEASURED, torch.Generator().manual_seed(0))
    delta = (noisy - obs)[1:, :MEASURED].abs()
    torch.testing.assert_close(delta, torch.full_like(delta, 0.05))
    assert noisy.min() >= 0 and noisy.max() <= 1
    torch.testing.assert_close(noisy[:, MEASURED:], obs[:, MEASURED:], rtol=0, atol=0)
    # Both signs occur, and a per-sample budget of 0 leaves that sample clean.
    assert ((noisy - obs)[1:, :MEASURED] > 0).any() and ((noisy - obs)[1:, :MEASURED] < 0).any()
    per_sample = random_observation_noise(obs[:2], torch.tensor([0.0, 0.1]), MEASURED)
    torch.testing.assert_close(per_sample[0], obs[0])
    with pytest.raises(ValueError, match="measurement_dim"):
        random_observation_noise(obs, 0.05, OBS + 1)


def test_attack_is_reproducible_and_zero_budget_is_identity() -> None:
    actor, _ = _nets()
    obs = torch.rand(4, OBS)
    a = attack_observations(actor, obs, 0.05, generator=torch.Generator().manual_seed(3))
    b = attack_observations(actor, obs, 0.05, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(attack_observations(actor, obs, 0.0), obs)


def test_attack_bad_arguments() -> None:
    actor, _ = _nets()
    obs = torch.rand(2, OBS)
    with pytest.raises(ValueError, match="objective"):
        attack_observations(actor, obs, 0.1, objective="reward")
    with pytest.raises(ValueError, match="critic"):
        attack_observations(actor, obs, 0.1, objective="critic")
    with pytest.raises(ValueError, match="measurement_dim"):
        attack_observations(actor, obs, 0.1, measurement_dim=OBS + 1)
    with pytest.raises(ValueError, match="bounds"):
        attack_observations(actor, obs + 2.0, 0.1)
