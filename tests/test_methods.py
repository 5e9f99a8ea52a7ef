"""Every registered method, the same way (anomalib's test over its model registry is the model).

For each entry of :data:`robust_lightning.lightning_modules.METHODS` the method's smallest config
is built through the real CLI parser (with the small-data overrides of
``tests/data/cli_overrides``), then: fit (``fast_dev_run``), validate, test, predict; the
checkpoint is saved, opened with ``torch.load(weights_only=True)``, restored with
``type(model).load_from_checkpoint`` (hyperparameters equal), and the restored module must
predict exactly what the trained one predicts on the same batch.

Methods whose network is built from the data (a tokenizer's vocabulary) cannot be rebuilt by
``load_from_checkpoint`` alone: they are restored as Lightning resumes them, from the
checkpoint's hyperparameters and ``ckpt_path`` once the DataModule is attached.

The registry's consistency with the README's methods table, ``configs/`` and the top-level
API is checked here too.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch import Tensor
from torch.utils.data import DataLoader

import robust_lightning
from robust_lightning._extras import EXTRAS
from robust_lightning.cli import RobustLightningCLI
from robust_lightning.lightning_modules import METHODS, MethodSpec, RobustMethod
from robust_lightning.lightning_modules.registry import import_object
from robust_lightning.shipped_configs import list_configs
from tests.data.cli_overrides import EXTRA_SETUP, OVERRIDES

REPO = Path(__file__).resolve().parents[1]
CONFIG_ROOT = REPO / "configs"


@dataclass(frozen=True)
class Case:
    """How to run one method small: its config, and what its DataModule cannot give."""

    config: str
    #: Restore through ``ckpt_path`` with the DataModule attached (network built from the data).
    builds_from_data: bool = False
    #: ``(model, datamodule) -> DataLoader`` to predict on (default: predict, else test, loader).
    predict_loader: Callable[[Any, Any], DataLoader] | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    slow: bool = False


def _observations(model: Any, datamodule: Any) -> DataLoader:
    # The agent predicts actions for observations (its evaluation loaders yield days to roll out).
    generator = torch.Generator().manual_seed(0)
    return DataLoader(torch.rand(8, datamodule.obs_dim, generator=generator), batch_size=4)


CASES: dict[str, Case] = {
    "classifier": Case("classifier/digits_pgd_at.yaml"),
    "rct_af": Case("rct_af/digits_pgd_at.yaml"),
    "nero_net": Case("nero_net/train_best.yaml"),
    "kgat": Case("kgat/synthetic_fcos_plain.yaml", slow=True),
    "drsf": Case("drsf/synth2real_digits_erm.yaml"),
    "drsf_detection": Case("drsf_detection/synthetic_thermal_drsf.yaml", slow=True),
    "audio_grl": Case("audio_grl/spurious_cue_grl.yaml"),
    "badllm_tg": Case("badllm_tg/generated_badnets_defense.yaml", builds_from_data=True,
                      extra_args=("--model.init_args.generation_steps=1", "--model.init_args.num_candidates=2",
                                  "--model.init_args.reward_samples=4")),
    "voltage_rl": Case("voltage_rl/case33bw_td3.yaml", predict_loader=_observations,
                       extra_args=("--model.init_args.warmup_transitions=64", "--model.init_args.batch_size=32")),
    "ddos": Case("ddos/synthetic_mlp_constrained_at.yaml"),
    "nup": Case("nup/digits_conjmask.yaml"),
    "sia": Case("sia/align.yaml", builds_from_data=True),
    "sharpening": Case("sharpening/digits_transfer.yaml"),
    "soft_dimo": Case("soft_dimo/soft_dimo.yaml"),
}


def _params() -> list[Any]:
    marks = {name: [pytest.mark.slow] if case.slow else [] for name, case in CASES.items()}
    return [pytest.param(name, marks=marks.get(name, []), id=name) for name in METHODS]


# -- the registry is the one list of methods ---------------------------------------------------
def _readme_method_names() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Methods\n", 1)[1]
    table: list[str] = []
    for line in section.splitlines():
        if line.startswith("|"):
            table.append(line)
        elif table:  # the first table of the section ends here
            break
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[0] == "name", f"the README methods table must start with a 'name' column, got {header}"
    names = []
    for line in table[2:]:
        match = re.match(r"\|\s*`([a-z0-9_]+)`\s*\|", line)
        assert match, f"README methods row without a `name`: {line[:80]}"
        names.append(match.group(1))
    return names


def test_readme_methods_table_rows_are_the_registry() -> None:
    names = _readme_method_names()
    assert len(names) == len(set(names)), f"README lists a method twice: {names}"
    assert sorted(names) == sorted(METHODS), (
        f"README-only: {sorted(set(names) - set(METHODS))}, registry-only: {sorted(set(METHODS) - set(names))}"
    )


def test_every_config_belongs_to_exactly_one_method() -> None:
    on_disk = sorted(str(p.relative_to(CONFIG_ROOT)) for p in CONFIG_ROOT.rglob("*.yaml"))
    listed = [config for spec in METHODS.values() for config in spec.configs]
    assert len(listed) == len(set(listed)), "a config is listed by two methods"
    assert sorted(listed) == on_disk, (
        f"configs without a method: {sorted(set(on_disk) - set(listed))}; "
        f"listed but missing: {sorted(set(listed) - set(on_disk))}"
    )
    for spec in METHODS.values():
        assert all(c.split("/", 1)[0] == spec.name for c in spec.configs), spec.name


def test_every_method_has_a_small_case_here() -> None:
    assert sorted(CASES) == sorted(METHODS)
    for name, case in CASES.items():
        assert case.config in METHODS[name].configs


def test_reading_the_registry_imports_no_extra() -> None:
    # Entries are dotted paths: nothing is imported until load_module().
    for spec in METHODS.values():
        assert isinstance(spec.module, str) and all(isinstance(p, str) for p in spec.datamodules)
    with pytest.raises(AttributeError):
        METHODS["ddos"].extra = "text"  # type: ignore[misc]  # frozen


@pytest.mark.parametrize("name", list(METHODS))
def test_configs_use_the_registered_module_and_datamodules(name: str) -> None:
    spec = METHODS[name]
    if spec.missing_extra_modules():
        pytest.skip(f"{name} needs the {spec.extra!r} extra")
    modules = spec.load_modules()
    datamodules = spec.load_datamodules()
    for config in spec.configs:
        data = yaml.safe_load((CONFIG_ROOT / config).read_text())
        if "model" not in data:  # robust-lightning evolve configs: the search builds its own module
            continue
        assert import_object(data["model"]["class_path"]) in modules, config
        assert import_object(data["data"]["class_path"]) in datamodules, config
    assert all(issubclass(m, RobustMethod) for m in modules), "every method derives from RobustMethod"
    for module in modules:
        assert getattr(robust_lightning, module.__name__) is module, f"{module.__name__} not in the top-level API"


def test_a_method_extra_comes_from_the_one_extras_table() -> None:
    """METHODS[...].extra and `robust-lightning configs` both read _extras.EXTRAS, so they agree
    config by config; every method path the table names is a registered method (a renamed folder
    cannot silently lose its extra); a class can need an extra the rest of its folder does not."""
    config_extras = {info.name: info.extra for info in list_configs()}
    for name, spec in METHODS.items():
        for config in spec.configs:
            assert config_extras[config] == spec.extra, (name, config)
    for extra_name, extra in EXTRAS.items():
        for owner in extra.needed_by:
            if owner.startswith("robust_lightning.lightning_modules."):
                assert any(spec.module_path == owner or spec.module_path.startswith(f"{owner}.")
                           for spec in METHODS.values()), (extra_name, owner)
            else:
                assert importlib.util.find_spec(owner) is not None, (extra_name, owner)
    assert METHODS["drsf_detection"].extra == "detection" and METHODS["drsf"].extra is None
    assert MethodSpec("x", "robust_lightning.lightning_modules.sia.SIAAlign", (), (), "x").extra == "text"
    assert MethodSpec("x", "robust_lightning.lightning_modules.siamese.Net", (), (), "x").extra is None


# -- every method, the same way ----------------------------------------------------------------
def _build(name: str, tmp_path: Path) -> RobustLightningCLI:
    case = CASES[name]
    config = CONFIG_ROOT / case.config
    setup = EXTRA_SETUP.get(case.config)
    if setup is not None:
        setup(tmp_path)
    data_class = yaml.safe_load(config.read_text())["data"]["class_path"]
    override = OVERRIDES.get(data_class.rsplit(".", 1)[-1])
    args = ["--config", str(config), "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu", "--trainer.devices=1",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            *(override(tmp_path) if override is not None else []), *case.extra_args]
    return RobustLightningCLI(args=args, run=False)


def _predict_loader(name: str, model: Any, datamodule: Any) -> Any:
    case = CASES[name]
    if case.predict_loader is not None:
        return case.predict_loader(model, datamodule)
    if pl.utilities.model_helpers.is_overridden("predict_dataloader", datamodule, pl.LightningDataModule):
        loaders = datamodule.predict_dataloader()
    else:
        loaders = datamodule.test_dataloader()
    return loaders[0] if isinstance(loaders, (list, tuple)) else loaders


def _assert_identical(a: Any, b: Any, where: str = "output") -> None:
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for key in a:
            _assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _plain(value: Any) -> Any:
    """Hyperparameters as YAML would hold them (tuples and lists are the same sequence there)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _predict(model: pl.LightningModule, loader: Any, datamodule: Any = None, ckpt_path: str | None = None) -> Any:
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, limit_predict_batches=1)
    if datamodule is not None:
        # Attach the DataModule (setup, tokenizer wiring) but predict on the given loader.
        return trainer.predict(model, datamodule=_AttachedLoader(loader, datamodule), ckpt_path=ckpt_path)
    return trainer.predict(model, dataloaders=loader, ckpt_path=ckpt_path)


class _AttachedLoader(pl.LightningDataModule):
    """A DataModule whose predict loader is ``loader`` and which forwards attributes to ``datamodule``."""

    def __init__(self, loader: Any, datamodule: Any) -> None:
        super().__init__()
        self._loader = loader
        self._datamodule = datamodule

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._datamodule, name)

    def setup(self, stage: str) -> None:
        self._datamodule.setup(stage)

    def predict_dataloader(self) -> Any:
        return self._loader


@pytest.mark.parametrize("name", _params())
def test_method_fits_evaluates_predicts_and_round_trips_its_checkpoint(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = METHODS[name]
    for module in spec.missing_extra_modules():
        pytest.importorskip(module, reason=f"{name} needs pip install 'robust-lightning[{spec.extra}]'")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cli = _build(name, tmp_path)
    model, datamodule, trainer = cli.model, cli.datamodule, cli.trainer
    assert isinstance(model, RobustMethod)

    trainer.fit(model, datamodule=datamodule)
    assert trainer.state.finished and trainer.global_step == 1
    validated = trainer.validate(model, datamodule=datamodule, verbose=False)
    tested = trainer.test(model, datamodule=datamodule, verbose=False)
    assert validated and any(k.startswith("val/") for k in validated[0]), f"validate logged {validated}"
    assert tested and any(k.startswith("test/") for k in tested[0]), f"test logged {tested}"
    loader = _predict_loader(name, model, datamodule)
    predicted = trainer.predict(model, dataloaders=loader)
    assert predicted, "predict returned nothing"

    path = tmp_path / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # plain data only: no pickled objects
    hparams = checkpoint["hyper_parameters"]

    if CASES[name].builds_from_data:
        expected = _predict(model.eval(), loader, datamodule=datamodule)
        # What load_from_checkpoint does before loading weights; the weights come with ckpt_path
        # once setup has built the network from the data.
        kwargs = {k: v for k, v in hparams.items() if k != "_instantiator"}
        instantiator = hparams.get("_instantiator")
        restored = import_object(instantiator)(type(model), kwargs) if instantiator else type(model)(**kwargs)
        got = _predict(restored, loader, datamodule=datamodule, ckpt_path=str(path))
        # Outside the CLI a subclass also records its parent's own arguments (TextClassifier's
        # model_path under BackdoorDefense): every saved hyperparameter is restored unchanged.
        restored_hparams = _plain(dict(restored.hparams))
        for key, value in _plain(dict(model.hparams)).items():
            assert key in restored_hparams and restored_hparams[key] == value, f"hparam {key!r} not restored"
    else:
        expected = _predict(model.eval(), loader)
        restored = type(model).load_from_checkpoint(path, weights_only=True)
        assert type(restored) is type(model)
        assert _plain(dict(restored.hparams)) == _plain(dict(model.hparams))
        got = _predict(restored.eval(), loader)
        # ... and the restored module saves a checkpoint that loads the same way again.
        again = tmp_path / f"{name}_again.ckpt"
        torch.save({**checkpoint, "hyper_parameters": dict(restored.hparams)}, again)
        assert torch.load(again, weights_only=True)["hyper_parameters"].keys() == hparams.keys()
    _assert_identical(expected, got, f"{name} predictions")
