from __future__ import annotations

from pathlib import Path

import pytest

from robust_lightning.datamodules._common import generate_once, read_generated_manifest


def _writer(tag: str):
    def write(folder: Path) -> None:
        (folder / "who").write_text(tag)
    return write


def test_concurrent_generation_keeps_the_dataset_already_in_place(tmp_path: Path) -> None:
    """A second process that finishes later must not replace (and so delete under a reader)
    an identical dataset the first one renamed into place meanwhile."""
    root = tmp_path / "corpus"

    def slow_write(folder: Path) -> None:
        generate_once(root, {"n": 1}, _writer("first"))  # the other process wins the race
        in_use = (root / "who").open()  # ... and is reading it
        (folder / "who").write_text("second")
        slow_write.handle = in_use  # type: ignore[attr-defined]

    generate_once(root, {"n": 1}, slow_write)
    assert (root / "who").read_text() == "first"
    assert slow_write.handle.read() == "first"  # type: ignore[attr-defined]
    slow_write.handle.close()  # type: ignore[attr-defined]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # no temporary folders left


def test_other_parameters_replace_and_foreign_folders_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    generate_once(root, {"n": 1}, _writer("one"))
    generate_once(root, {"n": 1}, _writer("ignored"))
    assert (root / "who").read_text() == "one"
    generate_once(root, {"n": 2}, _writer("two"))
    assert (root / "who").read_text() == "two" and read_generated_manifest(root)["params"] == {"n": 2}
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not a generated dataset"):
        generate_once(foreign, {"n": 1}, _writer("x"))
    assert (foreign / "notes.txt").read_text() == "keep"
