"""``robust-lightning``: LightningCLI with the project's defaults.

* model and data in subclass mode (``class_path``/``init_args`` in configs);
* ``--config NAME`` takes a path or the name of a shipped config (``classifier/digits_pgd_at.yaml``
  works from any folder; an existing path wins), ``robust-lightning configs`` lists them;
* ``seed_everything`` defaults to 0;
* the resolved config is saved to the run dir and never overwrites an earlier one;
* loggers default to CSV plus Weights & Biases in offline mode (no account needed;
  ``WANDB_MODE=online`` opts in to syncing; without the ``[wandb]`` extra, CSV only);
* a :class:`~robust_lightning.errors.UserError` or an argument error prints one or two lines
  (the argument or file, what was expected, how to fix it) and exits with status 2;
  ``--traceback`` (or ``ROBUST_LIGHTNING_TRACEBACK=1``) shows the traceback. Any other
  exception is a bug and keeps its traceback;
* the known noise of every run (W&B's "anonymous setting", torch's LeafSpec deprecation raised
  inside Lightning, Lightning's litlogger tip) is silenced inside :func:`main` only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from robust_lightning import shipped_configs
from robust_lightning.errors import MissingFileError, PrerequisiteError, UserError

__all__ = ["SUBCOMMANDS", "RobustLightningCLI", "console_main", "evolve", "main"]

#: Set to 1 to see the traceback of a user error (same as ``--traceback``).
TRACEBACK_ENV = "ROBUST_LIGHTNING_TRACEBACK"

#: Every subcommand with its one-line description (``robust-lightning --help``).
SUBCOMMANDS: dict[str, str] = {
    "fit": "train (and validate) a model from a config: fit --config classifier/digits_pgd_at.yaml",
    "validate": "validate a model once: validate --config NAME --ckpt_path CKPT",
    "test": "test a model, with the robustness report: test --config NAME --ckpt_path CKPT",
    "predict": "run predictions: predict --config NAME --ckpt_path CKPT",
    "evolve": "NERO-Net's search for robust architectures: evolve --config nero_net/evolve/digits.yaml",
    "configs": "list the shipped configs and what each needs; configs copy NAME [DEST] copies one out",
}

DEFAULT_RUN_DIR = "runs"


def wandb_installed() -> bool:
    """Whether the ``[wandb]`` extra is there (without importing wandb, which is slow)."""
    if "wandb" in sys.modules:
        return sys.modules["wandb"] is not None
    return importlib.util.find_spec("wandb") is not None


def default_loggers(save_dir: str = DEFAULT_RUN_DIR, name: str = "robust_lightning") -> list[dict[str, Any]]:
    """CSV first (its versioned folder is the run dir the config is saved to), then W&B."""
    loggers: list[dict[str, Any]] = [
        {"class_path": "lightning.pytorch.loggers.CSVLogger",
         "init_args": {"save_dir": save_dir, "name": name}},
    ]
    if wandb_installed():
        loggers.append({"class_path": "lightning.pytorch.loggers.WandbLogger",
                        "init_args": {"save_dir": save_dir, "project": "robust-lightning", "offline": True}})
    return loggers


def _plain(node: Any) -> Any:
    """A jsonargparse Namespace tree as plain dicts/lists."""
    if hasattr(node, "as_dict"):
        return node.as_dict()
    if isinstance(node, Mapping):
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(value) for value in node]
    return node


def check_prerequisites(config: Mapping[str, Any]) -> None:
    """Fail before any work when a dataset folder, or a chained recipe's input (a victim model,
    a surrogate, a synthesized corpus), does not exist: say what it is and how to get it.

    Only existence is checked here; what is inside is the datamodule's to validate.

    Raises:
        PrerequisiteError: a shipped config writes the missing input (run it first).
        MissingFileError: a dataset folder is missing, or an input no shipped config writes.
    """
    for what, argument, path, source in shipped_configs.dataset_needs(config):
        if not Path(path).expanduser().exists():
            raise MissingFileError(f"{argument} {path} does not exist; this config needs {what}: get it from "
                                   f"{source}, then pass {argument}=PATH")
    for argument, path in shipped_configs.input_paths(config):
        if Path(path).expanduser().exists():
            continue
        writers = shipped_configs.producers(path)
        if writers:
            runs = " or ".join(f"`robust-lightning fit --config {name}`" for name in writers)
            raise PrerequisiteError(f"{argument} {path} does not exist: it is written by another recipe; "
                                    f"run {runs} first (from this folder), or point {argument} at your own")
        raise MissingFileError(f"{argument} {path} does not exist; expected a file or folder written by an "
                               "earlier run")


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


def _name_runs_after_run_dir(trainer: pl.Trainer) -> None:
    """One name per run everywhere: the W&B run and the progress bar's ``v_num`` take the
    ``version_N`` of the first (CSV) logger's run dir.

    Lightning joins every logger's version into ``v_num`` (``0_3f9a``: the CSV version and the
    end of the W&B id) and W&B draws a random run name, so neither pointed at the folder that
    holds the run's config, metrics and checkpoints.
    """
    if not trainer.loggers or not isinstance(trainer.loggers[0], CSVLogger):
        return
    csv_logger = trainer.loggers[0]
    version = csv_logger.version
    run_name = f"{csv_logger.name}/version_{version}" if isinstance(version, int) else f"{csv_logger.name}/{version}"
    for logger in trainer.loggers[1:]:
        if isinstance(logger, WandbLogger) and getattr(logger, "_experiment", None) is None:
            init = getattr(logger, "_wandb_init", None)
            if isinstance(init, dict):
                # The configs name both loggers alike; a W&B name of its own is left alone.
                if init.get("name") in (None, "", csv_logger.name):
                    init["name"] = run_name
                # Lightning passes anonymous=None, which wandb >= 0.30 warns about on every run.
                if init.get("anonymous") is None:
                    init.pop("anonymous", None)
    for callback in trainer.callbacks:
        if isinstance(callback, ProgressBar) and not getattr(callback, "_robust_lightning_v_num", False):
            original = callback.get_metrics

            def get_metrics(trainer: pl.Trainer, pl_module: pl.LightningModule, _original: Any = original) -> Any:
                metrics = _original(trainer, pl_module)
                if "v_num" in metrics:
                    metrics["v_num"] = str(version)  # a str, so no progress bar shows it as 1.000
                return metrics

            callback.get_metrics = get_metrics  # type: ignore[method-assign]
            callback._robust_lightning_v_num = True  # type: ignore[attr-defined]


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
    (torch's own message for a corrupt file suggests loading it unsafely).
    """
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

    @override
    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` by name before LightningCLI reads its hyperparameters (with
        ``torch.load``, whose message for a corrupt file suggests unsafe loading).
        """
        subcommand = self.config.get("subcommand")
        if subcommand:
            _check_ckpt_path(self.config[subcommand].get("ckpt_path"))
        super()._parse_ckpt_path()

    @override
    def before_instantiate_classes(self) -> None:
        """Check a chained recipe's inputs, drop W&B without its extra, make its dir absolute.

        W&B writes through a long-lived ``wandb-core`` service that resolves relative paths
        against its own working directory, not the caller's: a process that changes directory
        between runs (a notebook, a test suite, a sweep driver) would otherwise point the second
        run at a folder that does not exist.
        """
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_prerequisites({key: _plain(config.get(key)) for key in ("model", "data", "trainer")})
        trainer_config = config.get("trainer", {})
        loggers = trainer_config.get("logger")
        if isinstance(loggers, list) and not wandb_installed():
            kept = [logger for logger in loggers if not (getattr(logger, "class_path", "") or "").endswith("WandbLogger")]
            if len(kept) != len(loggers):
                rank_zero_info("W&B logging is off: wandb is not installed (pip install 'robust-lightning[wandb]')")
                trainer_config["logger"] = loggers = kept
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

    @override
    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        _checkpoints_into_run_dir(trainer)
        _name_runs_after_run_dir(trainer)
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

    # Errors are raised, not printed: main() shows them in one or two lines (exit 2).
    parser = ArgumentParser(prog="robust-lightning evolve", exit_on_error=False,
                            description="NERO-Net: evolve adversarially robust CNNs with a (1+lambda)-ES.")
    parser.add_argument("--config", action=ActionConfigFile,
                        help="search config: a YAML path or a shipped name (nero_net/evolve/digits.yaml)")
    parser.add_class_arguments(NeroNetSearch, None, fail_untyped=True)
    return parser


def evolve(args: list[str]) -> Any:
    """``robust-lightning evolve``: run (or ``--resume``) a NERO-Net search; returns it."""
    parser = evolve_parser()
    config = parser.parse_args(resolve_config_arguments(args))
    check_prerequisites(_plain(config))
    init = parser.instantiate(config)
    init_kwargs = {k: v for k, v in vars(init).items() if k != "config"}
    from robust_lightning.lightning_modules.nero_net.search import NeroNetSearch

    search = NeroNetSearch(**init_kwargs)
    search.run()
    return search


def resolve_config_arguments(args: list[str]) -> list[str]:
    """``--config NAME`` -> the file it means (:func:`~robust_lightning.shipped_configs.resolve_config`).

    Raises:
        MissingFileError: the value is neither a file nor a shipped config's name.
    """
    resolved = []
    expect_value = False
    for arg in args:
        if expect_value:
            resolved.append(str(shipped_configs.resolve_config(arg)))
            expect_value = False
        elif arg in ("--config", "-c"):
            resolved.append(arg)
            expect_value = True
        elif arg.startswith("--config="):
            resolved.append(f"--config={shipped_configs.resolve_config(arg.split('=', 1)[1])}")
        else:
            resolved.append(arg)
    return resolved


def configs_command(args: list[str]) -> list[shipped_configs.ConfigInfo] | Path:
    """``robust-lightning configs`` (list) and ``robust-lightning configs copy NAME [DEST] [--force]``."""
    usage = "usage: robust-lightning configs [copy NAME [DEST] [--force]]"
    if args and args[0] in ("-h", "--help"):
        print(f"{usage}\n\nWithout arguments: every shipped config, one line each (method; what it needs).\n"
              "copy NAME [DEST]: write the shipped config NAME to DEST (a folder or file; default: here);\n"
              "an existing file is kept unless --force.")
        return []
    if not args:
        infos = shipped_configs.list_configs()
        width = max(len(info.name) for info in infos)
        for info in infos:
            run = "" if info.subcommand == "fit" else f" [{info.subcommand}]"
            extra = f" [{info.extra}]" if info.extra else ""
            print(f"{info.name:<{width}}  {info.method}{run}{extra}: {info.needs}")
        print(f"\n{len(infos)} configs in {shipped_configs.config_root()}; run one with "
              "`robust-lightning fit --config NAME`, edit a copy made by `robust-lightning configs copy NAME`.")
        return infos
    if args[0] == "copy":
        rest = [arg for arg in args[1:] if arg != "--force"]
        if not 1 <= len(rest) <= 2:
            from robust_lightning.errors import InvalidArgumentError

            raise InvalidArgumentError(f"configs copy takes NAME and an optional DEST, got {rest}; {usage}")
        target = shipped_configs.copy_config(rest[0], rest[1] if len(rest) == 2 else None, force="--force" in args)
        print(f"wrote {target}")
        return target
    from robust_lightning.errors import InvalidArgumentError

    raise InvalidArgumentError(f"configs: unknown argument {args[0]!r}; {usage}")


def top_level_help() -> str:
    """``robust-lightning --help``: every subcommand, one line each."""
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: robust-lightning [--traceback] SUBCOMMAND [--config NAME_OR_PATH] [options]", "",
             "Adversarial-robustness training methods for PyTorch Lightning.", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()]
    lines += ["", "`robust-lightning SUBCOMMAND --help` lists a subcommand's options.",
              "--config takes a path or a shipped config's name (see `robust-lightning configs`).",
              f"--traceback (or {TRACEBACK_ENV}=1) shows the traceback of an input error."]
    return "\n".join(lines)


# Noise every run prints that says nothing about the user's run (silenced in main() only:
# importing robust_lightning never changes the warning filters of user code).
_NOISY_WARNINGS = (
    # torch >= 2.10 deprecates isinstance(x, LeafSpec), which Lightning's own _pytree utility does.
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
)
_NOISY_LOG_PREFIXES = ("💡 Tip: For seamless cloud logging",)


class _DropNoise(logging.Filter):
    @override
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_NOISY_LOG_PREFIXES)


@contextlib.contextmanager
def _quiet_known_noise() -> Iterator[None]:
    noise = _DropNoise()
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with warnings.catch_warnings():
        for message, category in _NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        rank_zero_logger.addFilter(noise)
        try:
            yield
        finally:
            rank_zero_logger.removeFilter(noise)


def _readable_type(text: str) -> str:
    """``<class 'int'>`` -> ``int``; ``typing.Literal['a', 'b']`` -> ``one of 'a', 'b'``."""
    text = re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], text.strip())
    literal = re.fullmatch(r"(?:typing\.)?Literal\[(.*)\]", text)
    return f"one of {literal.group(1)}" if literal else text


def _argument_error_message(error: BaseException, subcommand: str | None) -> str:
    """Jsonargparse's error (a nested report over every Union member) in two lines: the
    argument, what it expects, what it got; then where to look.
    """
    text = str(error)
    lines = [line.strip().lstrip("- ").strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    keys = re.findall(r'Parser key "([^"]+)"', text)
    help_hint = f"`robust-lightning {subcommand or 'SUBCOMMAND'} --help` lists the arguments and their types"
    # A class_path that cannot be imported: the reason sits in the chained causes, below the
    # Union report (which would only say "Expected NoneType").
    cause: BaseException | None = error
    while cause is not None:
        problem = re.search(r"Problem with given class_path '([^']+)':\s*\n\s*(.+)", str(cause))
        if problem and "Parser key" not in problem.group(2):
            argument = f"{keys[0]}.class_path" if keys else "class_path"
            return (f"--{argument}: cannot use {problem.group(1)!r} ({problem.group(2).strip()})\n"
                    f"  ({help_hint})")
        cause = cause.__cause__ or cause.__context__
    expected = [line for line in lines if line.startswith("Expected") and "NoneType" not in line]
    if keys and expected:
        argument = ".init_args.".join(keys) if "class_path" in text else keys[0]
        match = re.match(r"Expected (?:an? )?(.*?)(?:\.? Got value: (.*))?$", expected[-1])
        wanted = _readable_type(match.group(1)) if match else expected[-1]
        given = match.group(2) if match and match.group(2) else next(
            (line.split(":", 1)[1].strip() for line in reversed(lines) if line.startswith("Given value:")), None)
        got = f", got {given!r}" if given is not None else ""
        return f"--{argument}: expected {wanted}{got}\n  ({help_hint})"
    detail = next((line for line in reversed(lines[1:])
                   if not line.startswith(("Given value", "Subtypes", "Errors"))), None)
    first = lines[0] if lines else type(error).__name__
    return f"{first} {detail}\n  ({help_hint})" if detail else f"{first}\n  ({help_hint})"


def _user_error_cause(error: BaseException) -> UserError | None:
    """The UserError jsonargparse wrapped while resolving a class_path (innermost first found)."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UserError):
            return current
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return None


def _report_user_error(message: str, traceback_hint: bool = True) -> None:
    print(f"robust-lightning: error: {message}", file=sys.stderr)
    if traceback_hint:
        print(f"  (--traceback or {TRACEBACK_ENV}=1 shows where it was raised)", file=sys.stderr)


def _dispatch(argv: list[str], from_command_line: bool = False) -> Any:
    if not argv or argv[0] in ("-h", "--help"):
        print(top_level_help(), file=sys.stdout if argv else sys.stderr)
        if not argv:
            raise SystemExit(2)
        return None
    if argv[0] == "configs":
        return configs_command(argv[1:])
    if argv[0] == "evolve":
        return evolve(argv[1:])
    resolved = resolve_config_arguments(argv)
    if from_command_line:
        # LightningCLI warns when given both args and a command line; hand it the resolved one.
        saved_argv, sys.argv = sys.argv, [sys.argv[0], *resolved]
        try:
            cli = RobustLightningCLI(parser_kwargs={"exit_on_error": False})
        finally:
            sys.argv = saved_argv
    else:
        cli = RobustLightningCLI(args=resolved, parser_kwargs={"exit_on_error": False})
    _finish_wandb_run()
    return cli


def main(args: list[str] | None = None) -> Any:
    """Console entry point (``robust-lightning`` and ``python -m robust_lightning``).

    ``evolve`` (NERO-Net's architecture search) has its own parser and ``configs`` lists or
    copies the shipped configs; every other subcommand is LightningCLI's
    (``fit``/``validate``/``test``/``predict``).

    Raises:
        SystemExit: status 2 after printing a user error (a
            :class:`~robust_lightning.errors.UserError` or a bad argument) in one or two
            lines; ``--traceback`` or ``ROBUST_LIGHTNING_TRACEBACK=1`` re-raises it instead.
    """
    # W&B must never try to reach the network unless the user opts in.
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    argv = sys.argv[1:] if args is None else list(args)
    show_traceback = "--traceback" in argv or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--traceback"]
    from jsonargparse import ArgumentError

    with _quiet_known_noise():
        try:
            return _dispatch(argv, from_command_line=args is None)
        except UserError as error:
            if show_traceback:
                raise
            _report_user_error(str(error))
            raise SystemExit(2) from None
        except ArgumentError as error:
            if show_traceback:
                raise
            cause = _user_error_cause(error)
            if cause is not None:  # e.g. importing a config's class found a missing extra
                _report_user_error(str(cause))
                raise SystemExit(2) from None
            subcommand = argv[0] if argv and not argv[0].startswith("-") else None
            _report_user_error(_argument_error_message(error, subcommand), traceback_hint=False)
            raise SystemExit(2) from None


def console_main() -> None:
    """The ``robust-lightning`` console script: :func:`main`, returning nothing.

    A console script passes its function's return value to ``sys.exit``; returning the CLI
    object would print it and exit with status 1 after a successful run.
    """
    main()


def _finish_wandb_run() -> None:
    """One CLI invocation is one W&B run: close it, or a later ``main()`` in the same process
    (a notebook, a sweep driver, a test) would silently log into this run.
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


if __name__ == "__main__":
    main()
