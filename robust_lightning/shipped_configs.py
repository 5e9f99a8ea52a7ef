"""The configs shipped with the package: where they are, what each runs, what each needs.

In a wheel they are package data (``robust_lightning/configs/<method>/*.yaml``); in a source
checkout they are the repository's ``configs/`` folder. ``robust-lightning fit --config
classifier/digits_pgd_at.yaml`` finds them by that name from any folder (a path that exists
wins), ``robust-lightning configs`` lists them and ``robust-lightning configs copy`` copies one
out for editing.

What a config needs is read from the YAML itself: the datamodule class (a dataset to download,
or data the package generates), the method's extra (its model class looked up in
``_extras.EXTRAS``), and the input paths (a victim model, a surrogate checkpoint, a synthesized
corpus) that another shipped config writes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from robust_lightning._extras import extra_for
from robust_lightning.errors import InvalidArgumentError, MissingFileError

__all__ = [
    "ConfigInfo",
    "PathNeed",
    "config_root",
    "copy_config",
    "describe",
    "list_configs",
    "producers",
    "resolve_config",
]

_PACKAGE_DIR = Path(__file__).resolve().parent

#: Datamodules that read a dataset the user downloads: class name -> (what, path argument).
DATASETS: dict[str, tuple[str, str]] = {
    "AudioMOSTrack2DataModule": ("the AudioMOS 2025 track 2 corpus", "root"),
    "CIFAR10DataModule": ("CIFAR-10 batches (cifar-10-batches-py)", "data_dir"),
    "InfraredDetectionDataModule": ("FLIR ADAS v2 thermal images + COCO json", "data_dir"),
}
#: Where each dataset comes from (the message of a run whose data folder is missing).
DATASET_SOURCES: dict[str, str] = {
    "AudioMOSTrack2DataModule": "the AudioMOS 2025 challenge, track 2 (lists + audio; see audio_grl's README)",
    "CIFAR10DataModule": "https://www.cs.toronto.edu/~kriz/cifar.html, the python version, unpacked",
    "FlowDataModule": "https://www.unb.ca/cic/datasets/ids-2017.html (MachineLearningCVE CSVs)",
    "InfraredDetectionDataModule": "the FLIR ADAS v2 thermal dataset (see kgat's README)",
}

#: Arguments that name an input a previous run writes (checked to exist before a run).
INPUT_PATH_KEYS = ("victim_path", "model_path", "tokenizer_path", "surrogate_checkpoint", "teacher_checkpoint")
#: Arguments that name what a run writes (matched against other configs' inputs).
OUTPUT_DIR_KEYS = ("export_dir",)


@dataclass(frozen=True)
class PathNeed:
    """An input path of a config: the argument that names it and the configs that write it."""

    argument: str
    path: str
    written_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConfigInfo:
    """One shipped config, as ``robust-lightning configs`` lists it."""

    name: str
    method: str
    subcommand: str = "fit"
    extra: str | None = None
    datasets: tuple[str, ...] = ()
    inputs: tuple[PathNeed, ...] = field(default=())

    @property
    def needs(self) -> str:
        """What the config needs before it runs, in a few words."""
        parts = [f"needs {what}" for what in self.datasets]
        for need in self.inputs:
            source = f" (run {' or '.join(need.written_by)} first)" if need.written_by else ""
            parts.append(f"needs {need.path}{source}")
        return "; ".join(parts) if parts else "runs as is (bundled or generated data)"


def config_root() -> Path:
    """Folder of the shipped configs: package data in a wheel, ``configs/`` in a checkout."""
    packaged = _PACKAGE_DIR / "configs"
    if packaged.is_dir():
        return packaged
    return _PACKAGE_DIR.parent / "configs"


def _names(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*.yaml"))


def _normalise(name: str) -> str:
    """``configs/classifier/x`` or ``classifier/x.yaml`` -> ``classifier/x.yaml``."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if parts and parts[0] == "configs":
        parts = parts[1:]
    text = "/".join(parts)
    return text if text.endswith((".yaml", ".yml")) else f"{text}.yaml"


def resolve_config(value: str, argument: str = "--config") -> Path:
    """The file ``--config value`` means: an existing path, else the shipped config so named.

    Raises:
        MissingFileError: neither exists; the message says how to list the shipped configs.
    """
    path = Path(value).expanduser()
    if path.is_file():
        return path
    root = config_root()
    shipped = root / _normalise(value)
    if root.is_dir() and shipped.is_file():
        return shipped
    hint = "`robust-lightning configs` lists the shipped ones"
    close = [name for name in _names(root) if PurePosixPath(name).stem == PurePosixPath(_normalise(value)).stem]
    if close:
        hint = f"did you mean {' or '.join(close)}? ({hint})"
    raise MissingFileError(f"{argument} {value}: no such file and no shipped config of that name; {hint}")


def _walk(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``(dotted.argument, value)`` of a config tree, depth first."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            yield dotted, value
            yield from _walk(value, dotted)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield f"{prefix}[{index}]", value
            yield from _walk(value, f"{prefix}[{index}]")


def _class_nodes(node: Any, prefix: str = "") -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """``(argument prefix, class name, init_args)`` of every ``class_path`` in a config tree."""
    if isinstance(node, Mapping) and isinstance(node.get("class_path"), str):
        yield prefix, node["class_path"].rsplit(".", 1)[-1], node.get("init_args") or {}
    for dotted, value in _walk(node, prefix):
        if isinstance(value, Mapping) and isinstance(value.get("class_path"), str):
            yield dotted, value["class_path"].rsplit(".", 1)[-1], value.get("init_args") or {}


def dataset_needs(config: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(what, --argument, path, where to get it)`` of each downloaded dataset a config reads."""
    found = []
    for prefix, name, init_args in _class_nodes(config):
        if name == "FlowDataModule" and not init_args.get("synthetic"):
            found.append(("CICFlowMeter flow CSVs (CIC-IDS2017/2018)", f"--{prefix}.init_args.data_dir",
                          str(init_args.get("data_dir")), DATASET_SOURCES[name]))
        elif name in DATASETS:
            what, key = DATASETS[name]
            found.append((what, f"--{prefix}.init_args.{key}", str(init_args.get(key)), DATASET_SOURCES[name]))
    return found


def input_paths(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(--argument, path)`` of each input a previous run writes (see :data:`INPUT_PATH_KEYS`).

    SIA's ``data_dir`` counts too when the datamodule does not synthesize the corpus itself.
    """
    found = []
    for dotted, value in _walk(config):
        key = dotted.rsplit(".", 1)[-1]
        if key in INPUT_PATH_KEYS and isinstance(value, str):
            found.append((f"--{dotted}", value))
    for prefix, name, init_args in _class_nodes(config):
        if name == "SIADataModule" and not init_args.get("synthesize") and isinstance(init_args.get("data_dir"), str):
            found.append((f"--{prefix}.init_args.data_dir", init_args["data_dir"]))
    return found


def _outputs(config: Mapping[str, Any]) -> set[str]:
    written = {str(value) for dotted, value in _walk(config)
               if dotted.rsplit(".", 1)[-1] in OUTPUT_DIR_KEYS and isinstance(value, str)}
    for _, name, init_args in _class_nodes(config):
        if name == "ModelCheckpoint" and init_args.get("dirpath") and init_args.get("filename"):
            written.add(f"{init_args['dirpath']}/{init_args['filename']}.ckpt")
        if name == "SIADataModule" and init_args.get("synthesize") and init_args.get("data_dir"):
            written.add(str(init_args["data_dir"]))
    return written


def _load(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


@cache
def _index(root: Path) -> dict[str, dict[str, Any]]:
    return {name: _load(root / name) for name in _names(root)}


def producers(path: str, root: Path | None = None) -> tuple[str, ...]:
    """Shipped configs whose run writes ``path`` (or a folder that contains it)."""
    wanted = PurePosixPath(path)
    found = []
    for name, config in _index(root or config_root()).items():
        for output in _outputs(config):
            written = PurePosixPath(output)
            if wanted == written or written in wanted.parents:
                found.append(name)
                break
    return tuple(found)


def describe(name: str, config: Mapping[str, Any], root: Path | None = None) -> ConfigInfo:
    """What a config runs and needs (see :class:`ConfigInfo`)."""
    model = config.get("model")
    subcommand = "fit"
    if isinstance(model, Mapping) and isinstance(model.get("class_path"), str):
        class_path = model["class_path"]
        method = class_path.rsplit(".", 1)[-1]
        recipe = (model.get("init_args") or {}).get("recipe")
        if isinstance(recipe, str):
            method = f"{method} ({recipe})"
        extra = extra_for(class_path)
    else:  # `robust-lightning evolve` configs hold NeroNetSearch's own arguments
        method, subcommand, extra = "NeroNetSearch", "evolve", None
    # One entry per path: a victim folder is both victim_path and tokenizer_path.
    first_argument = {path: argument for argument, path in reversed(input_paths(config))}
    inputs = tuple(PathNeed(argument, path, tuple(p for p in producers(path, root) if p != name))
                   for path, argument in first_argument.items())
    datasets = tuple(f"{what} in {path}" for what, _, path, _ in dataset_needs(config))
    return ConfigInfo(name=name, method=method, subcommand=subcommand, extra=extra, datasets=datasets,
                      inputs=inputs)


def list_configs(root: Path | None = None) -> list[ConfigInfo]:
    """Every shipped config, sorted by name."""
    root = root or config_root()
    return [describe(name, config, root) for name, config in _index(root).items()]


def copy_config(name: str, destination: str | None = None, *, force: bool = False) -> Path:
    """Copy a shipped config out for editing; returns the written file.

    ``destination`` may be a folder (the file keeps its name) or a file path; by default the
    current folder. An existing file is never overwritten unless ``force``.

    Raises:
        MissingFileError: no shipped config of that name.
        InvalidArgumentError: the target exists (the message says to pass ``--force``).
    """
    root = config_root()
    source = root / _normalise(name)
    if not source.is_file():
        raise MissingFileError(f"configs copy {name}: no shipped config of that name; "
                               "`robust-lightning configs` lists them")
    target = Path(destination or ".").expanduser()
    if target.is_dir() or (destination or "").endswith(("/", "\\")):
        target = target / source.name
    if target.exists() and not force:
        raise InvalidArgumentError(f"configs copy: {target} exists; choose another DEST or pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target
