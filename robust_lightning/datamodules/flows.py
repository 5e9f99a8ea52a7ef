"""CICFlowMeter flows for DDoS detection: the DataModule, over one schema, a loader and a generator.

The pieces live in their own modules and are re-exported here: the schema and derived features
in :mod:`robust_lightning.flow_schema`, the CSV loader in
:mod:`robust_lightning.datamodules.flow_io`, the synthetic generator in
:mod:`robust_lightning.datamodules.flow_synthetic`.

Three public datasets ship CICFlowMeter features as CSV, under two spellings of the same ~77
features:

* **CIC-IDS2017** (``MachineLearningCVE``): long names with stray leading spaces
  (``" Flow Duration"``, ``"Total Length of Fwd Packets"``, ``" Label"``), ``" Fwd Header Length"``
  twice; the ``TrafficLabelling`` variant adds ``Flow ID``, IPs, ports, ``Protocol``, ``Timestamp``.
* **CIC-DDoS2019**: the 2017 names plus ``Unnamed: 0``, ``Flow ID``, ``Source IP``,
  ``Timestamp``, ``SimillarHTTP`` and ``Inbound``.
* **CSE-CIC-IDS2018**: short names (``Dst Port``, ``Tot Fwd Pkts``, ``TotLen Fwd Pkts``,
  ``Fwd Pkt Len Max``, ``Flow Byts/s``, ...), repeated header rows inside some files.

:func:`read_flow_csv` maps either spelling (whitespace stripped, case-insensitive) to the
canonical snake_case names of :data:`CANONICAL_FEATURES`, drops identifiers (flow id, IPs,
source port, timestamps, the 2019 extras), and refuses a header it does not know with an error
that lists the unknown columns. Only the ``csv`` module and numpy are used (no pandas).

**Non-finite and negative values (our policy).** CICFlowMeter writes ``Infinity``/``NaN`` in
``Flow Bytes/s`` and ``Flow Packets/s`` when a flow lasts 0 µs (a rate divided by a zero
duration). With ``nonfinite="recompute"`` (default) every *derived* feature (rates, means,
ratios, see :func:`derive_features`) is recomputed from the flow's totals with the duration
floored at :data:`MIN_DURATION_US`, which removes those values; a row that still holds a
non-finite value (in a measured column) is dropped. ``nonfinite="drop"`` drops every row with a
non-finite value first (the common practice), then recomputes. Rows with a negative value are
dropped (negative durations, IATs and header lengths are known CICFlowMeter glitches in
CIC-IDS2017/2018), except in the initial-window columns where ``-1`` means "no TCP window" and
is kept. Derived features are always recomputed, so the clean data, the detector and the
constrained attack (:mod:`robust_lightning.attacks.constrained`) share one definition of every
derived feature; dropped rows are counted in :attr:`FlowTable.stats`.

Features stay in their raw units (packets, bytes, µs, per second): unlike the image
DataModules they are not in ``[0, 1]``. Normalisation (signed ``log1p`` then standardisation) is
a layer of the detector, so the constrained attack works, and its constraints hold, in raw
feature space.

:func:`generate_flow_csvs` simulates flows packet by packet (benign web, DNS, bulk transfer and
interactive sessions; SYN, UDP and HTTP floods, DNS/NTP-style reflection, slowloris), computes
their CICFlowMeter features from the packets and writes them in one of the three families' CSV
layouts (headers, identifier columns, ``Infinity``/``NaN`` cells, repeated headers, a few glitch
rows), so every test exercises the real loader. Each family is a :class:`FlowProfile` with its
own network (RTT, MSS, TCP stacks) and tool parameters: training on one family and testing on
another is a cross-dataset test with a distribution shift.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

from robust_lightning.datamodules._common import (
    EpochShuffleSampler,
    check_fraction,
    check_non_negative_int,
    check_optional_positive_int,
    check_positive_int,
    stratified_permutation,
)
from robust_lightning.datamodules.flow_io import (
    FlowTable,
    _check_nonfinite,
    read_flow_csv,
    read_flow_csvs,
)
from robust_lightning.datamodules.flow_synthetic import (
    FLOW_PROFILES,
    FlowProfile,
    generate_flow_csvs,
)
from robust_lightning.flow_schema import (
    BASE_FEATURES,
    CANONICAL_FEATURES,
    DEFAULT_FEATURES,
    DERIVED_FEATURES,
    MIN_DURATION_US,
    check_features,
    derive_features,
    is_benign_label,
)

# Re-exported so `from robust_lightning.datamodules.flows import ...` keeps working.
__all__ = [
    "BASE_FEATURES",
    "CANONICAL_FEATURES",
    "DEFAULT_FEATURES",
    "DERIVED_FEATURES",
    "FLOW_PROFILES",
    "MIN_DURATION_US",
    "FlowDataModule",
    "FlowProfile",
    "FlowTable",
    "check_features",
    "derive_features",
    "generate_flow_csvs",
    "is_benign_label",
    "read_flow_csv",
    "read_flow_csvs",
]


# -- DataModule -----------------------------------------------------------------------------------
class FlowDataModule(LightningDataModule):
    """Labelled CICFlowMeter flows for binary DDoS detection (``0`` benign, ``1`` attack).

    Reads every CSV matching ``pattern`` in ``data_dir`` (any mix of the three families), keeps
    benign flows and the attack labels asked for, and splits them into train/val/test
    (stratified on the binary label, seeded). Batches are ``[features (B, F) float32 in raw
    units, target (B,) int64]``. With ``synthetic`` set, ``data_dir`` is first filled by
    :func:`generate_flow_csvs` (once per parameter set) and read back through the same loader.

    Args:
        data_dir: folder of CSV files (for real data, e.g. CIC-IDS2017's ``MachineLearningCVE``).
        pattern: glob pattern of the files inside ``data_dir``.
        features: canonical features in model-input order (``None``: :data:`DEFAULT_FEATURES`).
        synthetic: generate a synthetic family first (a name in :data:`FLOW_PROFILES`).
        synthetic_flows: flows generated.
        synthetic_files: files generated.
        synthetic_seed: seed of the generator.
        attack_labels: attack labels kept (case and whitespace ignored); ``None`` keeps every
            attack. Benign flows are always kept.
        max_rows_per_file: read at most this many rows of each file.
        nonfinite: ``"recompute"`` or ``"drop"`` (see the module docstring).
        val_fraction: share of flows in the validation split.
        test_fraction: share of flows in the test split.
        seed: seed of the split and of the shuffle.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (``None``: ``batch_size``).
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        data_dir: str,
        pattern: str = "*.csv",
        features: Sequence[str] | None = None,
        synthetic: str | None = None,
        synthetic_flows: int = 6000,
        synthetic_files: int = 2,
        synthetic_seed: int = 0,
        attack_labels: Sequence[str] | None = None,
        max_rows_per_file: int | None = None,
        nonfinite: Literal["recompute", "drop"] = "recompute",
        val_fraction: float = 0.15,
        test_fraction: float = 0.25,
        seed: int = 0,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(data_dir, (str, os.PathLike)) or not os.fspath(data_dir):
            raise ValueError(f"data_dir must be a folder path, got {data_dir!r}")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"pattern must be a glob pattern such as '*.csv', got {pattern!r}")
        if synthetic is not None and synthetic not in FLOW_PROFILES:
            raise ValueError(f"synthetic must be None or one of {sorted(FLOW_PROFILES)}, got {synthetic!r}")
        if attack_labels is not None and (isinstance(attack_labels, str) or not all(isinstance(a, str) for a in attack_labels)):
            raise ValueError(f"attack_labels must be None or a list of label strings, got {attack_labels!r}")
        self.data_dir = os.fspath(data_dir)
        self.pattern = pattern
        self.features = check_features(features)
        self.synthetic = synthetic
        self.synthetic_flows = check_positive_int("synthetic_flows", synthetic_flows)
        self.synthetic_files = check_positive_int("synthetic_files", synthetic_files)
        self.synthetic_seed = int(synthetic_seed)
        self.attack_labels = None if attack_labels is None else {a.strip().lower() for a in attack_labels}
        self.max_rows_per_file = check_optional_positive_int("max_rows_per_file", max_rows_per_file)
        self.nonfinite = _check_nonfinite(nonfinite)
        self.val_fraction = check_fraction("val_fraction", val_fraction)
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be < 1, got {self.val_fraction} + {self.test_fraction}")
        self.seed = int(seed)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.eval_batch_size = self.batch_size if eval_batch_size is None else check_positive_int("eval_batch_size", eval_batch_size)
        self.num_workers = check_non_negative_int("num_workers", num_workers)
        self.table: FlowTable | None = None
        self.splits: dict[str, tuple[Tensor, Tensor, np.ndarray]] = {}

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def num_features(self) -> int:
        return len(self.features)

    def files(self) -> list[str]:
        """The CSV files read, sorted."""
        return sorted(glob.glob(os.path.join(self.data_dir, self.pattern)))

    @override
    def prepare_data(self) -> None:
        """Generates the synthetic family when ``synthetic`` is set."""
        if self.synthetic is not None:
            generate_flow_csvs(self.data_dir, self.synthetic, self.synthetic_flows, self.synthetic_files,
                               self.synthetic_seed)

    @override
    def setup(self, stage: str | None = None) -> None:
        """Reads the files once and builds the three splits."""
        if self.splits:
            return
        self.prepare_data()  # idempotent; DDP ranks and DomainGeneralizationDataModule targets need it too
        files = self.files()
        if not files:
            raise ValueError(f"data_dir {self.data_dir!r} holds no files matching {self.pattern!r}")
        table = read_flow_csvs(files, self.features, self.max_rows_per_file, self.nonfinite)
        attack = table.is_attack
        if self.attack_labels is not None:
            keep = ~attack | np.array([label.strip().lower() in self.attack_labels for label in table.labels])
            table = table.select(keep)
            attack = attack[keep]
        if len(table) == 0 or attack.all() or not attack.any():
            raise ValueError(f"{self.data_dir}: need benign and attack flows, got {int((~attack).sum())} benign and "
                             f"{int(attack.sum())} attack flows")
        self.table = table
        x = torch.from_numpy(table.matrix(self.features).astype(np.float32))
        y = torch.from_numpy(attack.astype(np.int64))
        order = stratified_permutation(attack.astype(np.int64), self.seed)
        n_val = round(self.val_fraction * len(order))
        n_test = round(self.test_fraction * len(order))
        parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
        self.splits = {split: (x[idx], y[idx], table.labels[idx]) for split, idx in parts.items()}

    def train_features(self) -> Tensor:
        """``(N, F)`` raw training features (what the detector's normaliser is fitted on)."""
        return self._split("train")[0]

    def _split(self, split: str) -> tuple[Tensor, Tensor, np.ndarray]:
        if split not in self.splits:
            raise RuntimeError(f"{type(self).__name__} has no {split} split yet: call setup() first")
        return self.splits[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        x, y, _ = self._split(split)
        dataset = TensorDataset(x, y)
        return DataLoader(dataset, batch_size=self.batch_size if shuffle else self.eval_batch_size,
                          sampler=EpochShuffleSampler(dataset, self.seed) if shuffle else None,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    @override
    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    @override
    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    @override
    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
