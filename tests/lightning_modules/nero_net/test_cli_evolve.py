"""`robust-lightning evolve` end to end, then `fit` of the best genotype with train_best.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from robust_lightning import LastCheckpoint
from robust_lightning.cli import main
from tests.data.cifar10 import write_fake_cifar10

REPO = Path(__file__).resolve().parents[3]
EVOLVE = REPO / "configs" / "nero_net" / "evolve"
TRAIN_BEST = REPO / "configs" / "nero_net" / "train_best.yaml"
TINY = ["--generations=2", "--offspring=2", "--epochs_per_unit=1"]


def test_evolve_resume_then_train_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "search"
    search = main(["evolve", "--config", str(EVOLVE / "digits.yaml"), *TINY, f"--run_dir={run_dir}"])
    assert search.run_dir == run_dir
    for name in ("state.json", "individuals.jsonl", "best_genotype.yaml", "fitness.png"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "wandb").glob("offline-run-*")), "W&B must log offline into the run dir"
    assert json.loads((run_dir / "state.json").read_text())["generation"] == 1
    # --resume continues the same run (here: one more generation).
    main(["evolve", "--config", str(EVOLVE / "digits.yaml"), *TINY, "--generations=3", f"--resume={run_dir}"])
    state = json.loads((run_dir / "state.json").read_text())
    assert state["generation"] == 2 and len(state["history"]) == 3
    assert len((run_dir / "individuals.jsonl").read_text().splitlines()) == 3 * 2

    best = run_dir / "best_genotype.yaml"
    cli = main(["fit", "--config", str(TRAIN_BEST), "--model.genotype", str(best), "--trainer.fast_dev_run=1",
                "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"])
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert cli.model.hparams["genotype"] == yaml.safe_load(best.read_text())["genotype"]
    metrics = cli.trainer.callback_metrics
    for attack in ("fgsm_linf_eps0.1", "pgd10_linf_eps0.1", "apgd-ce_linf_eps0.1"):
        assert f"val/robust_acc/{attack}" in metrics


def test_train_best_checkpoint_loads_with_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", "--config", str(TRAIN_BEST), "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                "--trainer.limit_val_batches=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
                "--trainer.logger=false"])
    last = next(c for c in cli.trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint))
    checkpoint = torch.load(Path(last.last_model_path), weights_only=True)
    assert checkpoint["hyper_parameters"]["genotype"]["features"][0]["type"] == "conv"


def test_cifar10_evolve_config_runs_on_generated_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = write_fake_cifar10(tmp_path / "cifar10", n_train_per_batch=8, n_test=8)
    search = main(["evolve", "--config", str(EVOLVE / "cifar10.yaml"), f"--data.init_args.data_dir={root}",
                   "--data.init_args.val_size=8", "--data.init_args.num_workers=0", "--generations=1",
                   "--offspring=2", "--epochs_per_unit=1", "--max_params=300000", "--wandb=false",
                   f"--run_dir={tmp_path / 'run'}"])
    records = [json.loads(line) for line in (search.run_dir / "individuals.jsonl").read_text().splitlines()]
    assert len(records) == 2
    # Paper-scale genotypes: each one trained or rejected with a reason.
    assert all(r["valid"] or "max_params" in r["reason"] for r in records)
    assert search.settings["fitness"]["eps"] == "8/255"


def test_evolve_bad_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    # A bad value found by our own validation is a user error: one line, exit 2, no traceback.
    with pytest.raises(SystemExit) as exit_info:
        main(["evolve", "--config", str(EVOLVE / "digits.yaml"), "--offspring=0"])
    assert exit_info.value.code == 2
    assert "offspring must be an int >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evolve", "--config", str(EVOLVE / "digits.yaml"), "--fitness.threshold=high"])
    assert "threshold" in capsys.readouterr().err


def test_evolve_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["evolve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--resume", "--offspring", "--fitness.threshold", "--space.conv_filters"):
        assert option in out
