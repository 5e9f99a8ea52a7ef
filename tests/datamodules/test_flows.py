"""CICFlowMeter CSV loading, schema mapping, non-finite policy, synthetic flows, FlowDataModule."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from robust_lightning.datamodules.flows import (
    BASE_FEATURES,
    CANONICAL_FEATURES,
    DEFAULT_FEATURES,
    DERIVED_FEATURES,
    FLOW_PROFILES,
    FlowDataModule,
    derive_features,
    generate_flow_csvs,
    read_flow_csv,
    read_flow_csvs,
)

SMALL = 300


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flows")
    return {name: generate_flow_csvs(root / name, name, num_flows=SMALL, num_files=2, seed=3) for name in FLOW_PROFILES}


def _files(root: Path) -> list[Path]:
    return sorted(root.glob("*.csv"))


def _header(path: Path) -> list[str]:
    with open(path, newline="") as handle:
        return next(csv.reader(handle))


def test_generated_headers_are_the_three_families(family_dirs: dict[str, Path]) -> None:
    h2017 = _header(_files(family_dirs["cicids2017"])[0])
    assert h2017[0] == " Destination Port" and h2017[-1] == " Label"
    assert " Total Backward Packets" in h2017 and "Total Length of Fwd Packets" in h2017
    assert h2017.count(" Fwd Header Length") == 2  # CIC-IDS2017 writes it twice
    h2018 = _header(_files(family_dirs["csecicids2018"])[0])
    assert h2018[:4] == ["Dst Port", "Protocol", "Timestamp", "Flow Duration"] and h2018[-1] == "Label"
    assert "Tot Fwd Pkts" in h2018 and "Fwd Pkt Len Max" in h2018
    h2019 = _header(_files(family_dirs["cicddos2019"])[0])
    assert h2019[0] == "Unnamed: 0" and " Source IP" in h2019 and " SimillarHTTP" in h2019 and " Inbound" in h2019


def test_loader_detects_family_and_reports_cleaning(family_dirs: dict[str, Path]) -> None:
    for name, root in family_dirs.items():
        table = read_flow_csvs(_files(root))
        assert table.families == [name, name]
        assert set(table.columns) >= set(DEFAULT_FEATURES)
        matrix = table.matrix(DEFAULT_FEATURES)
        assert np.isfinite(matrix).all()
        assert table.stats["rows"] == SMALL
        assert len(table) == SMALL - table.stats["dropped_negative"] - table.stats["dropped_nonfinite"]
        assert table.is_attack.any() and (~table.is_attack).any()
    # CSE-CIC-IDS2018 files repeat their header: skipped, not read as a flow.
    assert read_flow_csvs(_files(family_dirs["csecicids2018"])).stats["repeated_headers"] == 2


def test_identifiers_are_dropped(family_dirs: dict[str, Path]) -> None:
    table = read_flow_csv(_files(family_dirs["cicddos2019"])[0], features=CANONICAL_FEATURES)
    assert set(table.columns) == set(CANONICAL_FEATURES)  # no flow id, IPs, timestamp, SimillarHTTP, Inbound


def test_three_layouts_of_the_same_flows_load_identically(tmp_path: Path) -> None:
    base = FLOW_PROFILES["cicids2017"]
    tables = {}
    for header in ("cicids2017", "csecicids2018", "cicddos2019"):
        profile = dataclasses.replace(base, header=header, glitch_rate=0.0)  # glitches draw per layout
        root = generate_flow_csvs(tmp_path / header, profile, num_flows=120, num_files=1, seed=7)
        tables[header] = read_flow_csvs(_files(root), features=CANONICAL_FEATURES[2:])
    reference = tables["cicids2017"]
    for header, table in tables.items():
        assert list(table.labels) == list(reference.labels), header
        for name in CANONICAL_FEATURES[2:]:
            np.testing.assert_allclose(table.columns[name], reference.columns[name], rtol=1e-9, err_msg=f"{header}: {name}")


def test_infinity_and_nan_cells_follow_the_policy(family_dirs: dict[str, Path]) -> None:
    files = _files(family_dirs["cicids2017"])
    text = "".join(f.read_text() for f in files)
    assert "Infinity" in text and "NaN" in text  # zero-duration flows, as CICFlowMeter writes them
    recomputed = read_flow_csvs(files, nonfinite="recompute")
    dropped = read_flow_csvs(files, nonfinite="drop")
    assert dropped.stats["dropped_nonfinite"] > 0
    assert len(dropped) == len(recomputed) - dropped.stats["dropped_nonfinite"]
    zero = recomputed.columns["flow_duration"] == 0
    assert zero.any()
    # Rates of zero-duration flows are recomputed with the duration floored at 1 µs.
    np.testing.assert_allclose(recomputed.columns["flow_pkts_s"][zero],
                               (recomputed.columns["tot_fwd_pkts"] + recomputed.columns["tot_bwd_pkts"])[zero] * 1e6)


def test_negative_values_are_dropped_except_window_sentinels(family_dirs: dict[str, Path]) -> None:
    files = _files(family_dirs["cicids2017"])
    table = read_flow_csvs(files)
    negative_rows = 0
    for path in files:  # the generator writes a few glitch rows (negative IATs)
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
        negative_rows += sum(any(cell.startswith("-") and cell != "-1" for cell in row) for row in rows[1:])
    assert table.stats["dropped_negative"] == negative_rows
    matrix = table.matrix([f for f in DEFAULT_FEATURES if not f.startswith("init_")])
    assert (matrix >= 0).all()
    assert (table.columns["init_fwd_win_byts"] == -1).any()  # UDP flows keep CICFlowMeter's -1


def test_derived_features_are_consistent_after_loading(family_dirs: dict[str, Path]) -> None:
    table = read_flow_csvs(_files(family_dirs["csecicids2018"]))
    columns = {name: torch.from_numpy(values.copy()) for name, values in table.columns.items()}
    derive_features(columns)
    for name in DERIVED_FEATURES:
        np.testing.assert_allclose(columns[name].numpy(), table.columns[name], rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(table.columns["fwd_pkt_len_mean"] * table.columns["tot_fwd_pkts"],
                               table.columns["totlen_fwd_pkts"], rtol=1e-9)


def test_derive_features_definitions() -> None:
    columns = {name: torch.tensor([0.0, 2_000_000.0], dtype=torch.float64) for name in BASE_FEATURES}
    columns.update(tot_fwd_pkts=torch.tensor([1.0, 4.0], dtype=torch.float64),
                   tot_bwd_pkts=torch.tensor([0.0, 3.0], dtype=torch.float64),
                   totlen_fwd_pkts=torch.tensor([0.0, 400.0], dtype=torch.float64),
                   totlen_bwd_pkts=torch.tensor([0.0, 3000.0], dtype=torch.float64))
    for name in ("flow_byts_s", "flow_pkts_s", "fwd_pkt_len_mean", "flow_iat_mean", "down_up_ratio", "pkt_len_mean",
                 "fwd_pkt_len_min", "fwd_pkt_len_max"):
        columns[name] = torch.tensor([123.0, 123.0], dtype=torch.float64)
    derive_features(columns)
    np.testing.assert_allclose(columns["flow_byts_s"], [0.0, 1700.0])  # 3400 bytes in 2 s
    np.testing.assert_allclose(columns["flow_pkts_s"], [1e6, 3.5])  # 0-duration floored at 1 µs
    assert columns["fwd_pkt_len_mean"].tolist() == [0.0, 100.0]
    np.testing.assert_allclose(columns["flow_iat_mean"], [0.0, 2_000_000.0 / 6])
    assert columns["down_up_ratio"].tolist() == [0.0, 0.0]  # integer division: 3 // 4
    np.testing.assert_allclose(columns["pkt_len_mean"], [0.0, 3400.0 / 7])
    # min <= mean <= max repairs
    assert columns["fwd_pkt_len_min"].tolist() == [0.0, 100.0]
    assert columns["fwd_pkt_len_max"].tolist() == [123.0, 123.0]
    with pytest.raises(KeyError, match="base totals"):
        derive_features({"flow_duration": torch.zeros(1)})


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


_SHORT = ["Flow Duration", "Tot Fwd Pkts", "Tot Bwd Pkts", "TotLen Fwd Pkts", "TotLen Bwd Pkts", "Flow Byts/s"]
_ROW = ["10", "2", "1", "100", "50", "Infinity"]


def test_minimal_short_header_and_whitespace(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.csv", ["  Dst Port "] + _SHORT + [" Label "],
                  [["80"] + _ROW + [" Benign "], ["53"] + _ROW + ["DDoS attacks-LOIC-HTTP"],
                   ["53", "-5"] + _ROW[1:] + ["Benign"], ["53"] + _ROW + [""], ["53", "1"]])
    table = read_flow_csv(path, features=[*BASE_FEATURES, "flow_byts_s", "dst_port"])
    assert table.families == ["csecicids2018"]
    assert table.stats["dropped_negative"] == 1  # the negative duration
    assert table.stats["dropped_malformed"] == 2  # no label; too few cells
    assert list(table.labels) == ["Benign", "DDoS attacks-LOIC-HTTP"]
    assert table.is_attack.tolist() == [False, True]
    np.testing.assert_allclose(table.columns["flow_byts_s"], [15e6, 15e6])  # 150 bytes in 10 µs


def test_pandas_duplicate_column_is_ignored(tmp_path: Path) -> None:
    header = ["Flow Duration", "Total Fwd Packets", "Total Backward Packets", "Total Length of Fwd Packets",
              "Total Length of Bwd Packets", "Fwd Header Length", "Fwd Header Length.1", "Label"]
    path = _write(tmp_path / "b.csv", header, [["10", "2", "1", "100", "50", "40", "40", "BENIGN"]])
    table = read_flow_csv(path, features=[*BASE_FEATURES, "fwd_header_len"])
    assert table.families == ["cicids2017"] and table.columns["fwd_header_len"].tolist() == [40.0]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (["Flow Duration", "Tot Fwd Pkts", "Mystery Column", "Label"], r"unknown flow CSV schema.*Mystery Column"),
        (_SHORT, "no 'Label' column"),
        (["Flow Duration", "Total Fwd Packets", "Tot Bwd Pkts", "Label"], "mixes"),
        (["Flow Duration", "Tot Fwd Pkts", "Label"], r"no column for.*tot_bwd_pkts \('Total Backward Packets' / 'Tot Bwd Pkts'\)"),
    ],
)
def test_bad_schemas_raise_clear_errors(tmp_path: Path, header: list[str], message: str) -> None:
    path = _write(tmp_path / "bad.csv", header, [["1"] * len(header)])
    with pytest.raises(ValueError, match=message):
        read_flow_csv(path, features=BASE_FEATURES)


def test_bad_reader_arguments(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.csv", _SHORT + ["Label"], [_ROW + ["Benign"]])
    with pytest.raises(ValueError, match="nonfinite"):
        read_flow_csv(path, features=BASE_FEATURES, nonfinite="zero")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown feature names"):
        read_flow_csv(path, features=["flow_duration", "bogus"])
    with pytest.raises(ValueError, match="max_rows"):
        read_flow_csv(path, features=BASE_FEATURES, max_rows=0)
    assert len(read_flow_csv(path, features=BASE_FEATURES, max_rows=1)) == 1


def test_flow_profile_validation() -> None:
    base = FLOW_PROFILES["cicids2017"]
    with pytest.raises(ValueError, match="header"):
        dataclasses.replace(base, header="unsw")
    with pytest.raises(ValueError, match="unknown flow kinds"):
        dataclasses.replace(base, kinds={"benign_web": 1.0, "teleport": 1.0})
    with pytest.raises(ValueError, match="at least one benign and one attack"):
        dataclasses.replace(base, kinds={"benign_web": 1.0})
    with pytest.raises(ValueError, match="profile must be one of"):
        generate_flow_csvs("unused", "unsw-nb15")


def test_generation_is_deterministic_and_cached(tmp_path: Path) -> None:
    a = generate_flow_csvs(tmp_path / "a", "cicids2017", num_flows=50, num_files=1, seed=5)
    b = generate_flow_csvs(tmp_path / "b", "cicids2017", num_flows=50, num_files=1, seed=5)
    assert _files(a)[0].read_text() == _files(b)[0].read_text()
    mtime = _files(a)[0].stat().st_mtime_ns
    generate_flow_csvs(tmp_path / "a", "cicids2017", num_flows=50, num_files=1, seed=5)
    assert _files(a)[0].stat().st_mtime_ns == mtime  # same parameters: not regenerated


def test_datamodule_splits_and_batches(tmp_path: Path) -> None:
    dm = FlowDataModule(str(tmp_path / "d"), synthetic="cicids2017", synthetic_flows=SMALL, val_fraction=0.2,
                        test_fraction=0.3, batch_size=32, eval_batch_size=64, seed=1)
    dm.setup("fit")
    sizes = {split: len(dm.splits[split][1]) for split in ("train", "val", "test")}
    total = sum(sizes.values())
    assert sizes["val"] == round(0.2 * total) and sizes["test"] == round(0.3 * total)
    rate = float(dm.splits["train"][1].float().mean())
    for split in ("val", "test"):
        assert abs(float(dm.splits[split][1].float().mean()) - rate) < 0.05  # stratified
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, len(DEFAULT_FEATURES)) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.isfinite(x).all()
    assert dm.train_features().shape == (sizes["train"], dm.num_features)
    assert dm.num_classes == 2


def test_datamodule_attack_label_filter(tmp_path: Path) -> None:
    dm = FlowDataModule(str(tmp_path / "d"), synthetic="cicids2017", synthetic_flows=SMALL,
                        attack_labels=["dos slowloris"])
    dm.setup("fit")
    labels = {label for split in dm.splits.values() for label in split[2]}
    assert labels == {"BENIGN", "DoS slowloris"}


def test_datamodule_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synthetic"):
        FlowDataModule(str(tmp_path), synthetic="kdd99")
    with pytest.raises(ValueError, match="val_fraction"):
        FlowDataModule(str(tmp_path), val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="attack_labels"):
        FlowDataModule(str(tmp_path), attack_labels="DDoS")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no files matching"):
        FlowDataModule(str(tmp_path / "empty")).setup("fit")
    with pytest.raises(RuntimeError, match="setup"):
        FlowDataModule(str(tmp_path)).train_dataloader()
    # A benign-only folder cannot train a detector.
    (tmp_path / "benign").mkdir()
    _write(tmp_path / "benign" / "x.csv", _SHORT + ["Label"], [_ROW + ["Benign"]] * 3)
    with pytest.raises(ValueError, match="need benign and attack flows"):
        FlowDataModule(str(tmp_path / "benign"), features=[*BASE_FEATURES, "flow_byts_s"]).setup("fit")
