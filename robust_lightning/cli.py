"""``robust-lightning``: LightningCLI with the project's defaults.

* model and data in subclass mode (``class_path``/``init_args`` in configs);
* ``seed_everything`` defaults to 0;
* the resolved config is saved to the run dir and never overwrites an earlier one;
* loggers default to CSV plus Weights & Biases in offline mode (no account needed;
  ``WANDB_MODE=online`` opts in to syncing).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

__all__ = ["RobustLightningCLI", "console_main", "evolve", "main"]

DEFAULT_RUN_DIR = "runs"


def default_loggers(save_dir: str = DEFAULT_RUN_DIR, name: str = "robust_lightning") -> list[dict[str, Any]]:
    """CSV first (its versioned folder is the run dir the config is saved to), then W&B."""
    return [
        {"class_path": "lightning.pytorch.loggers.CSVLogger",
         "init_args": {"save_dir": save_dir, "name": name}},
        {"class_path": "lightning.pytorch.loggers.WandbLogger",
         "init_args": {"save_dir": save_dir, "project": "robust-lightning", "offline": True}},
    ]


def _checkpoints_into_run_dir(trainer: pl.Trainer) -> None:
    """Give checkpoint callbacks without a ``dirpath`` the run's own versioned folder.

    With several loggers Lightning falls back to ``default_root_dir/checkpoints``, shared by
    every run, so a second run would overwrite the first one's ``last.ckpt``. The first
    logger's versioned ``log_dir`` is unique per run (and holds the saved config).
    """
    run_dir = trainer.log_dir
    if run_dir is None:
        return
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
            callback.dirpath = os.path.join(run_dir, "checkpoints")


def _previous_last_checkpoint(trainer: pl.Trainer) -> str | None:
    """The newest ``last.ckpt`` of an earlier run with the same logger folder, if any.

    Every run writes into its own versioned folder, so Lightning's ``ckpt_path="last"``
    (which looks only in this run's checkpoint folder) would never find the checkpoint of the
    run being resumed. Resuming reads the earlier run and writes a new version: nothing of the
    interrupted run is overwritten.
    """
    if trainer.log_dir is None or not trainer.loggers:
        return None
    run_dir = Path(trainer.log_dir).resolve()
    candidates = [path for path in run_dir.parent.glob("*/checkpoints/last*.ckpt")
                  if path.resolve().parent.parent != run_dir]
    if not candidates:
        return None
    return str(max(candidates, key=lambda path: path.stat().st_mtime_ns))


def _check_ckpt_path(ckpt_path: Any) -> None:
    """Refuse a missing or corrupt ``--ckpt_path`` file by name before Lightning loads it
    (torch's own message for a corrupt file suggests loading it unsafely)."""
    if not isinstance(ckpt_path, (str, os.PathLike)):
        return
    if str(ckpt_path) in _LIGHTNING_CKPT_ALIASES or str(ckpt_path).startswith("registry:"):
        return
    if "://" in str(ckpt_path):  # remote (fsspec) paths are Lightning's to open
        return
    from robust_lightning._checkpoint import check_checkpoint_file

    check_checkpoint_file(ckpt_path, argument="ckpt_path")


# Lightning's own names for checkpoints it finds itself ("registry" may carry a ":name").
_LIGHTNING_CKPT_ALIASES = ("last", "best", "hpc", "registry")


class RobustLightningCLI(LightningCLI):
    """LightningCLI for robust_lightning modules, DataModules and callbacks.

    ``--ckpt_path last`` resumes from the newest ``last.ckpt`` among the earlier runs of the
    same logger folder (``runs/<name>/version_*/checkpoints/``); the resumed run gets a new
    version folder.
    """

    def _resolve_last_checkpoint(self) -> None:
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            _check_ckpt_path(config.get("ckpt_path"))
            return
        found = _previous_last_checkpoint(self.trainer)
        if found is None:
            rank_zero_warn("ckpt_path=last, but no earlier run of this logger folder has a last.ckpt; "
                           "starting from scratch")
            config["ckpt_path"] = None
        else:
            _check_ckpt_path(found)
            rank_zero_info(f"Resuming from {found}")
            config["ckpt_path"] = found

    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` by name before LightningCLI reads its hyperparameters (with
        ``torch.load``, whose message for a corrupt file suggests unsafe loading)."""
        subcommand = self.config.get("subcommand")
        if subcommand:
            _check_ckpt_path(self.config[subcommand].get("ckpt_path"))
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        """Make the W&B logger's ``save_dir`` absolute.

        W&B writes through a long-lived ``wandb-core`` service that resolves relative paths
        against its own working directory, not the caller's: a process that changes directory
        between runs (a notebook, a test suite, a sweep driver) would otherwise point the second
        run at a folder that does not exist.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        loggers = config.get("trainer", {}).get("logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            class_path = getattr(logger, "class_path", "") or ""
            init_args = getattr(logger, "init_args", None)
            if class_path.endswith("WandbLogger") and init_args is not None:
                save_dir = init_args.get("save_dir")
                if isinstance(save_dir, str) and not os.path.isabs(save_dir):
                    init_args["save_dir"] = os.path.abspath(save_dir)

    def before_fit(self) -> None:
        self._resolve_last_checkpoint()

    def before_validate(self) -> None:
        self._resolve_last_checkpoint()

    def before_test(self) -> None:
        self._resolve_last_checkpoint()

    def before_predict(self) -> None:
        self._resolve_last_checkpoint()

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        _checkpoints_into_run_dir(trainer)
        return trainer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_kwargs", {"overwrite": False})
        trainer_defaults = {"default_root_dir": DEFAULT_RUN_DIR, "logger": default_loggers()}
        trainer_defaults.update(kwargs.pop("trainer_defaults", None) or {})
        kwargs["trainer_defaults"] = trainer_defaults
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(pl.LightningModule, pl.LightningDataModule, *args, **kwargs)


def evolve_parser() -> Any:
    """Parser of ``robust-lightning evolve``: the arguments of NERO-Net's search.

    Every :class:`~robust_lightning.lightning_modules.nero_net.NeroNetSearch` argument is an
    option (``--offspring 4``, ``--fitness.eps 8/255``, ``--data.init_args.image_size 16``...),
    ``--config`` reads them from YAML and ``--resume RUN_DIR`` continues a killed search.
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    from robust_lightning.lightning_modules.nero_net.search import NeroNetSearch

    parser = ArgumentParser(prog="robust-lightning evolve",
                            description="NERO-Net: evolve adversarially robust CNNs with a (1+lambda)-ES.")
    parser.add_argument("--config", action=ActionConfigFile, help="search config YAML (configs/nero_net/evolve/)")
    parser.add_class_arguments(NeroNetSearch, None, fail_untyped=True)
    return parser


def evolve(args: list[str]) -> Any:
    """``robust-lightning evolve``: run (or ``--resume``) a NERO-Net search; returns it."""
    parser = evolve_parser()
    config = parser.parse_args(args)
    init = parser.instantiate(config)
    init_kwargs = {k: v for k, v in vars(init).items() if k != "config"}
    from robust_lightning.lightning_modules.nero_net.search import NeroNetSearch

    search = NeroNetSearch(**init_kwargs)
    search.run()
    return search


def main(args: list[str] | None = None) -> Any:
    """Console entry point (``robust-lightning`` and ``python -m robust_lightning``).

    ``evolve`` (NERO-Net's architecture search) has its own parser; every other subcommand is
    LightningCLI's (``fit``/``validate``/``test``/``predict``).
    """
    # W&B must never try to reach the network unless the user opts in.
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] == "evolve":
        return evolve(argv[1:])
    cli = RobustLightningCLI(args=args)
    _finish_wandb_run()
    return cli


def console_main() -> None:
    """The ``robust-lightning`` console script: :func:`main`, returning nothing.

    A console script passes its function's return value to ``sys.exit``; returning the CLI
    object would print it and exit with status 1 after a successful run.
    """
    main()


def _finish_wandb_run() -> None:
    """One CLI invocation is one W&B run: close it, or a later ``main()`` in the same process
    (a notebook, a sweep driver, a test) would silently log into this run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


if __name__ == "__main__":
    main()
