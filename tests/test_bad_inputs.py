"""Bad inputs give a clear error: the right exception type, and a message naming the argument or
file (and record/field) — never a bare KeyError, a struct.error or a silently wrong result.

One case per row; each row would fail if the check it covers were removed (the input is bad in
exactly one way). CLI cases run the real console entry point in a subprocess.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from robust_lightning import (
    APGD,
    FGSM,
    PGD,
    AdversarialTraining,
    CIFAR10DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    LaplacianSharpening,
    RobustnessEvaluation,
    load_checkpoint,
    ops,
)
from robust_lightning.attacks.core import fgsm, parse_budget, pgd
from robust_lightning.attacks.transfer import load_surrogate
from robust_lightning.datamodules.audio_io import read_audio, write_wav
from robust_lightning.datamodules.audio_quality import AudioQualityCSVDataModule
from robust_lightning.datamodules.cifar10 import load_cifar_batch
from robust_lightning.datamodules.flow_io import read_flow_csv
from robust_lightning.datamodules.infrared import CocoDetectionDataset
from robust_lightning.datamodules.text import TextBackdoorDataModule, read_agnews, read_olid, read_sst2
from robust_lightning.errors import (
    CheckpointError,
    DataFileError,
    InvalidArgumentError,
    MissingFileError,
    PrerequisiteError,
    UserError,
)
from robust_lightning.lightning_modules.sia.synthesize import load_dataset
from tests.data.cifar10 import write_fake_cifar10

REPO = Path(__file__).resolve().parents[1]

#: What the CLI exits with for a UserError or an argument error: one line, exit 2, no traceback.
CLI_EXIT_CODE_FOR_USER_ERRORS = 2


# ---------------------------------------------------------------------------------- in-process cases
def _x(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 1, 4, 4, generator=torch.Generator().manual_seed(0))


def _loss(x: torch.Tensor) -> torch.Tensor:
    return (x ** 2).flatten(1).sum(1)


def _nan_loss(x: torch.Tensor) -> torch.Tensor:
    return _loss(x) * float("nan")


def _nan_input() -> torch.Tensor:
    x = _x()
    x[0, 0, 0, 0] = float("nan")
    return x


def _step(**overrides: Any) -> Callable[[], Any]:
    args = dict(x_adv=_x(), grad=_x(), x_clean=_x(), eps=torch.full((2,), 0.1), alpha=0.01, lo=0.0, hi=1.0)
    args.update(overrides)
    return lambda: ops.linf_step_(**args)


# (case id, callable, exception type, regex the message must match)
CASES: list[tuple[str, Callable[[], Any], type[BaseException], str]] = [
    # attacks: budgets
    ("eps negative fraction", lambda: PGD(eps="-8/255"), InvalidArgumentError, r"eps must be >= 0"),
    ("eps negative number", lambda: FGSM(eps=-0.1), InvalidArgumentError, r"eps must be >= 0"),
    ("eps not a number", lambda: PGD(eps="eight"), InvalidArgumentError, r"eps must be a number"),
    ("eps divides by zero", lambda: PGD(eps="8/0"), InvalidArgumentError, r"eps='8/0' divides by zero"),
    ("eps infinite", lambda: PGD(eps=float("inf")), InvalidArgumentError, r"eps must be finite"),
    ("eps bool", lambda: parse_budget(True, "eps"), InvalidArgumentError, r"eps must be a number"),
    ("alpha negative", lambda: PGD(alpha="-2/255"), InvalidArgumentError, r"alpha must be >= 0"),
    ("steps negative", lambda: PGD(steps=-1), ValueError, r"steps"),
    ("steps not int", lambda: PGD(steps="ten"), (ValueError, TypeError), r"steps"),
    ("apgd loss unknown", lambda: APGD(loss="cw"), ValueError, r"loss"),
    # attacks: norms, bounds
    ("norm unknown", lambda: PGD(norm="l3"), ValueError, r"norm must be one of"),
    ("bounds reversed", lambda: PGD(bounds=(1.0, 0.0)), ValueError, r"bounds must satisfy lo < hi"),
    ("bounds not a pair", lambda: PGD(bounds=(0.0,)), ValueError, r"bounds must be a pair"),
    # attacks: shapes, dtypes, NaN/Inf inputs and losses
    ("input not a tensor", lambda: pgd(_loss, [[0.5]], eps=0.1), TypeError, r"x must be a torch.Tensor"),
    ("input integer dtype", lambda: pgd(_loss, torch.zeros(2, 3, dtype=torch.long), eps=0.1), TypeError, r"x"),
    ("input empty batch", lambda: pgd(_loss, torch.zeros(0, 3), eps=0.1), ValueError, r"x must be a non-empty"),
    ("input NaN", lambda: pgd(_loss, _nan_input(), eps=0.1), ValueError, r"x contains NaN or inf"),
    ("input outside bounds", lambda: pgd(_loss, _x() + 2.0, eps=0.1), ValueError, r"bounds"),
    ("per-sample eps wrong shape", lambda: pgd(_loss, _x(), eps=torch.ones(3)), ValueError, r"eps must be .* \(2,\)"),
    ("loss NaN", lambda: pgd(_nan_loss, _x(), eps=0.1, steps=2), FloatingPointError, r"loss_fn returned NaN"),
    ("loss not per-sample", lambda: fgsm(lambda x: _loss(x).sum(), _x(), eps=0.1), ValueError,
     r"loss_fn must return a per-sample loss of shape \(2,\)"),
    ("loss without gradient", lambda: fgsm(lambda x: torch.ones(x.shape[0]), _x(), eps=0.1), ValueError,
     r"does not depend on its input"),
    # ops
    ("op grad shape", _step(grad=torch.zeros(3, 1, 4, 4)), ValueError, r"linf_step_: grad"),
    ("op eps integer", _step(eps=torch.ones(2, dtype=torch.long)), TypeError, r"eps must be a floating-point"),
    ("op x_adv not tensor", _step(x_adv=[1.0]), TypeError, r"x_adv must be a Tensor"),
    ("sharpen 3-d input", lambda: ops.laplacian_sharpen(torch.zeros(1, 4, 4), 0.5), ValueError,
     r"laplacian_sharpen: x must be a \(B, C, H, W\)"),
    ("sharpen int dtype", lambda: ops.laplacian_sharpen(torch.zeros(1, 1, 4, 4, dtype=torch.int32), 0.5), TypeError,
     r"laplacian_sharpen: x must be float"),
    # callbacks
    ("adversarial training attack string", lambda: AdversarialTraining("pgd"), TypeError, r"attack must be an Attack"),
    ("adversarial training ratio", lambda: AdversarialTraining(PGD(), ratio=1.5), ValueError, r"ratio must be in"),
    ("adversarial training model_mode", lambda: AdversarialTraining(PGD(), model_mode="test"), ValueError,
     r"model_mode"),
    ("evaluation eps sweep negative", lambda: RobustnessEvaluation([PGD()], eps=["-1/255"]), InvalidArgumentError,
     r"eps must be >= 0"),
    ("sharpening stage", lambda: LaplacianSharpening(stages=["nope"]), ValueError, r"stages must be among"),
    # datamodule arguments
    ("digits batch size", lambda: DigitsDataModule(batch_size=0), ValueError, r"batch_size"),
    ("cifar data_dir empty", lambda: CIFAR10DataModule(data_dir=""), ValueError, r"data_dir"),
    ("text dataset unknown", lambda: TextBackdoorDataModule(dataset="imdb"), ValueError, r"dataset must be one of"),
    ("text data_dir missing", lambda: TextBackdoorDataModule(dataset="sst2"), ValueError, r"data_dir is required"),
]


@pytest.mark.parametrize(("factory", "error", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_argument_errors_are_clear(factory: Callable[[], Any], error: type[BaseException], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()


# ------------------------------------------------------------------------------------------ data files
def _tsv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header), *("\t".join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _sst2(root: Path, train_rows: list[list[str]], header: list[str] | None = None) -> Path:
    header = header or ["sentence", "label"]
    _tsv(root / "train.tsv", header, train_rows)
    _tsv(root / "dev.tsv", ["sentence", "label"], [["fine", "1"]])
    return root


def _agnews(root: Path, rows: list[list[str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("train.csv", "test.csv"):
        with (root / name).open("w", newline="") as handle:
            csv.writer(handle).writerows(rows if name == "train.csv" else [["1", "t", "d"]])
    return root


def test_sst2_non_integer_label_names_file_line_and_field(tmp_path: Path) -> None:
    root = _sst2(tmp_path, [["good movie", "1"], ["bad movie", "positive"]])
    with pytest.raises(DataFileError, match=r"train\.tsv, line 3: field 'label' must be an integer, got 'positive'"):
        read_sst2(root)


def test_sst2_missing_label_column_in_a_row(tmp_path: Path) -> None:
    root = _sst2(tmp_path, [["good movie", "1"], ["no label here"]])
    with pytest.raises(DataFileError, match=r"train\.tsv, line 3: missing field\(s\) \['label'\]"):
        read_sst2(root)


def test_sst2_header_without_label(tmp_path: Path) -> None:
    root = _sst2(tmp_path, [["good movie", "1"]], header=["sentence", "score"])
    with pytest.raises(DataFileError, match=r"train\.tsv, line 1: .*\['sentence', 'label'\]"):
        read_sst2(root)


def test_label_outside_num_classes_is_refused_not_loaded(tmp_path: Path) -> None:
    # The silently-accepted case: a 7 in a 2-class dataset.
    root = _sst2(tmp_path, [["good", "1"], ["bad", "0"], ["odd", "7"]])
    with pytest.raises(DataFileError, match=r"train\.tsv, line 4: label must be in 0\.\.1 \(num_classes=2\), got 7"):
        TextBackdoorDataModule(dataset="sst2", data_dir=str(root)).setup("fit")


def test_sst2_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"SST-2: expected file .*train\.tsv"):
        read_sst2(tmp_path)


def test_empty_sst2_split(tmp_path: Path) -> None:
    root = _sst2(tmp_path, [])
    with pytest.raises(DataFileError, match=r"sst2 train split .* holds no records"):
        TextBackdoorDataModule(dataset="sst2", data_dir=str(root)).setup("fit")


def test_agnews_row_with_a_missing_column(tmp_path: Path) -> None:
    root = _agnews(tmp_path, [["1", "title", "description"], ["2", "title only"]])
    with pytest.raises(DataFileError, match=r"train\.csv, line 2: expected 3 columns \(class index, title, descr"):
        read_agnews(root)


def test_agnews_class_index_out_of_range(tmp_path: Path) -> None:
    root = _agnews(tmp_path, [["5", "title", "description"]])
    with pytest.raises(DataFileError, match=r"train\.csv, line 1: class index must be in 0\.\.3"):
        read_agnews(root)


def test_olid_unknown_label(tmp_path: Path) -> None:
    _tsv(tmp_path / "olid-training-v1.0.tsv", ["id", "tweet", "subtask_a"], [["1", "hi", "MAYBE"]])
    (tmp_path / "labels-levela.csv").write_text("2,NOT\n")
    _tsv(tmp_path / "testset-levela.tsv", ["id", "tweet"], [["2", "yo"]])
    with pytest.raises(DataFileError, match=r"olid-training-v1\.0\.tsv, line 2: field 'subtask_a' must be 'OFF'"):
        read_olid(tmp_path)


def _coco(tmp_path: Path, annotation: dict[str, Any]) -> tuple[Path, Path]:
    from PIL import Image

    (tmp_path / "img").mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8)).save(tmp_path / "img" / "a.png")
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
            "categories": [{"id": 1, "name": "person"}], "annotations": [annotation]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    return path, tmp_path / "img"


def test_coco_annotation_without_bbox(tmp_path: Path) -> None:
    path, images = _coco(tmp_path, {"id": 5, "image_id": 1, "category_id": 1})
    with pytest.raises(DataFileError, match=r"ann\.json, annotations\[0\]: missing field 'bbox' \(id=5\)"):
        CocoDetectionDataset(path, images)


def test_coco_bbox_with_three_numbers(tmp_path: Path) -> None:
    path, images = _coco(tmp_path, {"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2]})
    with pytest.raises(DataFileError, match=r"annotations\[0\]: field 'bbox' must be 4 finite numbers"):
        CocoDetectionDataset(path, images)


def test_coco_annotation_of_an_unknown_image(tmp_path: Path) -> None:
    path, images = _coco(tmp_path, {"id": 5, "image_id": 9, "category_id": 1, "bbox": [0, 0, 2, 2]})
    with pytest.raises(DataFileError, match=r"annotations\[0\]: field 'image_id' 9 is not an id"):
        CocoDetectionDataset(path, images)


def test_coco_annotation_of_an_unknown_category(tmp_path: Path) -> None:
    path, images = _coco(tmp_path, {"id": 5, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2]})
    with pytest.raises(DataFileError, match=r"annotations\[0\]: field 'category_id' 3 is not an id in 'categories'"):
        CocoDetectionDataset(path, images)


def test_coco_corrupt_json(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "ann.json").write_text('{"images": [')
    with pytest.raises(ValueError, match=r"ann\.json is not valid JSON"):
        CocoDetectionDataset(tmp_path / "ann.json", tmp_path / "img")


def _wav(path: Path) -> Path:
    write_wav(path, np.zeros(160, dtype=np.float32), 16000)
    return path


def test_truncated_wav_header(tmp_path: Path) -> None:
    path = _wav(tmp_path / "clip.wav")
    path.write_bytes(path.read_bytes()[:28])  # RIFF header + 'fmt ' chunk id, 8 of its 16 bytes
    with pytest.raises(DataFileError, match=r"clip\.wav: truncated WAV header"):
        read_audio(path)


def test_wav_with_zero_sample_rate(tmp_path: Path) -> None:
    path = _wav(tmp_path / "clip.wav")
    data = bytearray(path.read_bytes())
    data[24:28] = (0).to_bytes(4, "little")  # the fmt chunk's sample rate
    path.write_bytes(bytes(data))
    with pytest.raises(DataFileError, match=r"clip\.wav: sample rate must be a positive integer"):
        read_audio(path)


def test_not_a_wav_file(tmp_path: Path) -> None:
    path = tmp_path / "clip.wav"
    path.write_bytes(b"ID3 this is an mp3")
    with pytest.raises(DataFileError, match=r"clip\.wav is not a RIFF/WAVE file"):
        read_audio(path)


def test_audio_list_with_a_non_numeric_score(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav")
    (tmp_path / "train.csv").write_text("path,production_quality\na.wav,great\n")
    module = AudioQualityCSVDataModule(str(tmp_path), val_csv=None, test_csv=None, aspects=["production_quality"])
    with pytest.raises(DataFileError, match=r"train\.csv, row 2: column 'production_quality' is not a number"):
        module.setup("fit")


def test_cifar_batch_truncated(tmp_path: Path) -> None:
    root = write_fake_cifar10(tmp_path / "cifar", n_train_per_batch=4, n_test=4)
    batch = Path(root) / "test_batch"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(DataFileError, match=r"test_batch: not a readable CIFAR-10 python batch"):
        load_cifar_batch(batch)


def test_cifar_batch_missing(tmp_path: Path) -> None:
    root = write_fake_cifar10(tmp_path / "cifar", n_train_per_batch=4, n_test=4)
    (Path(root) / "data_batch_3").unlink()
    with pytest.raises(MissingFileError, match=r"data_batch_3"):
        CIFAR10DataModule(data_dir=str(tmp_path / "cifar"), val_size=0).setup("fit")


def test_cifar_label_out_of_range_names_the_record(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    labels = [0, 1, 12, 3]
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": labels}, protocol=2))
    with pytest.raises(DataFileError, match=r"data_batch_1, record 2: labels must be in 0\.\.9"):
        load_cifar_batch(path)


def test_flow_csv_empty(tmp_path: Path) -> None:
    (tmp_path / "flows.csv").write_text("")
    with pytest.raises(DataFileError, match=r"flows\.csv: empty file"):
        read_flow_csv(tmp_path / "flows.csv")


def test_flow_csv_missing(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"flow CSV .*nope\.csv"):
        read_flow_csv(tmp_path / "nope.csv")


def test_flow_csv_without_label_column(tmp_path: Path) -> None:
    (tmp_path / "flows.csv").write_text("Flow Duration,Total Fwd Packets\n1,2\n")
    with pytest.raises(DataFileError, match=r"flows\.csv: no 'Label' column"):
        read_flow_csv(tmp_path / "flows.csv")


def test_image_folder_with_a_corrupt_image(tmp_path: Path) -> None:
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / name / "ok.png")
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataFileError, match=r"broken\.png: not a readable image"):
        ImageFolderDataModule(str(tmp_path), image_size=8).setup("test")


def test_sia_split_cut_short_is_refused(tmp_path: Path) -> None:
    from robust_lightning.lightning_modules.sia.synthesize import write_dataset

    write_dataset(tmp_path, num_products=6, num_queries=20)
    sft = tmp_path / "sft.jsonl"
    sft.write_bytes(sft.read_bytes()[:-40])
    with pytest.raises(DataFileError, match=r"sft\.jsonl does not match .*data_card\.json"):
        load_dataset(tmp_path)


def test_sia_chained_step_before_synthesis(tmp_path: Path) -> None:
    with pytest.raises(PrerequisiteError, match=r"data_dir=.* lacks \['corpus'"):
        load_dataset(tmp_path)


# ------------------------------------------------------------------------------------------ checkpoints
class _RunsACommand:
    """Unpickling this calls os.system (the classic pickle payload)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _state_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": nn.Linear(2, 2).state_dict(), "epoch": 1}, path)
    return path


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "empty"])
def test_corrupt_checkpoints_never_suggest_unsafe_loading(tmp_path: Path, damage: str) -> None:
    path = _state_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes({"random bytes": os.urandom(512), "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=r"checkpoint '.*model\.ckpt' is not a valid PyTorch checkpoint "
                                              r"\(truncated or corrupt\); it was not loaded") as info:
        load_checkpoint(path)
    assert "weights_only=False" not in str(info.value) and "weights_only" not in str(info.value)


def test_checkpoint_with_an_os_system_payload_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "payload.ckpt"
    torch.save({"state_dict": {}, "hook": _RunsACommand(marker)}, path)
    with pytest.raises(CheckpointError, match=r"payload\.ckpt' holds a pickled object of type 'posix\.system'"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"surrogate_checkpoint '.*none\.ckpt' does not exist"):
        load_checkpoint(tmp_path / "none.ckpt", argument="surrogate_checkpoint")


def test_surrogate_checkpoint_that_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match=r"surrogate_checkpoint '.*tensor\.pt' holds no state dict"):
        load_surrogate(nn.Linear(2, 2), path)


def test_cifar_batch_with_an_os_system_payload_never_runs(tmp_path: Path) -> None:
    root = Path(write_fake_cifar10(tmp_path / "cifar", n_train_per_batch=4, n_test=4))
    marker = tmp_path / "marker"
    # Protocol 0 by hand: GLOBAL 'os system', then call it with one string argument.
    (root / "test_batch").write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(DataFileError, match=r"test_batch: refusing to load forbidden global 'os\.system'"):
        CIFAR10DataModule(data_dir=str(tmp_path / "cifar"), val_size=0).setup("test")
    assert not marker.exists()


def test_config_strings_are_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robust_lightning.cli import main

    marker = tmp_path / "marker"
    monkeypatch.chdir(tmp_path)
    # A budget string is parsed by a regular expression, never evaluated.
    with pytest.raises(InvalidArgumentError, match=r"eps must be a number"):
        PGD(eps=f"__import__('os').system('touch {marker}')")
    # A YAML tag that would call os.system when loaded unsafely.
    config = tmp_path / "evil.yaml"
    config.write_text(f"trainer:\n  max_epochs: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(config), "--model=robust_lightning.RobustClassifier"])
    assert not marker.exists()


def test_all_user_errors_are_user_errors() -> None:
    # The CLI prints exactly these as one line; each also keeps its built-in base class.
    for error in (CheckpointError, DataFileError, InvalidArgumentError, MissingFileError, PrerequisiteError):
        assert issubclass(error, UserError)
    assert issubclass(DataFileError, ValueError) and issubclass(MissingFileError, FileNotFoundError)


# ------------------------------------------------------------------------------------------------- CLI
def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "robust_lightning", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _assert_user_error(result: subprocess.CompletedProcess[str], *names: str) -> None:
    assert result.returncode != 0, result.stdout[-2000:]
    for name in names:
        assert name in result.stderr, result.stderr[-3000:]
    assert not re.search(r"(?<!save_)weights_only=False", result.stderr), "never suggest unsafe loading"
    assert result.returncode == CLI_EXIT_CODE_FOR_USER_ERRORS, (result.returncode, result.stderr[-3000:])
    assert "Traceback (most recent call last)" not in result.stderr, result.stderr[-3000:]


DIGITS = str(REPO / "configs" / "classifier" / "digits_pgd_at.yaml")
FAST = ["--trainer.fast_dev_run=1", "--trainer.accelerator=cpu", "--trainer.logger=false"]


@pytest.mark.parametrize(("args", "names"), [
    (["fit", "--config", "no_such_config.yaml"], ["no_such_config.yaml"]),
    # (not a prefix of a real key: argparse would take "--trainer.max_epoch" as max_epochs)
    (["fit", "--config", DIGITS, "--trainer.max_epoks=1"], ["max_epoks"]),
    (["fit", "--config", DIGITS, "--model.class_path=robust_lightning.NoSuchClassifier"], ["NoSuchClassifier"]),
    (["fit", "--config", str(REPO / "configs" / "sharpening" / "digits_transfer.yaml"), *FAST],
     ["surrogate_checkpoint", "digits_surrogate"]),
    (["evolve", "--config", str(REPO / "configs" / "nero_net" / "evolve" / "digits.yaml"), "--ofspring=2"],
     ["ofspring"]),
    (["evolve", "--config", str(REPO / "configs" / "nero_net" / "evolve" / "digits.yaml"), "--resume=nowhere",
      "--wandb=false"], ["resume='nowhere'"]),
], ids=["missing config", "typo'd key", "unknown class", "chained recipe before its prerequisite",
        "evolve typo'd key", "evolve resume without a search"])
def test_cli_user_errors(tmp_path: Path, args: list[str], names: list[str]) -> None:
    _assert_user_error(_cli(tmp_path, *args), *names)


def test_cli_corrupt_ckpt_path(tmp_path: Path) -> None:
    (tmp_path / "broken.ckpt").write_bytes(os.urandom(256))
    result = _cli(tmp_path, "fit", "--config", DIGITS, *FAST, "--ckpt_path=broken.ckpt")
    _assert_user_error(result, "broken.ckpt", "is not a valid PyTorch checkpoint")
