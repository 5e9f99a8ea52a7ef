"""LightningDataModules. Images are float tensors in ``[0, 1]``, audio waveforms in ``[-1, 1]``,
text as token ids;
normalisation is a layer of the model, so attack budgets mean the same everywhere.
"""

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
from robust_lightning.datamodules.thermal_styles import (
    SyntheticThermalStylesDataModule,
    ThermalStyle,
)
from robust_lightning.datamodules.text import (
    TextBackdoorDataModule,
    generate_sentiment_corpus,
)

__all__ = [
    "AudioMOSTrack2DataModule",
    "AudioQualityCSVDataModule",
    "CIFAR10DataModule",
    "DigitsDataModule",
    "DomainGeneralizationDataModule",
    "FlowDataModule",
    "ImageFolderDataModule",
    "InMemoryImageDataModule",
    "InfraredDetectionDataModule",
    "SpuriousCueSpeechDataModule",
    "SyntheticDigitsDataModule",
    "SyntheticThermalDataModule",
    "SyntheticThermalStylesDataModule",
    "TensorImageDataset",
    "TextBackdoorDataModule",
    "ThermalStyle",
    "generate_flow_csvs",
    "generate_sentiment_corpus",
    "generate_spurious_cue_corpus",
    "generate_thermal_scenes",
    "read_flow_csv",
]
