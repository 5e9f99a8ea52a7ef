"""DDoS configs: small synthetic flow families, and CIC-IDS2017-layout CSVs for the real-data config."""

from __future__ import annotations

from pathlib import Path

from robust_lightning.datamodules.flows import generate_flow_csvs


def _small_flows(tmp_path: Path) -> list[str]:
    # synthetic_flows only matters for the synthetic configs; the real-data config reads the
    # files EXTRA_SETUP writes.
    return ["--data.init_args.synthetic_flows=400", "--data.init_args.batch_size=64"]


def _cicids2017_layout(workdir: Path) -> None:
    """What data/CIC-IDS2017/MachineLearningCVE holds, in miniature: 2017-layout CSVs."""
    generate_flow_csvs(workdir / "data" / "CIC-IDS2017" / "MachineLearningCVE", "cicids2017", num_flows=400,
                       num_files=2, seed=0)


OVERRIDES = {"FlowDataModule": _small_flows}
EXTRA_SETUP = {"ddos/cicids2017_mlp_constrained_at.yaml": _cicids2017_layout}
