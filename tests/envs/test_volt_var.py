"""Volt-Var environment: power flow against pandapower, profiles, spaces, reward, autoreset."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from robust_lightning.envs import VoltVarEnv, VoltVarGrid, VoltVarVectorEnv, run_episodes, voltage_barrier


@pytest.fixture(scope="module")
def grid() -> VoltVarGrid:
    return VoltVarGrid()


def test_zbus_power_flow_matches_pandapower_runpp(grid: VoltVarGrid) -> None:
    rng = np.random.default_rng(0)
    net = grid.make_pandapower_net()
    n_load, n_pv = len(grid.load_buses), len(grid.pv_buses)
    load = rng.uniform(0.3, 1.4, (6, n_load))
    pv_p = rng.uniform(0.0, grid.pv_capacity_mw, (6, n_pv))
    pv_q = rng.uniform(-1, 1, (6, n_pv)) * grid.q_limit(pv_p)
    vm_zbus = grid.solve_zbus(load, pv_p, pv_q)
    vm_pp = np.stack([grid.solve_pandapower(net, load[i], pv_p[i], pv_q[i]) for i in range(6)])
    # pandapower stops at a 1e-8 MVA mismatch; both solve the same AC equations.
    assert np.abs(vm_zbus - vm_pp).max() < 1e-6
    assert vm_zbus.min() < 0.95 or vm_zbus.max() > 1.05, "random set-points should leave the band somewhere"


def test_vector_env_gives_the_same_days_on_either_power_flow(grid: VoltVarGrid) -> None:
    days = [0, 3]
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, (grid.steps_per_day, 2, len(grid.pv_buses)))
    stats = {}
    for flow in ("zbus", "pandapower"):
        env = VoltVarVectorEnv(num_envs=2, split="val", num_days=4, power_flow=flow, grid=grid)
        replay = iter(actions)
        stats[flow] = run_episodes(env, lambda obs, replay=replay: next(replay), days)
    assert np.abs(stats["zbus"].vm_pu - stats["pandapower"].vm_pu).max() < 1e-6
    assert stats["zbus"].summary()["violation_rate"] == stats["pandapower"].summary()["violation_rate"]


def test_profiles_are_reproducible_per_split_and_day(grid: VoltVarGrid) -> None:
    load_a, pv_a = grid.day_profile("train", 5)
    grid.day_profile("val", 2)
    load_b, pv_b = grid.day_profile("train", 5)
    np.testing.assert_array_equal(load_a, load_b)
    np.testing.assert_array_equal(pv_a, pv_b)
    load_c, _ = grid.day_profile("test", 5)
    assert not np.allclose(load_a, load_c), "splits must not share days"
    assert load_a.shape == (grid.steps_per_day, len(grid.load_buses))
    assert pv_a.shape == (grid.steps_per_day, len(grid.pv_buses))
    hours = grid.hours()
    assert np.all(pv_a[hours < 5] == 0) and np.all(pv_a[hours > 20] == 0), "no PV at night"
    assert 0 < pv_a.max() <= grid.pv_capacity_mw


def test_uncontrolled_feeder_violates_and_reactive_power_moves_voltages_the_right_way(grid: VoltVarGrid) -> None:
    env = VoltVarVectorEnv(num_envs=8, split="val", num_days=8, grid=grid)
    days = list(range(8))
    none = run_episodes(env, lambda obs: np.zeros((8, env.action_dim)), days)
    assert none.summary()["violation_rate"] > 0.15, "the task must have violations to control"
    assert none.summary()["q_use"] == 0.0
    inject = run_episodes(env, lambda obs: np.full((8, env.action_dim), 0.3), days)
    absorb = run_episodes(env, lambda obs: np.full((8, env.action_dim), -0.3), days)
    # Injecting reactive power raises voltages, absorbing lowers them, at every step.
    assert np.all(inject.vm_pu[..., grid.non_slack] > none.vm_pu[..., grid.non_slack])
    assert np.all(absorb.vm_pu[..., grid.non_slack] < none.vm_pu[..., grid.non_slack])

    # An integral Volt-Var droop on each inverter's measured voltage (no learning) removes most
    # violations: the inverters have the authority the task needs (gain 8 measured: 32 % -> 2 %).
    slices = env.obs_slices
    pv_cols = np.searchsorted(grid.non_slack, grid.pv_buses)

    def droop(obs: np.ndarray) -> np.ndarray:
        vm = obs[:, slices["vm_pu"]] * 0.4 + 0.8
        previous = obs[:, slices["prev_action"]] * 2 - 1
        return np.clip(previous - 8.0 * (vm[:, pv_cols] - 1.0), -1, 1)

    controlled = run_episodes(env, droop, days)
    assert controlled.summary()["violation_rate"] < 0.25 * none.summary()["violation_rate"]


def test_observation_layout_reward_and_reactive_limit(grid: VoltVarGrid) -> None:
    env = VoltVarVectorEnv(num_envs=3, split="train", num_days=10, grid=grid, voltage_weight=100.0, q_weight=0.1)
    obs, info = env.reset(seed=0)
    assert obs.shape == (3, env.obs_dim) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    assert env.measurement_dim == env.obs_slices["vm_pu"].stop
    assert env.obs_dim == len(grid.load_buses) + 2 * len(grid.pv_buses) + len(grid.non_slack) + 2
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = rng.uniform(-1, 1, (3, env.action_dim))
        t = env.hour_index
        pv_p = np.stack([grid.day_profile("train", int(d))[1][t] for d in env.days])
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs)
        np.testing.assert_allclose(info["q_mvar"], action * grid.q_limit(pv_p))
        barrier = voltage_barrier(info["vm_pu"][:, grid.non_slack]).mean(-1)
        np.testing.assert_allclose(reward, -(100.0 * barrier + 0.1 * np.abs(info["q_mvar"]).mean(-1)))
        np.testing.assert_array_equal(info["violation"], ((info["vm_pu"] < 0.95) | (info["vm_pu"] > 1.05)).any(-1))
        # The next observation carries the voltages this action produced and the action itself.
        np.testing.assert_allclose(obs[:, env.obs_slices["vm_pu"]], (info["vm_pu"][:, grid.non_slack] - 0.8) / 0.4,
                                   atol=1e-6)
        np.testing.assert_allclose(obs[:, env.obs_slices["prev_action"]], (action + 1) / 2, atol=1e-6)
        assert not terminated.any() and not truncated.any()


def test_day_end_truncates_and_autoresets_to_the_next_requested_days(grid: VoltVarGrid) -> None:
    env = VoltVarVectorEnv(num_envs=2, split="test", num_days=6, grid=grid)
    env.reset(options={"days": [0, 1, 4, 5]})
    np.testing.assert_array_equal(env.days, [0, 1])
    for t in range(grid.steps_per_day):
        obs, _, _, truncated, info = env.step(np.zeros((2, env.action_dim)))
        assert truncated.all() == (t == grid.steps_per_day - 1)
    assert "final_obs" in info and info["final_obs"].shape == obs.shape
    np.testing.assert_array_equal(env.days, [4, 5])
    assert env.hour_index == 0


def test_single_env_passes_gymnasium_checker() -> None:
    env = VoltVarEnv(split="val", num_days=3)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0, options={"day": 2})
    assert info["day"] == 2
    done = False
    steps = 0
    while not done:
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        done = terminated or truncated
        steps += 1
    assert steps == env.unwrapped_vector.grid.steps_per_day and env.observation_space.contains(obs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"network": "case118"}, "network"),
    ({"pv_buses": [0, 5]}, r"pv_buses must be a non-empty list of positive ints, got \[0, 5\]"),
    ({"pv_buses": [5, 5]}, r"pv_buses must be distinct non-slack bus indices in 1\.\.32, got \[5, 5\]"),
    ({"pv_capacity_mw": -1.0}, "pv_capacity_mw must be a finite number > 0, got -1.0"),
    ({"inverter_oversize": 0.9}, "inverter_oversize must be a finite number >= 1, got 0.9"),
    ({"steps_per_day": 0}, "steps_per_day must be a positive int, got 0"),
    ({"voltage_band": 1.0}, r"voltage_band must be a pair \(min, max\) of finite numbers, got 1.0"),
    ({"voltage_band": (1.0, 1.05)}, "voltage_band"),
])
def test_bad_grid_arguments_name_the_argument(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VoltVarGrid(**kwargs)


def test_bad_env_arguments_and_actions_name_the_problem(grid: VoltVarGrid) -> None:
    with pytest.raises(ValueError, match="power_flow"):
        VoltVarVectorEnv(grid=grid, power_flow="dc")
    with pytest.raises(ValueError, match="split"):
        VoltVarVectorEnv(grid=grid, split="holdout")
    with pytest.raises(ValueError, match="q_weight must be a finite number >= 0, got -0.1"):
        VoltVarVectorEnv(grid=grid, q_weight=-0.1)
    env = VoltVarVectorEnv(num_envs=2, grid=grid, num_days=3)
    with pytest.raises(ValueError, match="days"):
        env.reset(options={"days": [0, 3]})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((1, env.action_dim)))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full((2, env.action_dim), np.nan))
    with pytest.raises(ValueError, match="multiple"):
        run_episodes(env, lambda obs: np.zeros((2, env.action_dim)), [0, 1, 2])


def test_registered_with_gymnasium() -> None:
    import gymnasium as gym

    from robust_lightning.envs import VOLT_VAR_ID

    env = gym.make(VOLT_VAR_ID, split="val", num_days=2)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    vec = gym.make_vec(VOLT_VAR_ID, num_envs=3, vectorization_mode="vector_entry_point", split="val", num_days=2)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (3, env.observation_space.shape[0])
