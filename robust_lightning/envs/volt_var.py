"""Volt-Var control on a distribution feeder: PV inverters set reactive power to keep voltages in band.

A MAPDN-style task (Wang et al. 2021, "Multi-Agent Reinforcement Learning for Active Voltage
Control on Power Distribution Networks") on pandapower's IEEE 33-bus feeder (``case33bw``) with
PV inverters at a few buses, as a single centralised agent:

* **action** ``a ∈ [-1, 1]^n_pv``; inverter ``k`` sets ``q_k = a_k · sqrt(s_max_k² − p_pv_k²)``
  (MVAr, positive = injection), ``s_max = inverter_oversize · pv_capacity_mw``;
* **observation** (all features scaled to ``[0, 1]`` by fixed physical ranges, clipped):
  load active power of every load bus, PV output, voltage magnitude of every non-slack bus
  (from the power flow of the previous step, as MAPDN does), the previous action and the hour of
  day as ``(sin, cos)``. The first :attr:`VoltVarVectorEnv.measurement_dim` features are
  measurements (what an observation attack perturbs); the rest are the controller's own state;
* **reward** ``−voltage_weight · mean_i barrier(v_i) − q_weight · mean_k |q_k|`` with
  ``barrier(v) = relu(v − 1.05) + relu(0.95 − v)`` in p.u. and ``q_weight = 0.1`` (MAPDN's α);
* **episode**: one day of ``steps_per_day`` control steps; daily load and PV profiles are
  generated from ``(profile_seed, split, day)``, so every day of every split is reproducible
  and the train/val/test days never overlap.

Power flow: ``power_flow="pandapower"`` runs :func:`pandapower.runpp` (Newton-Raphson) on one
network copy per sub-environment; ``power_flow="zbus"`` solves the *same* AC power-flow
equations for the whole batch at once by the implicit Z-bus fixed point
``V_L = Y_LL⁻¹ (conj(S_L / V_L) − Y_Ls V_s)`` on pandapower's own bus admittance matrix, iterated
until ``max |ΔV| < 1e-10`` p.u. It is not a linearisation (it converges to the AC solution;
``tests/envs/test_volt_var.py`` checks it against ``pp.runpp``), but about a thousand times
faster per scenario on CPU, which is what makes RL training on two CPU cores feasible. Training
uses ``zbus``; evaluation defaults to ``pandapower``.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from robust_lightning._extras import check_installed, require
from robust_lightning._validation import (
    check_int,
    check_non_negative,
    check_number,
    check_positive,
    check_positive_int,
    check_positive_ints,
    check_range,
)

gym = require("gymnasium", "rl")
# pandapower is imported where it is used (its import takes seconds); check now that it is
# there, so a missing extra fails at import with the install line rather than mid-episode.
check_installed("pandapower", "rl")
from gymnasium.vector import AutoresetMode, VectorEnv  # noqa: E402  (after the extra check)
from typing_extensions import override

__all__ = [
    "POWER_FLOWS",
    "SPLITS",
    "EpisodeStats",
    "VoltVarEnv",
    "VoltVarGrid",
    "VoltVarVectorEnv",
    "run_episodes",
    "voltage_barrier",
]

PowerFlow = Literal["zbus", "pandapower"]
Split = Literal["train", "val", "test"]
POWER_FLOWS: tuple[str, ...] = ("zbus", "pandapower")
SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}

# The PV buses of the default layout: the ends of the main feeder (12, 17) and of the three
# laterals (21, 24, 32) plus one mid-lateral bus (29), where voltages swing most.
DEFAULT_PV_BUSES: tuple[int, ...] = (12, 17, 21, 24, 29, 32)
# Fixed observation ranges: voltages in [0.8, 1.2] p.u.; loads up to 1.6 x nominal x load_scale
# (the profile's peak 1.0 x day factor 1.1 x bus factor 1.3 x step noise stays below it).
_V_OBS_RANGE = (0.8, 1.2)
_LOAD_OBS_MAX = 1.6


def voltage_barrier(vm_pu: np.ndarray, v_min: float = 0.95, v_max: float = 1.05) -> np.ndarray:
    """Distance outside the band ``[v_min, v_max]`` (p.u.), elementwise; zero inside it."""
    return np.maximum(vm_pu - v_max, 0.0) + np.maximum(v_min - vm_pu, 0.0)


@functools.lru_cache(maxsize=1)
def _case33bw() -> Any:
    # Building the network parses pandapower's JSON (seconds on a busy CPU); copies are cheap.
    import pandapower.networks as pn

    return pn.case33bw()


def _bump(hours: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.exp(-(((hours - center) / width) ** 2))


class VoltVarGrid:
    """The feeder, its PV inverters, the daily profiles and the power flow (no RL state).

    Args:
        network: pandapower test network; only ``"case33bw"`` (IEEE 33-bus, Baran & Wu 1989).
        pv_buses: bus indices (pandapower numbering, slack = 0) with a PV inverter.
        pv_capacity_mw: PV peak power per inverter (MW).
        inverter_oversize: inverter apparent-power rating as a multiple of the PV capacity.
        load_scale: multiplier of the network's nominal loads.
        steps_per_day: control steps per day (24 = hourly).
        profile_seed: seed of the daily load/PV profiles.
        voltage_band: ``(v_min, v_max)`` in p.u.

    Raises:
        ValueError: on an unknown network, a bad PV bus list or an out-of-range number.
    """

    def __init__(
        self,
        network: str = "case33bw",
        pv_buses: Sequence[int] = DEFAULT_PV_BUSES,
        pv_capacity_mw: float = 1.0,
        inverter_oversize: float = 1.2,
        load_scale: float = 1.0,
        steps_per_day: int = 24,
        profile_seed: int = 0,
        voltage_band: tuple[float, float] = (0.95, 1.05),
    ) -> None:
        if network != "case33bw":
            raise ValueError(f"network must be 'case33bw', got {network!r}")
        check_positive("pv_capacity_mw", pv_capacity_mw)
        check_positive("load_scale", load_scale)
        check_positive_int("steps_per_day", steps_per_day)
        check_number("inverter_oversize", inverter_oversize, 1.0)
        check_int("profile_seed", profile_seed, minimum=0)
        v_min, v_max = check_range("voltage_band", voltage_band)
        if not 0.5 < v_min < 1.0 < v_max < 1.5:
            raise ValueError(f"voltage_band must be (v_min, v_max) with 0.5 < v_min < 1 < v_max < 1.5, got {voltage_band!r}")
        buses = list(check_positive_ints("pv_buses", pv_buses, non_empty=True))  # bus 0 is the slack
        self.net = self._build_network()
        n_bus = len(self.net.bus)
        if len(set(buses)) != len(buses) or max(buses) >= n_bus:
            raise ValueError(f"pv_buses must be distinct non-slack bus indices in 1..{n_bus - 1}, got {list(pv_buses)!r}")
        self.network = network
        self.pv_buses = np.asarray(buses, dtype=np.int64)
        self.pv_capacity_mw = float(pv_capacity_mw)
        self.s_max_mva = float(inverter_oversize) * self.pv_capacity_mw
        self.load_scale = float(load_scale)
        self.steps_per_day = int(steps_per_day)
        self.profile_seed = int(profile_seed)
        self.v_min, self.v_max = v_min, v_max
        self.n_bus = n_bus
        self.slack_bus = int(self.net.ext_grid.bus.iloc[0])
        self.load_buses = self.net.load.bus.to_numpy(dtype=np.int64)
        self.load_p_mw = self.net.load.p_mw.to_numpy(dtype=np.float64) * self.load_scale
        self.load_q_mvar = self.net.load.q_mvar.to_numpy(dtype=np.float64) * self.load_scale
        self.non_slack = np.array([b for b in range(n_bus) if b != self.slack_bus], dtype=np.int64)
        # The PV inverters as static generators; the pandapower path writes p/q into them.
        import pandapower as pp

        for bus in self.pv_buses:
            pp.create_sgen(self.net, int(bus), p_mw=0.0, q_mvar=0.0, sn_mva=self.s_max_mva, name=f"pv{bus}")
        self._prepare_zbus()

    @staticmethod
    def _build_network() -> Any:
        return copy.deepcopy(_case33bw())

    def _prepare_zbus(self) -> None:
        """Take pandapower's bus admittance matrix and factor the non-slack block once."""
        import pandapower as pp

        net = copy.deepcopy(self.net)
        pp.runpp(net, numba=False)
        ppc = net._ppc
        lookup = np.asarray(net._pd2ppc_lookups["bus"])
        ybus = np.asarray(ppc["internal"]["Ybus"].toarray())
        # Reorder pandapower's internal bus order back to bus indices (identity for case33bw).
        order = lookup[np.arange(self.n_bus)]
        ybus = ybus[np.ix_(order, order)]
        self.base_mva = float(ppc["baseMVA"])
        slack_vm = float(net.ext_grid.vm_pu.iloc[0])
        slack_va = math.radians(float(net.ext_grid.va_degree.iloc[0]))
        self._v_slack = slack_vm * complex(math.cos(slack_va), math.sin(slack_va))
        y_ll = ybus[np.ix_(self.non_slack, self.non_slack)]
        self._z_ll = np.linalg.inv(y_ll)
        # Constant part of the fixed point: -Y_LL^-1 Y_Ls V_s (the no-load voltage profile).
        self._v_no_load = -self._z_ll @ (ybus[self.non_slack, self.slack_bus] * self._v_slack)

    # -- profiles --------------------------------------------------------------------------
    def hours(self) -> np.ndarray:
        """Hour of day at the middle of each control step, ``(steps_per_day,)``."""
        return (np.arange(self.steps_per_day) + 0.5) * 24.0 / self.steps_per_day

    def day_profile(self, split: Split, day: int) -> tuple[np.ndarray, np.ndarray]:
        """Load multipliers ``(T, n_load)`` and PV output in MW ``(T, n_pv)`` of one day.

        Our synthetic profiles (shape of typical residential feeders and clear-sky PV):

        * load ``= (0.45 + 0.25·bump(8 h, 2 h) + 0.55·bump(19.5 h, 2.5 h)) · day factor U(0.8, 1.1)
          · bus factor N(1, 0.08) · exp(N(0, 0.03)) per step and bus``;
        * PV ``= capacity · sin(π·(h − sunrise)/(sunset − sunrise))^1.5 · cloud``, sunrise U(5, 7) h,
          sunset U(17, 20) h, cloud index starting U(0.3, 1) and random-walking (σ = 0.05 per
          step, clipped to [0.05, 1]), per-inverter factor U(0.9, 1).

        The generator is seeded by ``(profile_seed, split, day)`` only: a day is the same
        whatever else was generated before it.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        check_int("day", day, minimum=0)
        rng = np.random.default_rng([self.profile_seed, _SPLIT_ID[split], int(day)])
        hours = self.hours()
        steps, n_load, n_pv = self.steps_per_day, len(self.load_buses), len(self.pv_buses)
        shape = 0.45 + 0.25 * _bump(hours, 8.0, 2.0) + 0.55 * _bump(hours, 19.5, 2.5)
        day_factor = rng.uniform(0.8, 1.1)
        bus_factor = np.clip(rng.normal(1.0, 0.08, n_load), 0.7, 1.3)
        noise = np.exp(rng.normal(0.0, 0.03, (steps, n_load)))
        load = shape[:, None] * day_factor * bus_factor[None] * noise
        sunrise, sunset = rng.uniform(5.0, 7.0), rng.uniform(17.0, 20.0)
        daylight = (hours - sunrise) / (sunset - sunrise)
        # Exactly zero outside daylight (sin(pi) is 1e-16, not 0, in floating point).
        clear_sky = np.where((daylight > 0) & (daylight < 1), np.abs(np.sin(np.pi * daylight)) ** 1.5, 0.0)
        cloud = np.clip(rng.uniform(0.3, 1.0) + np.cumsum(rng.normal(0.0, 0.05, steps)), 0.05, 1.0)
        pv_factor = rng.uniform(0.9, 1.0, n_pv)
        pv = self.pv_capacity_mw * clear_sky[:, None] * cloud[:, None] * pv_factor[None]
        return load, pv

    def q_limit(self, pv_p_mw: np.ndarray) -> np.ndarray:
        """Reactive-power headroom ``sqrt(s_max² − p²)`` (MVAr) of each inverter."""
        return np.sqrt(np.maximum(self.s_max_mva**2 - pv_p_mw**2, 0.0))

    # -- power flow ------------------------------------------------------------------------
    def solve_zbus(
        self, load_mult: np.ndarray, pv_p_mw: np.ndarray, pv_q_mvar: np.ndarray,
        tol: float = 1e-10, max_iter: int = 200,
    ) -> np.ndarray:
        """Voltage magnitudes ``(B, n_bus)`` of a batch of operating points (AC power flow).

        Args:
            load_mult: ``(B, n_load)`` multipliers of the (scaled) nominal loads.
            pv_p_mw: ``(B, n_pv)`` PV active power.
            pv_q_mvar: ``(B, n_pv)`` inverter reactive power (positive = injection).
            tol: convergence threshold on ``max |ΔV|`` (p.u.).
            max_iter: iteration cap.

        Raises:
            RuntimeError: when the fixed point has not converged (an operating point far
                outside what the feeder can carry).
        """
        batch = load_mult.shape[0]
        s_inj = np.zeros((batch, self.n_bus), dtype=np.complex128)
        # Bus indices are distinct within each group, so fancy-index += adds every entry once.
        s_inj[:, self.load_buses] -= load_mult * self.load_p_mw + 1j * load_mult * self.load_q_mvar
        s_inj[:, self.pv_buses] += pv_p_mw + 1j * pv_q_mvar
        s_l = s_inj[:, self.non_slack] / self.base_mva
        z_t = self._z_ll.T
        v = np.broadcast_to(self._v_no_load, s_l.shape).copy()
        for _ in range(max_iter):
            v_next = np.conj(s_l / v) @ z_t + self._v_no_load
            delta = float(np.max(np.abs(v_next - v)))
            v = v_next
            if not math.isfinite(delta):
                break
            if delta < tol:
                vm = np.empty((batch, self.n_bus))
                vm[:, self.slack_bus] = abs(self._v_slack)
                vm[:, self.non_slack] = np.abs(v)
                return vm
        raise RuntimeError(
            f"zbus power flow did not converge in {max_iter} iterations; the operating point is "
            "outside what the feeder can carry (check load_scale / pv_capacity_mw)"
        )

    def make_pandapower_net(self) -> Any:
        """A fresh copy of the network (with the PV static generators) for ``pp.runpp``."""
        return copy.deepcopy(self.net)

    def solve_pandapower(
        self, net: Any, load_mult: np.ndarray, pv_p_mw: np.ndarray, pv_q_mvar: np.ndarray
    ) -> np.ndarray:
        """Voltage magnitudes ``(n_bus,)`` of one operating point by ``pandapower.runpp``."""
        import pandapower as pp

        net.load["p_mw"] = load_mult * self.load_p_mw
        net.load["q_mvar"] = load_mult * self.load_q_mvar
        net.sgen["p_mw"] = pv_p_mw
        net.sgen["q_mvar"] = pv_q_mvar
        warm = net.get("converged", False) and len(net.res_bus) == self.n_bus
        # Warm start from the previous step's solution: the same converged AC solution, ~2x faster.
        pp.runpp(net, numba=False, init="results" if warm else "auto")
        return net.res_bus.vm_pu.to_numpy(dtype=np.float64)


@dataclass
class EpisodeStats:
    """Per-step records of evaluation episodes, ``(T, num_envs[, ...])`` arrays."""

    rewards: np.ndarray
    vm_pu: np.ndarray
    q_mvar: np.ndarray
    v_min: float
    v_max: float

    def summary(self) -> dict[str, float]:
        """``return`` (mean per-day sum of rewards), ``violation_rate`` (fraction of steps with any
        bus outside the band, 1 − MAPDN's controllable rate), ``bus_violation_rate`` (fraction of
        (step, bus) pairs outside), ``q_use`` (mean |q| per inverter, MVAr).
        """
        outside = (self.vm_pu < self.v_min) | (self.vm_pu > self.v_max)
        return {
            "return": float(self.rewards.sum(0).mean()),
            "violation_rate": float(outside.any(-1).mean()),
            "bus_violation_rate": float(outside.mean()),
            "q_use": float(np.abs(self.q_mvar).mean()),
        }


class VoltVarVectorEnv(VectorEnv):
    """``num_envs`` synchronous days of Volt-Var control (a gymnasium ``VectorEnv``).

    All sub-environments start at hour 0 and end together after ``steps_per_day`` steps, then
    reset to new days (same-step autoreset: the step that ends a day returns the next day's
    first observation and puts the last one in ``info["final_obs"]``).

    Args:
        num_envs: number of days run side by side.
        split: which day pool ``"train"``, ``"val"`` or ``"test"`` days come from.
        num_days: size of the day pool (days ``0..num_days-1``).
        power_flow: ``"zbus"`` (batched, for training) or ``"pandapower"`` (``pp.runpp``).
        voltage_weight: weight of the mean voltage barrier in the reward.
        q_weight: weight of the mean ``|q|`` (MVAr) in the reward (MAPDN's α = 0.1).
        grid: a :class:`VoltVarGrid`; built from ``grid_kwargs`` when ``None``.
        **grid_kwargs: arguments of :class:`VoltVarGrid`.
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        split: Split = "train",
        num_days: int = 365,
        power_flow: PowerFlow = "zbus",
        voltage_weight: float = 100.0,
        q_weight: float = 0.1,
        grid: VoltVarGrid | None = None,
        **grid_kwargs: Any,
    ) -> None:
        check_positive_int("num_envs", num_envs)
        check_positive_int("num_days", num_days)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if power_flow not in POWER_FLOWS:
            raise ValueError(f"power_flow must be one of {POWER_FLOWS}, got {power_flow!r}")
        check_non_negative("voltage_weight", voltage_weight)
        check_non_negative("q_weight", q_weight)
        if grid is not None and grid_kwargs:
            raise ValueError(f"pass either grid or grid arguments, not both (got {sorted(grid_kwargs)})")
        self.grid = grid if grid is not None else VoltVarGrid(**grid_kwargs)
        self.num_envs = int(num_envs)
        self.split = split
        self.num_days = int(num_days)
        self.power_flow = power_flow
        self.voltage_weight = float(voltage_weight)
        self.q_weight = float(q_weight)
        g = self.grid
        n_load, n_pv, n_v = len(g.load_buses), len(g.pv_buses), len(g.non_slack)
        sizes = {"load_p": n_load, "pv_p": n_pv, "vm_pu": n_v, "prev_action": n_pv, "time": 2}
        self.obs_slices: dict[str, slice] = {}
        start = 0
        for name, size in sizes.items():
            self.obs_slices[name] = slice(start, start + size)
            start += size
        self.obs_dim = start
        # Loads, PV output and voltages are measurements (what false data can corrupt).
        self.measurement_dim = n_load + n_pv + n_v
        self.action_dim = n_pv
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (self.obs_dim,), np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (n_pv,), np.float32)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.num_envs, self.obs_dim), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.num_envs, n_pv), np.float32)
        self._nets = [g.make_pandapower_net() for _ in range(self.num_envs)] if power_flow == "pandapower" else []
        self._days = np.zeros(self.num_envs, dtype=np.int64)
        self._t = 0
        self._load = np.zeros((self.num_envs, g.steps_per_day, n_load))
        self._pv = np.zeros((self.num_envs, g.steps_per_day, n_pv))
        self._vm = np.ones((self.num_envs, g.n_bus))
        self._prev_action = np.zeros((self.num_envs, n_pv))
        self._pending_days: list[int] = []

    @property
    def days(self) -> np.ndarray:
        """Day index of each sub-environment's current episode."""
        return self._days.copy()

    @property
    def hour_index(self) -> int:
        """Control step within the current day (0-based)."""
        return self._t

    # -- internals -------------------------------------------------------------------------
    def _power_flow(self, load_mult: np.ndarray, pv_p: np.ndarray, pv_q: np.ndarray) -> np.ndarray:
        if self.power_flow == "zbus":
            return self.grid.solve_zbus(load_mult, pv_p, pv_q)
        return np.stack([self.grid.solve_pandapower(net, load_mult[i], pv_p[i], pv_q[i])
                         for i, net in enumerate(self._nets)])

    def _start_days(self, days: np.ndarray) -> None:
        self._days = days.astype(np.int64)
        for i, day in enumerate(self._days):
            self._load[i], self._pv[i] = self.grid.day_profile(self.split, int(day))
        self._t = 0
        self._prev_action[:] = 0.0
        # What the controller measures before its first action: the inverters at q = 0.
        self._vm = self._power_flow(self._load[:, 0], self._pv[:, 0], np.zeros_like(self._pv[:, 0]))

    def _next_days(self) -> np.ndarray:
        if self._pending_days:
            take, self._pending_days = self._pending_days[: self.num_envs], self._pending_days[self.num_envs:]
            if len(take) == self.num_envs:
                return np.asarray(take)
        return self.np_random.integers(0, self.num_days, self.num_envs)

    def _observation(self) -> np.ndarray:
        g, t = self.grid, self._t
        hour = g.hours()[t]
        obs = np.empty((self.num_envs, self.obs_dim), dtype=np.float64)
        obs[:, self.obs_slices["load_p"]] = self._load[:, t] / _LOAD_OBS_MAX
        obs[:, self.obs_slices["pv_p"]] = self._pv[:, t] / g.pv_capacity_mw
        lo, hi = _V_OBS_RANGE
        obs[:, self.obs_slices["vm_pu"]] = (self._vm[:, g.non_slack] - lo) / (hi - lo)
        obs[:, self.obs_slices["prev_action"]] = (self._prev_action + 1.0) / 2.0
        angle = 2.0 * math.pi * hour / 24.0
        obs[:, self.obs_slices["time"]] = (np.array([math.sin(angle), math.cos(angle)]) + 1.0) / 2.0
        return np.clip(obs, 0.0, 1.0).astype(np.float32)

    # -- gymnasium API ---------------------------------------------------------------------
    @override
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start new days: ``options={"days": [...]}`` picks them (``num_envs`` days now, any
        further ones are used by the following autoresets, in order), else they are drawn
        from the split's pool with the env's seeded generator.
        """
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        days = (options or {}).get("days")
        if days is not None:
            days = [int(d) for d in days]
            if len(days) < self.num_envs or any(d < 0 or d >= self.num_days for d in days):
                raise ValueError(
                    f"options['days'] must hold at least num_envs={self.num_envs} day indices in "
                    f"0..{self.num_days - 1}, got {days!r}"
                )
            self._pending_days = days[self.num_envs:]
            self._start_days(np.asarray(days[: self.num_envs]))
        else:
            self._pending_days = []
            self._start_days(self._next_days())
        return self._observation(), {"day": self.days}

    @override
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, self.action_dim):
            raise ValueError(f"actions must have shape ({self.num_envs}, {self.action_dim}), got {actions.shape}")
        if not np.isfinite(actions).all():
            raise ValueError("actions contain NaN or inf")
        actions = np.clip(actions, -1.0, 1.0)
        t = self._t
        load, pv_p = self._load[:, t], self._pv[:, t]
        q = actions * self.grid.q_limit(pv_p)
        vm = self._power_flow(load, pv_p, q)
        barrier = voltage_barrier(vm[:, self.grid.non_slack], self.grid.v_min, self.grid.v_max)
        voltage_penalty = barrier.mean(-1)
        q_penalty = np.abs(q).mean(-1)
        reward = -(self.voltage_weight * voltage_penalty + self.q_weight * q_penalty)
        outside = (vm < self.grid.v_min) | (vm > self.grid.v_max)
        info: dict[str, Any] = {
            "vm_pu": vm, "q_mvar": q, "violation": outside.any(-1), "bus_violations": outside.sum(-1),
            "voltage_penalty": voltage_penalty, "q_penalty": q_penalty, "day": self.days, "step": np.full(self.num_envs, t),
        }
        self._vm = vm
        self._prev_action = actions
        truncated = np.zeros(self.num_envs, dtype=bool)
        if t + 1 < self.grid.steps_per_day:
            self._t = t + 1
            obs = self._observation()
        else:
            # Day over: hand out its last observation (hour 0 of the next day with this day's
            # final state, for bootstrapping) and start the next days.
            self._t = 0
            info["final_obs"] = self._observation_after_day()
            truncated[:] = True
            self._start_days(self._next_days())
            obs = self._observation()
        return obs, reward.astype(np.float64), np.zeros(self.num_envs, dtype=bool), truncated, info

    def _observation_after_day(self) -> np.ndarray:
        # The observation a controller would see at midnight: the last step's loads/PV (the
        # next day is not known yet), the voltages it just produced and the clock at hour 0.
        t_last = self.grid.steps_per_day - 1
        self._t = t_last
        obs = self._observation()
        angle = 2.0 * math.pi * (self.grid.hours()[0]) / 24.0
        obs[:, self.obs_slices["time"]] = ((np.array([math.sin(angle), math.cos(angle)]) + 1.0) / 2.0).astype(np.float32)
        self._t = 0
        return obs


class VoltVarEnv(gym.Env):
    """One day at a time of Volt-Var control (a gymnasium ``Env``; see :class:`VoltVarVectorEnv`).

    ``terminated`` is never set; ``truncated`` ends each day. Arguments are those of
    :class:`VoltVarVectorEnv` without ``num_envs``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, **kwargs: Any) -> None:
        if "num_envs" in kwargs:
            raise ValueError("VoltVarEnv is a single environment; use VoltVarVectorEnv for num_envs")
        self._vector = VoltVarVectorEnv(num_envs=1, **kwargs)
        self.observation_space = self._vector.single_observation_space
        self.action_space = self._vector.single_action_space

    @property
    def unwrapped_vector(self) -> VoltVarVectorEnv:
        """The one-environment vector env doing the work."""
        return self._vector

    @override
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        day = (options or {}).get("day")
        vector_options = None if day is None else {"days": [day]}
        obs, info = self._vector.reset(seed=seed, options=vector_options)
        return obs[0], {k: v[0] for k, v in info.items()}

    @override
    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self._vector.step(np.asarray(action)[None])
        if truncated[0]:
            # A single env ends here; the caller resets (gymnasium's single-env contract).
            obs = info.pop("final_obs")
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), {k: v[0] for k, v in info.items()}


def run_episodes(
    env: VoltVarVectorEnv, act: Callable[[np.ndarray], np.ndarray], days: Sequence[int]
) -> EpisodeStats:
    """Run whole days with a controller; the days are run ``env.num_envs`` at a time.

    Args:
        env: the environment (its ``num_envs`` must divide ``len(days)``).
        act: maps observations ``(num_envs, obs_dim)`` to actions ``(num_envs, n_pv)`` in [-1, 1].
        days: day indices of ``env.split``.

    Returns:
        :class:`EpisodeStats` over all days.
    """
    days = [int(d) for d in days]
    if not days or len(days) % env.num_envs:
        raise ValueError(f"len(days)={len(days)} must be a positive multiple of env.num_envs={env.num_envs}")
    rewards, vms, qs = [], [], []
    for start in range(0, len(days), env.num_envs):
        obs, _ = env.reset(options={"days": days[start: start + env.num_envs]})
        day_r, day_v, day_q = [], [], []
        for _ in range(env.grid.steps_per_day):
            obs, reward, _, _, info = env.step(act(obs))
            day_r.append(reward)
            day_v.append(info["vm_pu"])
            day_q.append(info["q_mvar"])
        rewards.append(np.stack(day_r))
        vms.append(np.stack(day_v))
        qs.append(np.stack(day_q))
    return EpisodeStats(np.concatenate(rewards, 1), np.concatenate(vms, 1), np.concatenate(qs, 1),
                        env.grid.v_min, env.grid.v_max)
