"""Pure-torch pieces of TD3 for Volt-Var control: actor, twin critic, replay buffer, the
white-box observation attack.

Observations are in ``[0, 1]`` (the environment scales every feature by a fixed physical
range), so an L-inf budget ``eps`` means the same fraction of every measurement's range, and the
attack core's ``bounds=(0, 1)`` keeps attacked observations physically plausible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from typing_extensions import override

from robust_lightning._validation import check_int_at_least
from robust_lightning.attacks.core import attack_mode, pgd
from robust_lightning.nn.layers import mlp

__all__ = [
    "ATTACK_OBJECTIVES",
    "Actor",
    "ReplayBuffer",
    "TwinCritic",
    "attack_observations",
    "mlp",
    "random_observation_noise",
]

AttackObjective = Literal["action", "critic"]
ATTACK_OBJECTIVES: tuple[str, ...] = ("action", "critic")


class Actor(nn.Module):
    """Deterministic policy ``a = tanh(MLP(obs))`` in ``[-1, 1]^act_dim``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.net = mlp(self.obs_dim, hidden, self.act_dim)

    @override
    def forward(self, obs: Tensor) -> Tensor:
        return torch.tanh(self.net(obs))


class TwinCritic(nn.Module):
    """TD3's two Q networks ``Q_1, Q_2 : (obs, action) -> R`` (Fujimoto et al. 2018)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        self.q1_net = mlp(obs_dim + act_dim, hidden, 1)
        self.q2_net = mlp(obs_dim + act_dim, hidden, 1)

    @override
    def forward(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([obs, action], dim=-1)
        return self.q1_net(x).squeeze(-1), self.q2_net(x).squeeze(-1)

    def q1(self, obs: Tensor, action: Tensor) -> Tensor:
        """The first Q network alone (TD3's actor objective)."""
        return self.q1_net(torch.cat([obs, action], dim=-1)).squeeze(-1)


class ReplayBuffer:
    """Fixed-size ring buffer of transitions ``(obs, action, reward, next_obs, done)``.

    Plain tensors (not a module): the buffer is rebuilt by interaction, so it is kept out of
    checkpoints. Sampling draws uniformly with the given generator.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device | str = "cpu") -> None:
        check_int_at_least("capacity", capacity, 1)
        self.capacity = capacity
        self.obs = torch.zeros(capacity, obs_dim, device=device)
        self.action = torch.zeros(capacity, act_dim, device=device)
        self.reward = torch.zeros(capacity, device=device)
        self.next_obs = torch.zeros(capacity, obs_dim, device=device)
        self.done = torch.zeros(capacity, device=device)
        self.position = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, done: Tensor) -> None:
        """Append a batch of ``n`` transitions (oldest ones are overwritten when full)."""
        n = obs.shape[0]
        if n > self.capacity:
            raise ValueError(f"cannot add {n} transitions to a buffer of capacity {self.capacity}")
        index = (torch.arange(n) + self.position) % self.capacity
        device = self.obs.device
        self.obs[index] = obs.to(device, torch.float32)
        self.action[index] = action.to(device, torch.float32)
        self.reward[index] = reward.to(device, torch.float32)
        self.next_obs[index] = next_obs.to(device, torch.float32)
        self.done[index] = done.to(device, torch.float32)
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """A uniform sample (with replacement) of ``batch_size`` transitions."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        index = torch.randint(0, self.size, (batch_size,), generator=generator).to(self.obs.device)
        return {"obs": self.obs[index], "action": self.action[index], "reward": self.reward[index],
                "next_obs": self.next_obs[index], "done": self.done[index]}


def attack_observations(
    actor: Actor,
    obs: Tensor,
    eps: float | Tensor,
    steps: int = 10,
    alpha: float | None = None,
    objective: AttackObjective = "action",
    critic: TwinCritic | None = None,
    measurement_dim: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """White-box L-inf PGD on the policy's observations (attack core :func:`pgd`).

    Only the first ``measurement_dim`` features (loads, PV output, voltages: what false data
    injection can corrupt) are perturbed; the controller's own state (previous action, clock)
    is kept. Objectives (our reading of "maximise the actor's deviation / minimise the
    critic's value"):

    * ``"action"``: maximise ``||π(õ) − π(o)||²`` (random start: the gradient is zero at ``o``);
    * ``"critic"``: minimise ``Q_1(o, π(õ))``: the critic judges the action taken on the
      attacked observation in the *true* state.

    Args:
        actor: the policy.
        obs: clean observations ``(B, obs_dim)`` in ``[0, 1]``.
        eps: L-inf radius (float or per-sample ``(B,)``).
        steps: PGD steps.
        alpha: step size; ``2.5 · eps / steps`` when ``None`` (Madry et al.'s rule of thumb).
        objective: ``"action"`` or ``"critic"``.
        critic: the twin critic (needed for ``"critic"``).
        measurement_dim: number of leading features that may be perturbed (all when ``None``).
        generator: randomness of the random start.

    Returns:
        Attacked observations, detached, same shape as ``obs``.
    """
    if objective not in ATTACK_OBJECTIVES:
        raise ValueError(f"objective must be one of {ATTACK_OBJECTIVES}, got {objective!r}")
    if objective == "critic" and critic is None:
        raise ValueError("objective='critic' needs the critic")
    dim = obs.shape[-1] if measurement_dim is None else int(measurement_dim)
    if not 0 < dim <= obs.shape[-1]:
        raise ValueError(f"measurement_dim must be in 1..{obs.shape[-1]}, got {measurement_dim!r}")
    eps_max = float(eps.max()) if isinstance(eps, Tensor) else float(eps)
    if steps == 0 or eps_max <= 0:
        return obs.detach().clone()
    if alpha is None:
        alpha = 2.5 * eps_max / steps
    holder = nn.ModuleList([actor] if critic is None else [actor, critic])
    # Lightning evaluates under inference_mode; the attack needs autograd on normal tensors.
    with torch.inference_mode(False), attack_mode(holder, "eval"):
        obs = obs.detach().clone() if obs.is_inference() else obs.detach()
        eps = eps.detach().clone() if isinstance(eps, Tensor) and eps.is_inference() else eps
        measured, rest = obs[:, :dim], obs[:, dim:]
        with torch.no_grad():
            clean_action = actor(obs)

        def loss_fn(x: Tensor) -> Tensor:
            action = actor(torch.cat([x, rest], dim=-1))
            if objective == "action":
                return (action - clean_action).pow(2).sum(-1)
            assert critic is not None
            return -critic.q1(obs, action)

        measured_adv = pgd(loss_fn, measured, eps=eps, alpha=float(alpha), steps=int(steps), norm="linf",
                           random_start=True, bounds=(0.0, 1.0), generator=generator)
        return torch.cat([measured_adv, rest], dim=-1)


def random_observation_noise(
    obs: Tensor,
    eps: float | Tensor,
    measurement_dim: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random L-inf observation noise of the attack's budget, without the attack's search.

    Each of the first ``measurement_dim`` features moves by ``±eps`` with a random sign (a
    corner of the L-inf ball, where a signed-gradient PGD run also ends up, so the noise has
    the attack's size and only its direction is blind), then is clipped to ``[0, 1]`` like the
    attack. The controller's own state is kept. This is the noise-augmentation control of
    adversarial training (``VoltVarTD3(method="noise")``).

    Args:
        obs: clean observations ``(B, obs_dim)`` in ``[0, 1]``.
        eps: L-inf radius (float or per-sample ``(B,)``).
        measurement_dim: number of leading features that may be perturbed (all when ``None``).
        generator: randomness of the signs.

    Returns:
        Noisy observations, detached, same shape as ``obs``.
    """
    dim = obs.shape[-1] if measurement_dim is None else int(measurement_dim)
    if not 0 < dim <= obs.shape[-1]:
        raise ValueError(f"measurement_dim must be in 1..{obs.shape[-1]}, got {measurement_dim!r}")
    obs = obs.detach()
    radius = eps.reshape(-1, 1).to(obs) if isinstance(eps, Tensor) else float(eps)
    signs = torch.randint(0, 2, (obs.shape[0], dim), generator=generator).to(obs) * 2 - 1
    measured = (obs[:, :dim] + radius * signs).clamp(0.0, 1.0)
    return torch.cat([measured, obs[:, dim:]], dim=-1)
