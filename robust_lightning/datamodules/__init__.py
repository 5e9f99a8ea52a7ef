"""LightningDataModules. Images are float tensors in ``[0, 1]``, audio waveforms in ``[-1, 1]``,
text as token ids;
normalisation is a layer of the model, so attack budgets mean the same everywhere.

Names load on first use (see ``robust_lightning/_lazy.py``): the image datamodules need only
the core dependencies; audio needs the ``[audio]`` extra, text the ``[text]`` extra.
"""

# ruff: noqa: F401
from __future__ import annotations

from typing import TYPE_CHECKING

from robust_lightning._lazy import lazy_exports

_PACKAGE = "robust_lightning.datamodules"

_EXPORTS: dict[str, str] = {
    "AudioMOSTrack2DataModule": f"{_PACKAGE}.audio_quality",
    "AudioQualityCSVDataModule": f"{_PACKAGE}.audio_quality",
    "CIFAR10DataModule": f"{_PACKAGE}.cifar10",
    "DigitsDataModule": f"{_PACKAGE}.digits",
    "DomainGeneralizationDataModule": f"{_PACKAGE}.domain_generalization",
    "FlowDataModule": f"{_PACKAGE}.flows",
    "ImageFolderDataModule": f"{_PACKAGE}.domain_generalization",
    "InMemoryImageDataModule": f"{_PACKAGE}._common",
    "InfraredDetectionDataModule": f"{_PACKAGE}.infrared",
    "SpuriousCueSpeechDataModule": f"{_PACKAGE}.audio_quality",
    "SyntheticDigitsDataModule": f"{_PACKAGE}.synthetic_digits",
    "SyntheticThermalDataModule": f"{_PACKAGE}.infrared",
    "SyntheticThermalStylesDataModule": f"{_PACKAGE}.thermal_styles",
    "TensorImageDataset": f"{_PACKAGE}._common",
    "TextBackdoorDataModule": f"{_PACKAGE}.text",
    "generate_flow_csvs": f"{_PACKAGE}.flows",
    "generate_sentiment_corpus": f"{_PACKAGE}.text",
    "generate_spurious_cue_corpus": f"{_PACKAGE}.audio_quality",
    "ThermalStyle": f"{_PACKAGE}.thermal_styles",
    "generate_thermal_scenes": f"{_PACKAGE}.infrared",
    "read_flow_csv": f"{_PACKAGE}.flows",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

# The imports below only tell type checkers and IDEs what the lazy names are (__all__ is
# built from _EXPORTS, so linters cannot see that they are re-exported).
if TYPE_CHECKING:
    from robust_lightning.datamodules._common import (
        InMemoryImageDataModule,
        TensorImageDataset,
    )
    from robust_lightning.datamodules.audio_quality import (
        AudioMOSTrack2DataModule,
        AudioQualityCSVDataModule,
        SpuriousCueSpeechDataModule,
        generate_spurious_cue_corpus,
    )
    from robust_lightning.datamodules.cifar10 import CIFAR10DataModule
    from robust_lightning.datamodules.digits import DigitsDataModule
    from robust_lightning.datamodules.domain_generalization import (
        DomainGeneralizationDataModule,
        ImageFolderDataModule,
    )
    from robust_lightning.datamodules.flows import (
        FlowDataModule,
        generate_flow_csvs,
        read_flow_csv,
    )
    from robust_lightning.datamodules.infrared import (
        InfraredDetectionDataModule,
        SyntheticThermalDataModule,
        generate_thermal_scenes,
    )
    from robust_lightning.datamodules.synthetic_digits import SyntheticDigitsDataModule
    from robust_lightning.datamodules.text import (
        TextBackdoorDataModule,
        generate_sentiment_corpus,
    )
    from robust_lightning.datamodules.thermal_styles import (
        SyntheticThermalStylesDataModule,
        ThermalStyle,
    )
