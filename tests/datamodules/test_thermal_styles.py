"""Style-shifted thermal scenes: fixed pseudo-domain renderings and a held-out test style."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robust_lightning.datamodules.thermal_styles import (
    HELD_OUT_STYLE,
    SyntheticThermalStylesDataModule,
    ThermalStyle,
    apply_thermal_style,
    random_thermal_styles,
)
from robust_lightning.errors import InvalidArgumentError, InvalidArgumentTypeError


def test_styles_change_the_look_but_identity_keeps_the_image() -> None:
    image = torch.rand(1, 32, 32)
    assert torch.allclose(apply_thermal_style(image, ThermalStyle()), image)
    hazy = apply_thermal_style(image, ThermalStyle(haze=0.5, haze_level=0.7))
    assert torch.allclose(hazy, 0.5 * image + 0.35)
    low = apply_thermal_style(image, ThermalStyle(contrast=0.35))
    assert float(low.std()) == pytest.approx(0.35 * float(image.std()), rel=1e-3)
    first = apply_thermal_style(image, HELD_OUT_STYLE, torch.Generator().manual_seed(3))
    again = apply_thermal_style(image, HELD_OUT_STYLE, torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and float((first - image).abs().mean()) > 0.05
    assert 0.0 <= float(first.min()) and float(first.max()) <= 1.0


def test_random_styles_are_seeded_and_exclude_the_held_out_style() -> None:
    styles = random_thermal_styles(20, seed=1)
    assert styles == random_thermal_styles(20, seed=1) and styles != random_thermal_styles(20, seed=2)
    assert all(s.contrast >= 0.55 and s.haze <= 0.3 for s in styles)
    assert HELD_OUT_STYLE.contrast < 0.55 and HELD_OUT_STYLE.haze > 0.3


def test_bad_styles_are_rejected() -> None:
    with pytest.raises(InvalidArgumentError):
        ThermalStyle(gamma=0.0)
    with pytest.raises(InvalidArgumentError):
        ThermalStyle(haze=1.5)
    with pytest.raises(InvalidArgumentTypeError):
        ThermalStyle(noise_std="a")  # type: ignore[arg-type]


def test_datamodule_gives_pseudo_views_and_a_held_out_test_style(tmp_path: Path) -> None:
    dm = SyntheticThermalStylesDataModule(data_dir=str(tmp_path / "scenes"), n_train=8, n_val=4, n_test=4,
                                          image_size=48, batch_size=4, n_pseudo_domains=2, hflip=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pseudo_images"].shape == batch["images"].shape
    assert batch["pseudo_domains"].tolist() == [int(i) % 2 for i in batch["image_ids"].tolist()]
    assert not torch.allclose(batch["pseudo_images"], batch["images"])
    again = next(iter(dm.train_dataloader()))
    same = {int(i): x for i, x in zip(again["image_ids"].tolist(), again["pseudo_images"], strict=True)}
    for i, x in zip(batch["image_ids"].tolist(), batch["pseudo_images"], strict=True):
        if i in same:
            assert torch.equal(same[i], x), "a pseudo-domain view is a fixed rendering of its scene"
    val = next(iter(dm.val_dataloader()))
    assert "pseudo_images" not in val
    dm.setup("test")
    held_out = next(iter(dm.test_dataloader()))
    source = SyntheticThermalStylesDataModule(data_dir=str(tmp_path / "scenes"), n_train=8, n_val=4, n_test=4,
                                              image_size=48, batch_size=4, n_pseudo_domains=2, hflip=False,
                                              test_style="source")
    source.setup("test")
    plain = next(iter(source.test_dataloader()))
    assert [b.tolist() for b in held_out["boxes"]] == [b.tolist() for b in plain["boxes"]]
    assert float(held_out["images"].std()) < float(plain["images"].std())
    with pytest.raises(InvalidArgumentError):
        SyntheticThermalStylesDataModule(data_dir=str(tmp_path / "x"), test_style="fog")  # type: ignore[arg-type]
