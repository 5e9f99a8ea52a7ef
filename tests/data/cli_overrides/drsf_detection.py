"""DRSF detection configs: tiny style-shifted thermal scenes; they need the mmdet stack."""

from __future__ import annotations

from pathlib import Path


def _styled_scenes(tmp_path: Path) -> list[str]:
    return [f"--data.init_args.data_dir={tmp_path / 'scenes'}", "--data.init_args.n_train=8",
            "--data.init_args.n_val=4", "--data.init_args.n_test=4", "--data.init_args.batch_size=4"]


OVERRIDES = {"SyntheticThermalStylesDataModule": _styled_scenes}


def _needs_mmdet(workdir: Path) -> None:
    import pytest

    pytest.importorskip("mmdet", reason="DRSF detection configs need the mmdet stack (make install builds it)")


EXTRA_SETUP = {f"drsf/{name}": _needs_mmdet
               for name in ("drsf_detection/synthetic_thermal_drsf.yaml", "drsf_detection/synthetic_thermal_plain.yaml")}
