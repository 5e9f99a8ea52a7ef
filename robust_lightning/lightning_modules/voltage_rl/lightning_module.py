"""VoltVarTD3: TD3 Volt-Var control, plain or adversarially trained against observation attacks.

* ``method="td3"``: TD3 (Fujimoto et al. 2018): twin critics, target policy smoothing,
  delayed actor and target updates.
* ``method="adversarial"``: the same TD3, but the actor is trained on a mix of clean and
  PGD-attacked observations (our reading of Chung & Zhang, "Utilizing Adversarial Training for
  Robust Voltage Control: An Adaptive Deep Reinforcement Learning Method"):

  ``L_actor = −mean_i Q_1(o_i, π(õ_i)) + smoothness_weight · mean_{i attacked} ||π(õ_i) − π(o_i)||²``

  where ``õ_i`` is the white-box L-inf PGD observation (:func:`attack_observations`) for a
  fraction ``adv_fraction`` of the batch and ``o_i`` otherwise. The critic always judges the
  action in the *true* state, so the actor learns which action is good when what it sees may be
  false. With ``adv_selection="impact"`` the attacked samples are the ones whose attack lowers
  ``Q_1`` most (the high-impact perturbations); the budget follows ``eps_schedule``
  (``constant``, ``linear`` ramp, or ``adaptive``: grown while attacks move the action by less
  than ``impact_target``, shrunk when they move it more).
* ``method="noise"``: the control of ``adversarial``: the same mix, fraction, budget and
  schedule, but the perturbed rows get random ``±eps`` noise on the measurements
  (:func:`random_observation_noise`) instead of the PGD attack, so whatever ``adversarial``
  gains over it comes from searching for the worst case, not from seeing perturbed inputs.

Each training step first steps the DataModule's vectorised training environment (batched AC
power flow) ``env_steps_per_update`` times with the exploration policy into the replay buffer,
then does one TD3 update. Actor and critic share one optimizer (two parameter groups with their
own learning rates), so one training step is one optimizer step. Validation/test run whole days
(by default on pandapower's AC power flow) clean and under each evaluation attack and log
``{stage}/return``, ``{stage}/violation_rate``, ``{stage}/bus_violation_rate``, ``{stage}/q_use`` and
``{stage}/robust_<metric>/pgd<steps>_<objective>_linf_eps<k>``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor
from typing_extensions import override

from robust_lightning._validation import (
    check_choice,
    check_int_at_least,
    check_non_negative_int,
    check_number,
    check_positive_ints,
)
from robust_lightning.attacks.core import eps_tag, parse_budget
from robust_lightning.envs.volt_var import VoltVarVectorEnv, run_episodes
from robust_lightning.errors import InvalidArgumentError
from robust_lightning.lightning_modules.base import RobustMethod
from robust_lightning.lightning_modules.voltage_rl.model import (
    ATTACK_OBJECTIVES,
    Actor,
    AttackObjective,
    ReplayBuffer,
    TwinCritic,
    attack_observations,
    random_observation_noise,
)

__all__ = ["EPS_SCHEDULES", "METHODS", "VoltVarTD3"]

METHODS: tuple[str, ...] = ("td3", "adversarial", "noise")
EPS_SCHEDULES: tuple[str, ...] = ("constant", "linear", "adaptive")
ADV_SELECTIONS: tuple[str, ...] = ("random", "impact")


class VoltVarTD3(RobustMethod):
    """TD3 agent for :class:`~robust_lightning.lightning_modules.voltage_rl.VoltVarDataModule`.

    Args:
        method: ``"td3"``, ``"adversarial"`` or its control ``"noise"`` (see the module docstring).
        hidden: hidden widths of the actor and of each critic.
        actor_lr: learning rate of the actor's parameter group.
        critic_lr: learning rate of the critics' parameter group.
        gamma: discount.
        tau: Polyak rate of the target networks.
        policy_delay: critic updates per actor/target update.
        target_noise: std of TD3's target policy smoothing noise.
        target_noise_clip: clip of that noise.
        exploration_noise: std of the Gaussian exploration noise on actions.
        batch_size: transitions per update.
        buffer_size: replay buffer capacity.
        warmup_transitions: random-action transitions collected before the first update.
        env_steps_per_update: vectorised environment steps per update (each adds ``num_envs``
            transitions).
        adv_eps: L-inf budget of the training attack (``noise``: of the noise) (fraction of each
            observation's range); a number or a fraction string such as ``"1/20"``.
        adv_steps: PGD steps of the training attack.
        adv_objective: ``"critic"`` (minimise ``Q_1(o, π(õ))``) or ``"action"`` (maximise
            ``||π(õ) − π(o)||²``).
        adv_fraction: fraction of each actor batch trained on attacked (``noise``: noisy)
            observations.
        adv_selection: ``"random"`` samples, or the highest-``"impact"`` ones (largest
            ``Q_1`` drop).
        smoothness_weight: weight of ``||π(õ) − π(o)||²`` on the attacked samples.
        eps_schedule: ``"constant"``, ``"linear"`` (0 to ``adv_eps`` over ``eps_ramp_updates``) or
            ``"adaptive"`` (see the module docstring).
        eps_ramp_updates: updates of the linear ramp.
        eps_min: smallest budget of the adaptive schedule (also its start).
        impact_target: the adaptive schedule's target mean ``||π(õ) − π(o)||_∞``.
        eps_adapt_rate: multiplicative step of the adaptive schedule.
        rollout_attack_prob: probability that a rollout step acts on attacked observations
            (``adversarial`` only), so the replay holds experience under attack.
        eval_attack_eps: L-inf budgets of the evaluation attacks (empty: clean only).
        eval_attack_steps: PGD steps of the evaluation attacks.
        eval_attack_objective: objective of the evaluation attacks.
        seed: seed of exploration noise, replay sampling and attack random starts.
        optimizer: callable building the optimizer from the two parameter groups (``None``: Adam
            with its defaults; each group sets its own learning rate).
        obs_dim: observation size; ``None`` takes it from the DataModule at ``setup`` (checkpoints
            record it, so ``load_from_checkpoint`` rebuilds the networks without data).
        act_dim: action size (number of inverters); ``None``: from the DataModule.
        measurement_dim: leading observation features the attack may perturb; ``None``: from
            the DataModule.

    Raises:
        ValueError: If an argument is out of range (the message names it).
    """

    def __init__(
        self,
        method: Literal["td3", "adversarial", "noise"] = "td3",
        hidden: Sequence[int] = (256, 256),
        actor_lr: float = 1e-3,
        critic_lr: float = 1e-3,
        gamma: float = 0.9,
        tau: float = 0.005,
        policy_delay: int = 2,
        target_noise: float = 0.2,
        target_noise_clip: float = 0.5,
        exploration_noise: float = 0.1,
        batch_size: int = 256,
        buffer_size: int = 100_000,
        warmup_transitions: int = 2_000,
        env_steps_per_update: int = 1,
        adv_eps: float | str = 0.05,
        adv_steps: int = 5,
        adv_objective: AttackObjective = "critic",
        adv_fraction: float = 0.5,
        adv_selection: Literal["random", "impact"] = "random",
        smoothness_weight: float = 0.0,
        eps_schedule: Literal["constant", "linear", "adaptive"] = "linear",
        eps_ramp_updates: int = 2_000,
        eps_min: float | str = 0.01,
        impact_target: float = 0.1,
        eps_adapt_rate: float = 0.01,
        rollout_attack_prob: float = 0.0,
        eval_attack_eps: Sequence[float | str] = (0.05,),
        eval_attack_steps: int = 10,
        eval_attack_objective: AttackObjective = "action",
        seed: int = 0,
        optimizer: OptimizerCallable | None = None,
        obs_dim: int | None = None,
        act_dim: int | None = None,
        measurement_dim: int | None = None,
    ) -> None:
        super().__init__(optimizer)
        check_choice("method", method, METHODS)
        check_choice("eps_schedule", eps_schedule, EPS_SCHEDULES)
        check_choice("adv_selection", adv_selection, ADV_SELECTIONS)
        if method == "noise" and adv_selection == "impact":
            raise InvalidArgumentError("adv_selection='impact' needs the attack; method='noise' takes 'random' rows")
        for name, value in (("adv_objective", adv_objective), ("eval_attack_objective", eval_attack_objective)):
            check_choice(name, value, ATTACK_OBJECTIVES)
        check_positive_ints("hidden", hidden, non_empty=True)
        self.actor_lr = check_number("actor_lr", actor_lr, 0.0, low_open=True)
        self.critic_lr = check_number("critic_lr", critic_lr, 0.0, low_open=True)
        self.gamma = check_number("gamma", gamma, 0.0, high=1.0)
        self.tau = check_number("tau", tau, 0.0, high=1.0, low_open=True)
        self.policy_delay = check_int_at_least("policy_delay", policy_delay, 1)
        self.target_noise = check_number("target_noise", target_noise, 0.0)
        self.target_noise_clip = check_number("target_noise_clip", target_noise_clip, 0.0)
        self.exploration_noise = check_number("exploration_noise", exploration_noise, 0.0)
        self.batch_size = check_int_at_least("batch_size", batch_size, 1)
        self.buffer_size = check_int_at_least("buffer_size", buffer_size, 1)
        self.warmup_transitions = check_int_at_least("warmup_transitions", warmup_transitions, 0)
        self.env_steps_per_update = check_int_at_least("env_steps_per_update", env_steps_per_update, 1)
        self.adv_eps = check_number("adv_eps", parse_budget(adv_eps, "adv_eps"), 0.0)
        self.adv_steps = check_int_at_least("adv_steps", adv_steps, 1)
        self.adv_fraction = check_number("adv_fraction", adv_fraction, 0.0, high=1.0)
        self.smoothness_weight = check_number("smoothness_weight", smoothness_weight, 0.0)
        self.eps_ramp_updates = check_int_at_least("eps_ramp_updates", eps_ramp_updates, 1)
        self.eps_min = check_number("eps_min", parse_budget(eps_min, "eps_min"), 0.0)
        if eps_schedule == "adaptive" and self.eps_min > self.adv_eps:
            raise ValueError(f"eps_min={self.eps_min} must be <= adv_eps={self.adv_eps} for the adaptive schedule")
        self.impact_target = check_number("impact_target", impact_target, 0.0, low_open=True)
        self.eps_adapt_rate = check_number("eps_adapt_rate", eps_adapt_rate, 0.0, high=1.0, low_open=True)
        self.rollout_attack_prob = check_number("rollout_attack_prob", rollout_attack_prob, 0.0, high=1.0)
        if isinstance(eval_attack_eps, (str, bytes)):
            raise InvalidArgumentError(f"eval_attack_eps must be a list of budgets, got {eval_attack_eps!r}")
        self.eval_attack_eps = [check_number("eval_attack_eps", parse_budget(e, "eval_attack_eps"), 0.0, low_open=True)
                                for e in eval_attack_eps]
        self.eval_attack_steps = check_int_at_least("eval_attack_steps", eval_attack_steps, 1)
        check_non_negative_int("seed", seed)
        # The callable is rebuilt from the config, not pickled into checkpoints.
        self.save_hyperparameters(ignore=["optimizer"])
        self.method = method
        self.hidden = tuple(hidden)
        self.adv_objective = adv_objective
        self.adv_selection = adv_selection
        self.eps_schedule = eps_schedule
        self.eval_attack_objective = eval_attack_objective
        self.seed = seed
        # Networks need the environment's sizes: built now when given (load_from_checkpoint
        # passes the recorded ones), else in setup() from the DataModule.
        self.actor: Actor | None = None
        self.critic: TwinCritic | None = None
        self.actor_target: Actor | None = None
        self.critic_target: TwinCritic | None = None
        self.measurement_dim: int | None = None
        dims = (obs_dim, act_dim, measurement_dim)
        if any(d is not None for d in dims):
            if any(d is None for d in dims):
                raise ValueError(f"obs_dim, act_dim and measurement_dim must be given together, got {dims}")
            self.build_networks(check_int_at_least("obs_dim", obs_dim, 1), check_int_at_least("act_dim", act_dim, 1),
                                check_int_at_least("measurement_dim", measurement_dim, 1))
        # Current training budget (a buffer so checkpoints resume the schedule).
        start = self.eps_min if eps_schedule == "adaptive" else (0.0 if eps_schedule == "linear" else self.adv_eps)
        self.register_buffer("current_eps", torch.tensor(start))
        self.register_buffer("updates", torch.tensor(0, dtype=torch.long))
        self.buffer: ReplayBuffer | None = None
        self.train_env: VoltVarVectorEnv | None = None
        self._obs: np.ndarray | None = None
        self._eval_envs: dict[tuple[str, int], VoltVarVectorEnv] = {}
        self._generator = torch.Generator().manual_seed(seed)
        self._eval_generator = torch.Generator().manual_seed(seed + 1)
        self._actor_updated = False
        self._train_logs: dict[str, Tensor] = {}
        self._day_return: np.ndarray | None = None
        self._day_violations: np.ndarray | None = None

    # -- networks --------------------------------------------------------------------------
    def build_networks(self, obs_dim: int, act_dim: int, measurement_dim: int) -> None:
        """Create actor, critics and their targets for an environment's sizes."""
        if self.actor is not None:
            if (self.actor.obs_dim, self.actor.act_dim) != (obs_dim, act_dim):
                raise ValueError(
                    f"the networks were built for obs_dim={self.actor.obs_dim}, act_dim={self.actor.act_dim} "
                    f"but the environment has obs_dim={obs_dim}, act_dim={act_dim}"
                )
            if measurement_dim > obs_dim:
                raise ValueError(f"measurement_dim={measurement_dim} exceeds obs_dim={obs_dim}")
            self.measurement_dim = measurement_dim
            return
        if measurement_dim > obs_dim:
            raise ValueError(f"measurement_dim={measurement_dim} exceeds obs_dim={obs_dim}")
        self.actor = Actor(obs_dim, act_dim, self.hidden)
        self.critic = TwinCritic(obs_dim, act_dim, self.hidden)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.measurement_dim = measurement_dim
        self.hparams.update({"obs_dim": obs_dim, "act_dim": act_dim, "measurement_dim": measurement_dim})

    @override
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "make_env"):
            if stage == "predict" and self.actor is not None:
                return  # a built (e.g. restored) agent acts on the observations it is given
            raise TypeError("VoltVarTD3 needs a VoltVarDataModule (or a DataModule with make_env/obs_dim/act_dim)")
        self.build_networks(datamodule.obs_dim, datamodule.act_dim, datamodule.measurement_dim)

    @override
    def forward(self, obs: Tensor) -> Tensor:
        """Deterministic action in ``[-1, 1]`` for observations in ``[0, 1]``."""
        if self.actor is None:
            raise RuntimeError("networks are not built yet: call build_networks() or fit with a VoltVarDataModule")
        return self.actor(obs)

    def attack(self, obs: Tensor, eps: float | Tensor, steps: int, objective: AttackObjective,
               generator: torch.Generator | None = None) -> Tensor:
        """The white-box PGD observation attack on this agent (its own actor and critic)."""
        assert self.actor is not None and self.critic is not None
        return attack_observations(self.actor, obs, eps, steps=steps, objective=objective, critic=self.critic,
                                   measurement_dim=self.measurement_dim, generator=generator)

    # -- interaction -----------------------------------------------------------------------
    @override
    def on_fit_start(self) -> None:
        assert self.actor is not None
        datamodule = self.trainer.datamodule
        self.train_env = datamodule.make_env("train")
        self.buffer = ReplayBuffer(self.buffer_size, datamodule.obs_dim, datamodule.act_dim, device=self.device)
        self._obs, _ = self.train_env.reset(seed=int(datamodule.env_seed))
        self._day_return = np.zeros(self.train_env.num_envs)
        self._day_violations = np.zeros(self.train_env.num_envs)
        # The replay buffer lives outside checkpoints: a resumed run refills it the same way.
        while len(self.buffer) < min(self.warmup_transitions, self.buffer_size):
            self._collect(random_actions=True)

    @torch.no_grad()
    def _collect(self, random_actions: bool = False) -> None:
        """One vectorised environment step with the exploration policy into the buffer."""
        assert self.train_env is not None and self.buffer is not None and self._obs is not None
        env = self.train_env
        obs = torch.from_numpy(self._obs).to(self.device)
        if random_actions:
            action = torch.rand(env.num_envs, env.action_dim, generator=self._generator) * 2 - 1
        else:
            acting_on = obs
            if self.method == "adversarial" and self.rollout_attack_prob > 0 and \
                    float(torch.rand((), generator=self._generator)) < self.rollout_attack_prob:
                acting_on = self.attack(obs, float(self.current_eps), self.adv_steps, "action", self._generator)
            action = self.actor(acting_on).cpu()
            noise = torch.randn(action.shape, generator=self._generator) * self.exploration_noise
            action = (action + noise).clamp(-1.0, 1.0)
        next_obs, reward, terminated, truncated, info = env.step(action.numpy())
        stored_next = info["final_obs"] if truncated.any() else next_obs
        self.buffer.add(obs, action, torch.from_numpy(reward), torch.from_numpy(stored_next),
                        torch.from_numpy(terminated))
        self._obs = next_obs
        assert self._day_return is not None and self._day_violations is not None
        self._day_return += reward
        self._day_violations += info["violation"]
        if truncated.any() and not random_actions and self._trainer is not None:
            steps = env.grid.steps_per_day
            self.log("train/episode_return", float(self._day_return.mean()))
            self.log("train/violation_rate", float(self._day_violations.mean() / steps))
        if truncated.any():
            self._day_return[:] = 0.0
            self._day_violations[:] = 0.0

    # -- training --------------------------------------------------------------------------
    def _eps_now(self) -> float:
        if self.eps_schedule == "linear":
            return self.adv_eps * min(1.0, float(self.updates) / self.eps_ramp_updates)
        return float(self.current_eps)

    def _adversarial_obs(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Mixed clean/attacked actor inputs and the mask of attacked rows."""
        assert self.actor is not None and self.critic is not None
        batch = obs.shape[0]
        k = round(self.adv_fraction * batch)
        mask = torch.zeros(batch, dtype=torch.bool, device=obs.device)
        eps = self._eps_now()
        self.current_eps.fill_(eps)
        if k == 0 or eps <= 0:
            return obs, mask
        if self.adv_selection == "random":
            rows = torch.randperm(batch, generator=self._generator)[:k].to(obs.device)
            attacked = obs.clone()
            if self.method == "noise":
                attacked[rows] = random_observation_noise(obs[rows], eps, self.measurement_dim, self._generator)
            else:
                attacked[rows] = self.attack(obs[rows], eps, self.adv_steps, self.adv_objective, self._generator)
            mask[rows] = True
        else:
            attacked_all = self.attack(obs, eps, self.adv_steps, self.adv_objective, self._generator)
            with torch.no_grad():
                impact = self.critic.q1(obs, self.actor(obs)) - self.critic.q1(obs, self.actor(attacked_all))
            rows = impact.topk(k).indices
            mask[rows] = True
            attacked = torch.where(mask[:, None], attacked_all, obs)
        if self.eps_schedule == "adaptive":
            with torch.no_grad():
                deviation = (self.actor(attacked[mask]) - self.actor(obs[mask])).abs().amax(-1).mean()
            rate = self.eps_adapt_rate if float(deviation) < self.impact_target else -self.eps_adapt_rate
            self.current_eps.fill_(min(self.adv_eps, max(self.eps_min, eps * (1.0 + rate))))
            self._train_logs["train/attack_deviation"] = deviation
        return attacked, mask

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        assert self.buffer is not None and self.actor is not None and self.critic is not None
        assert self.actor_target is not None and self.critic_target is not None
        for _ in range(self.env_steps_per_update):
            self._collect()
        data = self.buffer.sample(self.batch_size, self._generator)
        obs, action, reward = data["obs"], data["action"], data["reward"]
        with torch.no_grad():
            noise = (torch.randn(action.shape, generator=self._generator).to(self.device) * self.target_noise)
            noise = noise.clamp(-self.target_noise_clip, self.target_noise_clip)
            next_action = (self.actor_target(data["next_obs"]) + noise).clamp(-1.0, 1.0)
            q1_next, q2_next = self.critic_target(data["next_obs"], next_action)
            target = reward + self.gamma * (1.0 - data["done"]) * torch.minimum(q1_next, q2_next)
        q1, q2 = self.critic(obs, action)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        loss = critic_loss
        self._train_logs = {"train/critic_loss": critic_loss.detach(), "train/q_mean": q1.detach().mean()}
        self._actor_updated = int(self.updates) % self.policy_delay == 0
        if self._actor_updated:
            loss = loss + self._actor_loss(obs)
        self.updates += 1
        # Lightning's per-call logging costs more than a small TD3 update: log only on the steps
        # the loggers write (every trainer.log_every_n_steps).
        if self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self.log_dict(self._train_logs)
            self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    def _actor_loss(self, obs: Tensor) -> Tensor:
        assert self.actor is not None and self.critic is not None
        mask = None
        actor_obs = obs
        if self.method in ("adversarial", "noise"):
            actor_obs, mask = self._adversarial_obs(obs)
            self._train_logs["train/adv_eps"] = self.current_eps.clone()
        action = self.actor(actor_obs)
        # Critic parameters enter detached: the actor loss trains the actor only.
        frozen = {name: p.detach() for name, p in self.critic.named_parameters()}
        q = torch.func.functional_call(self.critic, frozen, (obs, action))[0]
        actor_loss = -q.mean()
        self._train_logs["train/actor_loss"] = actor_loss.detach()
        if mask is not None and self.smoothness_weight > 0 and bool(mask.any()):
            smooth = (action[mask] - self.actor(obs[mask])).pow(2).sum(-1).mean()
            self._train_logs["train/smoothness"] = smooth.detach()
            actor_loss = actor_loss + self.smoothness_weight * smooth
        return actor_loss

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # TD3 moves the targets together with the delayed actor update, after the optimizer step.
        if not self._actor_updated:
            return
        assert self.actor is not None and self.critic is not None
        assert self.actor_target is not None and self.critic_target is not None
        with torch.no_grad():
            for net, target in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                for p, p_target in zip(net.parameters(), target.parameters(), strict=False):
                    p_target.lerp_(p, self.tau)

    @override
    def default_optimizer(self, params: Any) -> torch.optim.Optimizer:
        return torch.optim.Adam(params)

    @override
    def optimizer_parameters(self) -> list[dict[str, Any]]:
        # Two groups, one optimizer: one training step is one optimizer step.
        assert self.actor is not None and self.critic is not None
        return [
            {"params": list(self.actor.parameters()), "lr": self.actor_lr},
            {"params": list(self.critic.parameters()), "lr": self.critic_lr},
        ]

    # -- evaluation ------------------------------------------------------------------------
    def attack_tags(self) -> list[tuple[str, float]]:
        """``(name, eps)`` of each evaluation attack, e.g. ``("pgd10_action_linf_eps0.05", 0.05)``."""
        return [(f"pgd{self.eval_attack_steps}_{self.eval_attack_objective}_linf_{eps_tag(e)}", e)
                for e in self.eval_attack_eps]

    def _eval_env(self, split: str, num_envs: int) -> VoltVarVectorEnv:
        key = (split, num_envs)
        if key not in self._eval_envs:
            self._eval_envs[key] = self.trainer.datamodule.make_env(split, num_envs=num_envs)
        return self._eval_envs[key]

    def policy_fn(self, eps: float = 0.0, generator: torch.Generator | None = None,
                  objective: AttackObjective | None = None, steps: int | None = None) -> Any:
        """``obs (numpy) -> action (numpy)``: the deterministic policy, acting on observations
        attacked by PGD (``steps``, ``objective``: the evaluation attack's by default) when ``eps > 0``.
        """
        objective = self.eval_attack_objective if objective is None else objective
        steps = self.eval_attack_steps if steps is None else steps

        def act(obs: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(obs).to(self.device)
            if eps > 0:
                x = self.attack(x, eps, steps, objective, generator)
            with torch.no_grad():
                return self(x).cpu().numpy()
        return act

    def _evaluate(self, days: Tensor, stage: str) -> None:
        env = self._eval_env(stage, int(days.numel()))
        day_list = days.tolist()
        n = len(day_list)
        for key, value in run_episodes(env, self.policy_fn(), day_list).summary().items():
            self.log(f"{stage}/{key}", value, batch_size=n, prog_bar=key == "violation_rate")
        for name, eps in self.attack_tags():
            stats = run_episodes(env, self.policy_fn(eps, self._eval_generator), day_list).summary()
            for key, value in stats.items():
                self.log(f"{stage}/robust_{key}/{name}", value, batch_size=n)

    @override
    def on_evaluation_epoch_start(self, stage: str) -> None:
        # Same attack random starts every evaluation: epochs are compared on equal terms.
        self._eval_generator.manual_seed(self.seed + 1)

    @override
    def evaluation_step(self, batch: Tensor, stage: str, dataloader_idx: int = 0) -> None:
        """Runs the batch's days (clean and under each evaluation attack) and logs their metrics."""
        self._evaluate(batch, stage)

    @override
    def predict_step(self, batch: Tensor, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Deterministic actions ``(B, act_dim)`` in ``[-1, 1]`` for observations ``(B, obs_dim)`` in ``[0, 1]``."""
        return self(batch)
