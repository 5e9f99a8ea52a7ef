"""METHODS: every method of the package, by name, with its LightningModule, DataModules, configs and extra.

One entry per row of the README's methods table (a test keeps them equal) and per folder of
``configs/`` (every config there is listed by exactly one entry; another test checks it).
Classes are stored as dotted import paths and imported only when asked for
(:meth:`MethodSpec.load_module`), so reading the registry never imports an optional extra
(mmdet, transformers, torchaudio, pandapower).

    >>> from robust_lightning.lightning_modules import METHODS
    >>> METHODS["ddos"].module
    'robust_lightning.lightning_modules.ddos.DDoSDetector'
    >>> METHODS["kgat"].extra
    'detection'
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from robust_lightning._extras import EXTRAS, extra_for
from robust_lightning.errors import InvalidArgumentError, MissingExtraError

__all__ = ["EXTRAS", "METHODS", "MethodSpec", "import_object"]


def import_object(path: str) -> Any:
    """The object at dotted ``path`` (``package.module.Name``), imported now.

    Raises:
        InvalidArgumentError: If ``path`` names no importable object.
    """
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise InvalidArgumentError(f"import path must be 'package.module.Name', got {path!r}")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise InvalidArgumentError(f"{module_name} has no {attribute!r} (import path {path!r})") from None


@dataclass(frozen=True)
class MethodSpec:
    """One method: what to import, what data it trains on, its configs and (derived) its extra.

    Attributes:
        name: Registry key; also its folder under ``configs/`` and the README table's first column.
        module: The LightningModule, as a class or a dotted import path (imported lazily).
        datamodules: Dotted import paths of the DataModules its configs use.
        configs: Its config files, relative to ``configs/``.
        summary: One line: the method and its paper.
        other_modules: Dotted import paths of the method's other LightningModules (stages of
            a pipeline, e.g. the victim ``TextClassifier`` before ``BackdoorDefense``).
    """

    name: str
    module: str | type
    datamodules: tuple[str, ...]
    configs: tuple[str, ...]
    summary: str
    other_modules: tuple[str, ...] = ()

    @property
    def extra(self) -> str | None:
        """``None``, or the pip extra the method needs (``pip install 'robust-lightning[<extra>]'``).

        Read from the one table of extras, :data:`robust_lightning._extras.EXTRAS`, by the
        module's import path, so the registry, ``robust-lightning configs`` and ``pyproject.toml``
        cannot disagree.
        """
        return extra_for(self.module_path)

    @property
    def module_path(self) -> str:
        """Dotted import path of the LightningModule."""
        if isinstance(self.module, str):
            return self.module
        return f"{self.module.__module__}.{self.module.__qualname__}"

    def missing_extra_modules(self) -> list[str]:
        """The extra's modules that cannot be imported here (empty: the method can run)."""
        if self.extra is None:
            return []
        return [name for name in EXTRAS[self.extra].modules if importlib.util.find_spec(name) is None]

    def load_module(self) -> type:
        """The LightningModule class (imports it, and its extra, now).

        Raises:
            MissingExtraError: If the method's extra is not installed.
        """
        missing = self.missing_extra_modules()
        if missing:
            raise MissingExtraError(
                f"method {self.name!r} needs {', '.join(missing)}: pip install 'robust-lightning[{self.extra}]'"
            )
        return self.module if isinstance(self.module, type) else import_object(self.module)

    def load_modules(self) -> list[type]:
        """``[load_module(), *other_modules]`` (imported now; same errors as :meth:`load_module`)."""
        return [self.load_module(), *(import_object(path) for path in self.other_modules)]

    def load_datamodules(self) -> list[type]:
        """The DataModule classes (imported now)."""
        return [import_object(path) for path in self.datamodules]


_LM = "robust_lightning.lightning_modules"
_DM = "robust_lightning.datamodules"

_SPECS = (
    MethodSpec(
        name="classifier",
        module=f"{_LM}.classifier.RobustClassifier",
        datamodules=(f"{_DM}.DigitsDataModule", f"{_DM}.CIFAR10DataModule"),
        configs=("classifier/cifar10_pgd_at.yaml", "classifier/digits_evaluate.yaml", "classifier/digits_fat.yaml",
                 "classifier/digits_free_at.yaml", "classifier/digits_gradalign.yaml", "classifier/digits_n_fgsm.yaml",
                 "classifier/digits_pgd_at.yaml", "classifier/digits_standard.yaml", "classifier/digits_trades.yaml"),
        summary="Standard, PGD-AT (Madry et al. 2018), FGSM-RS (Wong et al. 2020), N-FGSM (de Jorge et al. "
                "2022), Free-AT (Shafahi et al. 2019), GradAlign (Andriushchenko & Flammarion 2020), FAT "
                "(Zhang et al. 2020) and TRADES (Zhang et al. 2019) training of an image classifier",
    ),
    MethodSpec(
        name="rct_af",
        module=f"{_LM}.rct_af.RCTAFClassifier",
        datamodules=(f"{_DM}.DigitsDataModule", f"{_DM}.CIFAR10DataModule"),
        configs=("rct_af/cifar10_pgd_at.yaml", "rct_af/cifar10_trades.yaml", "rct_af/digits_pgd_at.yaml"),
        summary="RCT-AF: adversarial training with curvature-controlled activations (Yu, Su & Zhu)",
    ),
    MethodSpec(
        name="nero_net",
        module=f"{_LM}.nero_net.NeroNetClassifier",
        datamodules=(f"{_DM}.DigitsDataModule", f"{_DM}.CIFAR10DataModule"),
        configs=("nero_net/evolve/cifar10.yaml", "nero_net/evolve/digits.yaml", "nero_net/train_best.yaml"),
        summary="NERO-Net: neuroevolution of robust CNNs (Valentim et al.); `robust-lightning evolve` searches",
    ),
    MethodSpec(
        name="kgat",
        module=f"{_LM}.kgat.KGATDetector",
        datamodules=(f"{_DM}.InfraredDetectionDataModule", f"{_DM}.SyntheticThermalDataModule"),
        configs=("kgat/flir_faster_rcnn_r50_kgat.yaml", "kgat/flir_retinanet_r50_kgat.yaml",
                 "kgat/synthetic_fcos_adversarial.yaml", "kgat/synthetic_fcos_kgat.yaml",
                 "kgat/synthetic_fcos_plain.yaml"),
        summary="KGAT: knowledge-guided adversarial training of mmdet infrared detectors (Zhao et al.)",
    ),
    MethodSpec(
        name="drsf",
        module=f"{_LM}.drsf.DRSFClassifier",
        datamodules=(f"{_DM}.SyntheticDigitsDataModule", f"{_DM}.DomainGeneralizationDataModule"),
        configs=("drsf/synth2real_digits_drsf.yaml", "drsf/synth2real_digits_erm.yaml",
                 "drsf/synth2real_digits_mixstyle.yaml"),
        summary="DRSF: synthetic-to-real generalisation with domain reassembly and adversarial soft fusion (Li et al.)",
    ),
    MethodSpec(
        name="drsf_detection",
        module=f"{_LM}.drsf.DRSFDetector",
        datamodules=(f"{_DM}.thermal_styles.SyntheticThermalStylesDataModule",),
        configs=("drsf_detection/synthetic_thermal_drsf.yaml", "drsf_detection/synthetic_thermal_plain.yaml"),
        summary="DRSF for detection after the authors' code (fantasioly/DRSF): image- and instance-level GRL "
                "domain heads, consistency, EMA-teacher masked pseudo-labels, on an mmdet FCOS",
    ),
    MethodSpec(
        name="audio_grl",
        module=f"{_LM}.audio_grl.AudioQualityGRL",
        datamodules=(f"{_DM}.audio_quality.SpuriousCueSpeechDataModule", f"{_DM}.audio_quality.AudioMOSTrack2DataModule"),
        configs=("audio_grl/audiomos_track2_grl.yaml", "audio_grl/audiomos_track2_multi.yaml",
                 "audio_grl/spurious_cue_baseline.yaml", "audio_grl/spurious_cue_grl.yaml"),
        summary="Audio quality assessment with gradient-reversal domain heads (610494/domainGRL)",
    ),
    MethodSpec(
        name="badllm_tg",
        module=f"{_LM}.badllm_tg.BackdoorDefense",
        datamodules=(f"{_DM}.text.TextBackdoorDataModule",),
        configs=("badllm_tg/generated_addsent_defense.yaml", "badllm_tg/generated_addsent_victim.yaml",
                 "badllm_tg/generated_badnets_defense.yaml", "badllm_tg/generated_badnets_victim.yaml"),
        summary="BadLLM-TG: RL trigger generation against NLP backdoors (Zhang et al.)",
        other_modules=(f"{_LM}.badllm_tg.TextClassifier",),
    ),
    MethodSpec(
        name="voltage_rl",
        module=f"{_LM}.voltage_rl.VoltVarTD3",
        datamodules=(f"{_LM}.voltage_rl.VoltVarDataModule",),
        configs=("voltage_rl/case33bw_td3.yaml", "voltage_rl/case33bw_td3_adversarial.yaml",
                 "voltage_rl/case33bw_td3_adversarial_adaptive.yaml", "voltage_rl/case33bw_td3_noise.yaml"),
        summary="Robust Volt-Var control: TD3 with observation-attack adversarial training (Chung & Zhang)",
    ),
    MethodSpec(
        name="ddos",
        module=f"{_LM}.ddos.DDoSDetector",
        datamodules=(f"{_DM}.FlowDataModule", f"{_DM}.DomainGeneralizationDataModule"),
        configs=("ddos/cicids2017_mlp_constrained_at.yaml", "ddos/cross_dataset_mlp_constrained_at.yaml",
                 "ddos/synthetic_cnn_constrained_at.yaml", "ddos/synthetic_mlp_constrained_at.yaml",
                 "ddos/synthetic_mlp_standard.yaml"),
        summary="DDoS flow detection robust to constrained feature-space attacks (Apostu et al. survey)",
    ),
    MethodSpec(
        name="nup",
        module=f"{_LM}.nup.ConjMaskClassifier",
        datamodules=(f"{_DM}.DigitsDataModule",),
        configs=("nup/digits_conjmask.yaml", "nup/digits_conjmask_positive.yaml", "nup/digits_probe.yaml"),
        summary="Neural Uncertainty Principle (Zhang et al.): ConjugateProbe input-gradient probes and ConjMask",
        other_modules=(f"{_LM}.classifier.RobustClassifier",),
    ),
    MethodSpec(
        name="sia",
        module=f"{_LM}.sia.SIAAlign",
        datamodules=(f"{_LM}.sia.SIADataModule",),
        configs=("sia/align.yaml", "sia/inject.yaml", "sia/synthesize.yaml"),
        summary="SIA: synthesize knowledge, inject it by depth up-scaling, align adversarially (Zhai et al.)",
        other_modules=(f"{_LM}.sia.SIAInject",),
    ),
    MethodSpec(
        name="sharpening",
        module=f"{_LM}.classifier.RobustClassifier",
        datamodules=(f"{_DM}.DigitsDataModule",),
        configs=("sharpening/digits_surrogate.yaml", "sharpening/digits_transfer.yaml"),
        summary="Preemptive Laplacian sharpening against transfer attacks (Liang & Pun): a callback, "
                "LaplacianSharpening, on a RobustClassifier",
    ),
    MethodSpec(
        name="soft_dimo",
        module=f"{_LM}.soft_dimo.SoftDiMODistillation",
        datamodules=(f"{_DM}.DigitsDataModule",),
        configs=("soft_dimo/dimo.yaml", "soft_dimo/soft_dimo.yaml", "soft_dimo/teacher.yaml"),
        summary="Di[M]O / Soft-Di[M]O: one-step discrete image generation distilled from a MaskGIT teacher "
                "(Zhu et al.), soft embeddings + GAN + reward",
        other_modules=(f"{_LM}.soft_dimo.MaskedTokenTeacher", f"{_LM}.soft_dimo.DiMODistillation"),
    ),
)

#: Method name -> :class:`MethodSpec` (read-only).
METHODS: Mapping[str, MethodSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
