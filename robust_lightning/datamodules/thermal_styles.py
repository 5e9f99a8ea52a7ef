"""Style-shifted thermal scenes: pseudo-target domains for DRSF detection and a held-out "real" style.

DRSF's released detection code (``fantasioly/DRSF``, ``configs/faster_rcnn_R_101_DRSF_aw.yaml``)
trains on clear-weather real images (``aw_daytimeclear_train``) and uses, as unlabelled
pseudo-target domains, images a diffusion model generated from the source layouts
(``aw_*_instdiff``: daytime foggy, dusk rainy, night sunny); it tests on real adverse-weather
images. We have no diffusion model, so our stand-in generator is a set of fixed random *styles*
(gamma, contrast, brightness, haze, blur, low-frequency texture, sensor noise) applied to the
synthetic thermal scenes of :class:`~robust_lightning.datamodules.SyntheticThermalDataModule`;
the test split is rendered in a different, unseen style (:data:`HELD_OUT_STYLE`, our "real"
target). Each pseudo-domain view keeps the scene's layout, as the layout-conditioned generator
does; its boxes are not given to the detector (the released code replaces target annotations
by a dummy box, ``maskrcnn_benchmark/data/datasets/coco.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from typing_extensions import override

from robust_lightning._validation import check_choice, check_int, check_number
from robust_lightning.datamodules._common import EpochShuffleSampler, check_positive_int
from robust_lightning.datamodules.infrared import (
    SyntheticThermalDataModule,
    collate_detection,
)
from robust_lightning.errors import InvalidArgumentError

__all__ = [
    "HELD_OUT_STYLE",
    "SyntheticThermalStylesDataModule",
    "ThermalStyle",
    "apply_thermal_style",
    "random_thermal_styles",
]


@dataclass(frozen=True)
class ThermalStyle:
    """One rendering style of a gray thermal image in [0, 1] (applied in this order).

    Attributes:
        gamma: ``x ** gamma`` (sensor response / AGC curve).
        contrast: Scale of the deviation from the image mean.
        brightness: Added offset.
        haze: Blend towards a uniform veil, ``(1 - haze) x + haze * haze_level`` (fog, rain).
        haze_level: Gray level of the veil.
        blur_sigma: Gaussian blur (pixels; 0 = none).
        texture: Amplitude of a smooth random field added (clutter, rain streak shading).
        noise_std: Gaussian sensor noise.
    """

    gamma: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0
    haze: float = 0.0
    haze_level: float = 0.5
    blur_sigma: float = 0.0
    texture: float = 0.0
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            check_number(f"ThermalStyle.{name}", value)
        if self.gamma <= 0 or self.contrast < 0:
            raise InvalidArgumentError(f"ThermalStyle: gamma must be > 0 and contrast >= 0, got {self}")
        if not 0 <= self.haze <= 1 or not 0 <= self.haze_level <= 1:
            raise InvalidArgumentError(f"ThermalStyle: haze and haze_level must be in [0, 1], got {self}")
        if self.blur_sigma < 0 or self.texture < 0 or self.noise_std < 0:
            raise InvalidArgumentError(f"ThermalStyle: blur_sigma, texture and noise_std must be >= 0, got {self}")


# Unseen by construction: its contrast (0.45) and haze (0.35) lie outside the ranges the
# pseudo-domains are drawn from (contrast >= 0.55, haze <= 0.3), like real fog that the
# generator's styles only approximate.
HELD_OUT_STYLE = ThermalStyle(gamma=1.4, contrast=0.45, brightness=0.05, haze=0.35, haze_level=0.7,
                              blur_sigma=0.8, texture=0.06, noise_std=0.04)


def random_thermal_styles(n: int, seed: int = 0) -> list[ThermalStyle]:
    """``n`` fixed pseudo-domain styles drawn with ``seed`` (our stand-in for the diffusion generator).

    Ranges: gamma in [0.5, 2], contrast [0.55, 1.2], brightness [-0.15, 0.15], haze [0, 0.3]
    towards a level in [0.2, 0.8], blur sigma [0, 1.2], texture [0, 0.12], noise [0, 0.06].
    """
    n = check_positive_int("n", n)
    generator = torch.Generator().manual_seed(int(seed))

    def uniform(low: float, high: float) -> float:
        return float(low + (high - low) * torch.rand((), generator=generator))

    return [
        ThermalStyle(gamma=math.exp(uniform(math.log(0.5), math.log(2.0))), contrast=uniform(0.55, 1.2),
                     brightness=uniform(-0.15, 0.15), haze=uniform(0.0, 0.3), haze_level=uniform(0.2, 0.8),
                     blur_sigma=uniform(0.0, 1.2), texture=uniform(0.0, 0.12), noise_std=uniform(0.0, 0.06))
        for _ in range(n)
    ]


def _gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    radius = max(1, math.ceil(2.5 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[0]
    x = image[None]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1),
                 groups=channels)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1),
                 groups=channels)
    return x[0]


def apply_thermal_style(image: Tensor, style: ThermalStyle, generator: torch.Generator | None = None) -> Tensor:
    """``image`` ``(C, H, W)`` in [0, 1] rendered in ``style`` (clamped to [0, 1]).

    The random parts (texture field, noise) come from ``generator``, so a seeded generator gives
    a fixed rendering (a fixed generated dataset, as the released code's offline generation).
    """
    if image.dim() != 3:
        raise InvalidArgumentError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    x = image.float().clamp(0.0, 1.0) ** style.gamma
    x = (x - x.mean()) * style.contrast + x.mean() + style.brightness
    x = (1.0 - style.haze) * x + style.haze * style.haze_level
    if style.blur_sigma > 0:
        x = _gaussian_blur(x, style.blur_sigma)
    height, width = x.shape[-2:]
    if style.texture > 0:
        coarse = torch.randn(1, 1, max(2, height // 8), max(2, width // 8), generator=generator)
        field = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
        x = x + style.texture * field.to(x)
    if style.noise_std > 0:
        x = x + style.noise_std * torch.randn(x.shape, generator=generator).to(x)
    return x.clamp(0.0, 1.0).to(image.dtype)


class SyntheticThermalStylesDataModule(SyntheticThermalDataModule):
    """Synthetic thermal scenes with pseudo-target domain views and a held-out test style.

    Training batches are the usual detection batches (``images``, ``boxes``, ``labels``,
    ``image_ids``: the labelled source) plus ``pseudo_images`` (each image re-rendered in one
    of ``n_pseudo_domains`` fixed random styles, chosen by image id, with a rendering seeded by
    the image id) and ``pseudo_domains`` (the style index). Validation is the source style
    (model selection never sees the target); test is rendered in ``test_style``.

    Args:
        image_size: Scene size in pixels (64 here; :class:`SyntheticThermalDataModule`'s is 96).
        batch_size: Batch size (8 here; :class:`SyntheticThermalDataModule`'s is 16).
        n_pseudo_domains: Number of pseudo-target styles (the released code uses 4 generated
            domains: daytime clear/foggy, dusk rainy, night sunny).
        style_seed: Seed of the styles and of their renderings.
        test_style: ``"held_out"`` (:data:`HELD_OUT_STYLE`, default), ``"source"`` (no
            change) or ``"pseudo"`` (the pseudo-domain styles, for diagnostics).
        **kwargs: The other :class:`~robust_lightning.datamodules.SyntheticThermalDataModule`
            arguments (keywords only), defaults included. Only the defaults that differ are
            declared here, so the two signatures cannot drift apart; the CLI reads the rest from
            the parent's signature.
    """

    def __init__(
        self,
        *,
        image_size: int = 64,
        batch_size: int = 8,
        n_pseudo_domains: int = 3,
        style_seed: int = 0,
        test_style: Literal["held_out", "source", "pseudo"] = "held_out",
        **kwargs: Any,
    ) -> None:
        super().__init__(image_size=image_size, batch_size=batch_size, **kwargs)
        self.n_pseudo_domains = check_positive_int("n_pseudo_domains", n_pseudo_domains)
        self.style_seed = check_int("style_seed", style_seed)
        self.test_style = check_choice("test_style", test_style, ("held_out", "source", "pseudo"))
        self.pseudo_styles = random_thermal_styles(self.n_pseudo_domains, style_seed)

    def _render(self, image: Tensor, image_id: int, style: ThermalStyle, salt: int) -> Tensor:
        generator = torch.Generator().manual_seed(self.style_seed * 1_000_003 + salt * 7_919 + int(image_id))
        return apply_thermal_style(image, style, generator)

    def pseudo_views(self, images: Tensor, image_ids: Sequence[int]) -> tuple[Tensor, Tensor]:
        """``(pseudo_images, pseudo_domains)`` of a batch: each image in its pseudo-domain style."""
        domains = torch.tensor([int(i) % self.n_pseudo_domains for i in image_ids], dtype=torch.int64)
        views = torch.stack([self._render(x, int(i), self.pseudo_styles[int(d)], salt=1 + int(d))
                             for x, i, d in zip(images, image_ids, domains, strict=True)])
        return views, domains

    def _collate_train(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_detection(samples)
        batch["pseudo_images"], batch["pseudo_domains"] = self.pseudo_views(batch["images"], batch["image_ids"].tolist())
        return batch

    def _collate_test(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_detection(samples)
        if self.test_style == "held_out":
            batch["images"] = torch.stack([self._render(x, int(i), HELD_OUT_STYLE, salt=0)
                                           for x, i in zip(batch["images"], batch["image_ids"].tolist(), strict=True)])
        elif self.test_style == "pseudo":
            batch["images"] = self.pseudo_views(batch["images"], batch["image_ids"].tolist())[0]
        return batch

    @override
    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        dataset = self._dataset("train")
        return DataLoader(dataset, batch_size=self.batch_size, sampler=EpochShuffleSampler(dataset),
                          collate_fn=self._collate_train, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    @override
    def test_dataloader(self) -> DataLoader[dict[str, Any]]:
        return DataLoader(self._dataset("test"), batch_size=self.eval_batch_size, collate_fn=self._collate_test,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    @override
    def predict_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self.test_dataloader()
