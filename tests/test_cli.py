"""Every YAML under configs/ runs through the real CLI entry point (docs/architecture.md, "Testing")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from robust_lightning.cli import main
from tests.data.cli_overrides import EXTRA_SETUP, OVERRIDES

REPO = Path(__file__).resolve().parents[1]
CONFIG_ROOT = REPO / "configs"
# `robust-lightning evolve` configs (NERO-Net's search) are not fit configs; their smoke test is
# tests/lightning_modules/nero_net/test_cli_evolve.py.
CONFIGS = sorted(p for p in CONFIG_ROOT.rglob("*.yaml") if "evolve" not in p.relative_to(CONFIG_ROOT).parts)


def _data_overrides(config: Path, tmp_path: Path) -> list[str]:
    """Point configs at small generated data instead of real datasets (tests/data/cli_overrides)."""
    data_class = yaml.safe_load(config.read_text()).get("data", {}).get("class_path", "")
    override = OVERRIDES.get(data_class.rsplit(".", 1)[-1])
    return override(tmp_path) if override is not None else []


def test_configs_exist() -> None:
    assert len(CONFIGS) >= 4, f"expected the classifier configs under {CONFIG_ROOT}"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_ROOT)))
def test_config_fast_dev_run(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    setup = EXTRA_SETUP.get(str(config.relative_to(CONFIG_ROOT)))
    if setup is not None:
        setup(tmp_path)
    args = ["fit", "--config", str(config), "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false", *_data_overrides(config, tmp_path)]
    cli = main(args)
    assert cli.trainer.state.finished, f"{config.name} did not finish"
    # Free-AT (recipe free_at) replays each batch: one optimizer step per replay.
    init_args = yaml.safe_load(config.read_text()).get("model", {}).get("init_args", {})
    replays = init_args.get("free_replays", 8) if init_args.get("recipe") == "free_at" else 1
    assert cli.trainer.global_step == replays


def _cli_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--config", str(CONFIG_ROOT / "classifier" / "digits_pgd_at.yaml"),
            "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
            "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", *extra]


def test_fit_saves_config_and_checkpoints_per_run_and_test_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = main(["fit", *_cli_args(tmp_path)])
    second = main(["fit", *_cli_args(tmp_path)])
    run_dirs = [Path(first.trainer.log_dir), Path(second.trainer.log_dir)]
    assert run_dirs[0] != run_dirs[1], "a second run must not reuse the first run's folder"
    for run_dir in run_dirs:
        assert (run_dir / "config.yaml").is_file()
        last = run_dir / "checkpoints" / "last.ckpt"
        assert last.is_file(), f"checkpoint missing in {run_dir}"
        # Checkpoints hold only plain data: loadable without unpickling arbitrary objects.
        checkpoint = torch.load(last, weights_only=True)
        assert checkpoint["hyper_parameters"]["recipe"] == "pgd_at"
        assert "optimizer_states" in checkpoint
    assert (run_dirs[0] / "checkpoints" / "last.ckpt").stat().st_mtime_ns > 0

    tested = main(["test", *_cli_args(tmp_path), f"--ckpt_path={run_dirs[0] / 'checkpoints' / 'last.ckpt'}"])
    metrics = tested.trainer.callback_metrics
    assert "test/acc" in metrics and "test/robust_acc/pgd10_linf_eps0.1" in metrics
    assert float(metrics["test/robust_acc/pgd10_linf_eps0.1"]) <= float(metrics["test/robust_acc/clean"])
    assert (Path(tested.trainer.log_dir) / "robustness_test.csv").is_file(), "test writes its report"


def test_existing_run_dir_is_not_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    fixed = ["--trainer.logger=lightning.pytorch.loggers.CSVLogger",
             "--trainer.logger.save_dir=runs", "--trainer.logger.name=fixed", "--trainer.logger.version=0"]
    main(["fit", *_cli_args(tmp_path), *fixed])
    config = tmp_path / "runs" / "fixed" / "version_0" / "config.yaml"
    before = config.read_text()
    with pytest.raises(RuntimeError, match="overwrit"):
        main(["fit", *_cli_args(tmp_path), *fixed])
    assert config.read_text() == before


@pytest.mark.parametrize("command", [["robust-lightning"], [sys.executable, "-m", "robust_lightning"]],
                         ids=["console_script", "python_-m"])
def test_entry_points_print_help(command: list[str]) -> None:
    executable = Path(sys.executable).parent / command[0] if command[0] == "robust-lightning" else None
    if executable is not None:
        if not executable.exists():
            pytest.skip("package not installed (run `make test`, which installs the console script)")
        command = [str(executable)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    for subcommand in ("fit", "validate", "test", "predict"):
        assert subcommand in result.stdout


def test_bad_config_value_names_the_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["fit", *_cli_args(tmp_path), "--model.init_args.recipe=pgd"])
    assert "recipe" in capsys.readouterr().err


def test_console_script_exits_zero_after_a_run(tmp_path: Path) -> None:
    """A console script hands its function's return value to sys.exit: a run must end with 0."""
    executable = Path(sys.executable).parent / "robust-lightning"
    if not executable.exists():
        pytest.skip("package not installed (run `make test`, which installs the console script)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    result = subprocess.run([str(executable), "fit", "--config", str(CONFIG_ROOT / "classifier" / "digits_standard.yaml"),
                             "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu",
                             "--trainer.enable_progress_bar=false"],
                            capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
