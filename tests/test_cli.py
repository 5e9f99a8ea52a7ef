"""Every YAML under configs/ runs through the real CLI entry point (docs/architecture.md, "Testing")."""

from __future__ import annotations

import json
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
    for subcommand in ("fit", "validate", "test", "predict", "evolve", "configs"):
        lines = [line for line in result.stdout.splitlines() if line.split()[:1] == [subcommand]]
        assert len(lines) == 1, f"one help line for {subcommand}:\n{result.stdout}"


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
    # The known noise of every run is silenced at the entry point (W&B, Lightning, torch).
    for noise in ("anonymous setting", "LeafSpec", "litlogger"):
        assert noise not in result.stdout + result.stderr, noise


# --- configs by name, `configs`, user errors ------------------------------------------------------

def test_config_by_name_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", "--config", "classifier/digits_pgd_at.yaml", "--trainer.fast_dev_run=1",
                "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"])
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    # A path that exists wins over the shipped config of the same name.
    own = tmp_path / "classifier" / "digits_pgd_at.yaml"
    own.parent.mkdir()
    own.write_text((CONFIG_ROOT / "classifier" / "digits_standard.yaml").read_text())
    cli = main(["fit", "--config=classifier/digits_pgd_at.yaml", "--trainer.fast_dev_run=1",
                "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"])
    assert cli.model.hparams.recipe == "standard"


def test_unknown_config_is_one_line_with_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "digits_pgd_at.yaml"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--config digits_pgd_at.yaml: no such file and no shipped config of that name" in err
    assert "classifier/digits_pgd_at.yaml" in err and "rct_af/digits_pgd_at.yaml" in err  # did you mean
    assert "Traceback" not in err
    from robust_lightning.errors import MissingFileError

    with pytest.raises(MissingFileError):  # --traceback: the exception itself
        main(["fit", "--config", "digits_pgd_at.yaml", "--traceback"])
    monkeypatch.setenv("ROBUST_LIGHTNING_TRACEBACK", "1")
    with pytest.raises(MissingFileError):
        main(["fit", "--config", "digits_pgd_at.yaml"])


def test_argument_error_is_short_with_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *_cli_args(tmp_path), "--trainer.max_epochs=many"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 3, err
    assert "max_epochs" in "\n".join(err[:2]) and "Traceback" not in "\n".join(err)


def test_configs_lists_every_config_with_method_and_needs(capsys: pytest.CaptureFixture[str]) -> None:
    main(["configs"])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    names = sorted(p.relative_to(CONFIG_ROOT).as_posix() for p in CONFIG_ROOT.rglob("*.yaml"))
    assert set(names) <= set(lines)
    assert "RobustClassifier (pgd_at)" in lines["classifier/digits_pgd_at.yaml"]
    assert "runs as is" in lines["classifier/digits_pgd_at.yaml"]
    assert "needs CIFAR-10 batches" in lines["classifier/cifar10_pgd_at.yaml"]
    assert "needs FLIR ADAS" in lines["kgat/flir_retinanet_r50_kgat.yaml"]
    assert "[detection]" in lines["kgat/flir_retinanet_r50_kgat.yaml"]
    assert "needs the AudioMOS 2025 track 2 corpus" in lines["audio_grl/audiomos_track2_grl.yaml"]
    assert "needs CICFlowMeter flow CSVs" in lines["ddos/cicids2017_mlp_constrained_at.yaml"]
    assert "run badllm_tg/generated_addsent_victim.yaml first" in lines["badllm_tg/generated_addsent_defense.yaml"]
    assert "run sia/synthesize.yaml first" in lines["sia/inject.yaml"]
    assert "run sharpening/digits_surrogate.yaml first" in lines["sharpening/digits_transfer.yaml"]
    assert "[evolve]" in lines["nero_net/evolve/digits.yaml"]


def test_configs_copy_writes_a_copy_and_never_overwrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    main(["configs", "copy", "classifier/digits_trades.yaml"])
    copied = tmp_path / "digits_trades.yaml"
    assert copied.read_text() == (CONFIG_ROOT / "classifier" / "digits_trades.yaml").read_text()
    copied.write_text("# edited\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["configs", "copy", "classifier/digits_trades.yaml"])
    assert exit_info.value.code == 2
    assert "exists" in capsys.readouterr().err and copied.read_text() == "# edited\n"
    main(["configs", "copy", "classifier/digits_trades", "mine/trades.yaml"])
    assert (tmp_path / "mine" / "trades.yaml").is_file()
    main(["configs", "copy", "classifier/digits_trades.yaml", "--force"])
    assert copied.read_text() != "# edited\n"


def test_run_names_follow_the_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """v_num in the progress bar and the W&B run name are the CSV logger's version_N."""
    monkeypatch.chdir(tmp_path)
    main(["fit", *_cli_args(tmp_path)])
    cli = main(["fit", *_cli_args(tmp_path, "--trainer.enable_progress_bar=true")])
    run_dir = Path(cli.trainer.log_dir)
    assert run_dir.name == "version_1"
    wandb_logger = next(logger for logger in cli.trainer.loggers if type(logger).__name__ == "WandbLogger")
    assert wandb_logger.experiment.name == f"{run_dir.parent.name}/version_1"
    assert cli.trainer.progress_bar_callback.get_metrics(cli.trainer, cli.model)["v_num"] == "1"


#: Every shipped config that needs something from outside the package, and what the message
#: must name (the data folder, or the config to run first).
NEEDS_OUTSIDE_INPUT = {
    "audio_grl/audiomos_track2_grl.yaml": "data/audiomos2025_track2",
    "audio_grl/audiomos_track2_multi.yaml": "data/audiomos2025_track2",
    "badllm_tg/generated_addsent_defense.yaml": "badllm_tg/generated_addsent_victim.yaml",
    "badllm_tg/generated_badnets_defense.yaml": "badllm_tg/generated_badnets_victim.yaml",
    "classifier/cifar10_pgd_at.yaml": "data/cifar10",
    "ddos/cicids2017_mlp_constrained_at.yaml": "data/CIC-IDS2017/MachineLearningCVE",
    "kgat/flir_faster_rcnn_r50_kgat.yaml": "data/flir_adas_v2",
    "kgat/flir_retinanet_r50_kgat.yaml": "data/flir_adas_v2",
    "nero_net/evolve/cifar10.yaml": "data/cifar10",
    "rct_af/cifar10_pgd_at.yaml": "data/cifar10",
    "rct_af/cifar10_trades.yaml": "data/cifar10",
    "sharpening/digits_transfer.yaml": "sharpening/digits_surrogate.yaml",
    "sia/align.yaml": "sia/",
    "sia/inject.yaml": "sia/synthesize.yaml",
    "soft_dimo/dimo.yaml": "soft_dimo/teacher.yaml",
    "soft_dimo/soft_dimo.yaml": "soft_dimo/teacher.yaml",
}

_RUN_EACH = """
import contextlib, io, json, sys
from robust_lightning.cli import console_main
results = {}
for name, subcommand in json.loads(sys.argv[1]):
    sys.argv = ["robust-lightning", subcommand, "--config", name]
    if subcommand == "fit":
        sys.argv.append("--trainer.fast_dev_run=1")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            console_main()
            code = 0
        except SystemExit as exit:
            code = exit.code
        except BaseException:
            import traceback
            traceback.print_exc()
            code = "exception"
    results[name] = [code, err.getvalue()]
print(json.dumps(results))
"""


@pytest.mark.slow
def test_configs_needing_outside_input_exit_2_naming_it(tmp_path: Path) -> None:
    """From an empty folder, by name, as a user would first try them: exit 2, no traceback, a
    message naming what is missing. One interpreter runs them all, each through console_main."""
    from robust_lightning import shipped_configs

    infos = {info.name: info for info in shipped_configs.list_configs()}
    needing = sorted(name for name, info in infos.items() if info.datasets or info.inputs)
    assert needing == sorted(NEEDS_OUTSIDE_INPUT), "the listing and this test disagree on what needs data"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    jobs = [[name, infos[name].subcommand] for name in needing]
    result = subprocess.run([sys.executable, "-c", _RUN_EACH, json.dumps(jobs)], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    for name, expected in NEEDS_OUTSIDE_INPUT.items():
        code, err = outcomes[name]
        assert code == 2, f"{name}: exit {code}\n{err[-2000:]}"
        assert "Traceback" not in err, f"{name}:\n{err[-2000:]}"
        assert expected in err, f"{name}: message does not name {expected!r}:\n{err}"
        assert len(err.strip().splitlines()) <= 2, f"{name}: more than two lines:\n{err}"
    assert not list(tmp_path.iterdir()), "a failed input check must not leave run folders behind"


def test_known_noise_is_silenced_at_the_entry_point_only(tmp_path: Path) -> None:
    """W&B's "anonymous setting" warning, torch's LeafSpec deprecation (raised by Lightning) and
    Lightning's litlogger tip are not shown by our CLI; the filters do not outlive main()."""
    code = (
        "import logging, warnings\n"
        "from robust_lightning.cli import main\n"
        "filters = list(warnings.filters)\n"
        "main(['fit', '--config', 'classifier/digits_pgd_at.yaml', '--trainer.max_epochs=1',\n"
        "      '--trainer.limit_train_batches=2', '--trainer.limit_val_batches=1',\n"
        "      '--trainer.enable_progress_bar=false', '--trainer.accelerator=cpu'])\n"
        "assert warnings.filters == filters, 'warning filters changed for user code'\n"
        "assert not logging.getLogger('lightning.pytorch.utilities.rank_zero').filters\n"
        "print('filters restored')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "filters restored" in result.stdout
    assert (tmp_path / "runs" / "wandb").is_dir(), "the W&B logger ran (so its warning had its chance)"
    for noise in ("anonymous setting", "LeafSpec", "litlogger"):
        assert noise not in result.stdout + result.stderr, noise


@pytest.mark.parametrize(("child", "parent", "changed"), [
    ("robust_lightning.lightning_modules.soft_dimo.SoftDiMODistillation",
     "robust_lightning.lightning_modules.soft_dimo.DiMODistillation",
     {"output": "soft", "soft_embeddings": True, "gan_weight": 0.1}),
    ("robust_lightning.datamodules.thermal_styles.SyntheticThermalStylesDataModule",
     "robust_lightning.datamodules.SyntheticThermalDataModule",
     {"image_size": 64, "batch_size": 8}),
])
def test_a_subclass_that_changes_defaults_still_shows_every_parent_argument(child: str, parent: str,
                                                                           changed: dict) -> None:
    """The CLI shows a child that changes a parent's defaults with every parent argument, the
    parent's default and annotation, except the defaults listed here. The thermal styles
    datamodule declares only what it changes and passes the rest on as ``**kwargs`` (jsonargparse
    reads them from the parent); Soft-Di[M]O repeats Di[M]O's whole signature (its comment says
    why). A child that stops forwarding ``**kwargs``, or whose copy drifts, fails here."""
    import inspect

    from jsonargparse import ArgumentParser

    from robust_lightning.lightning_modules.registry import import_object

    child_parameters = inspect.signature(import_object(child)).parameters
    parent_parameters = inspect.signature(import_object(parent)).parameters
    for name in set(child_parameters) & set(parent_parameters):
        assert child_parameters[name].annotation == parent_parameters[name].annotation, name

    def cli_defaults(path: str) -> dict:
        parser = ArgumentParser()
        parser.add_class_arguments(import_object(path), "init_args")
        return vars(parser.get_defaults().init_args)

    child_defaults, parent_defaults = cli_defaults(child), cli_defaults(parent)
    assert set(parent_defaults) <= set(child_defaults), set(parent_defaults) - set(child_defaults)
    differing = {name: child_defaults[name] for name in parent_defaults
                 if child_defaults[name] != parent_defaults[name]}
    assert differing == changed
