"""Reports land in the run's own folder and never overwrite an earlier run's (issue 20)."""

from __future__ import annotations

from lightning.pytorch.loggers import CSVLogger

from robust_lightning import PGD, RobustnessEvaluation


def _callback() -> RobustnessEvaluation:
    return RobustnessEvaluation([PGD(eps=0.1, alpha=0.05, steps=2)])


def _fit(helpers, **trainer_kwargs):
    x, y = helpers.make_data(n=8)
    trainer = helpers.make_trainer([_callback()], **trainer_kwargs)
    trainer.fit(helpers.PlainClassifier(), helpers.make_loader(x, y), helpers.make_loader(x, y))
    return trainer


def _test(helpers, trainer=None, **trainer_kwargs):
    x, y = helpers.make_data(n=8)
    trainer = trainer or helpers.make_trainer([_callback()], **trainer_kwargs)
    trainer.test(helpers.PlainClassifier(), helpers.make_loader(x, y))
    return trainer


def test_fast_dev_run_reports_get_a_new_folder_per_run(helpers):
    # fast_dev_run swaps the loggers for a dummy whose log_dir is the shared default_root_dir.
    for _ in range(2):
        _fit(helpers, fast_dev_run=1, logger=CSVLogger(helpers.tmp_path, name="csv"))
    assert not (helpers.tmp_path / "robustness_val.csv").exists()
    reports = sorted(helpers.tmp_path.glob("reports/version_*/robustness_val.csv"))
    assert [p.parent.name for p in reports] == ["version_0", "version_1"]


def test_without_a_logger_an_earlier_report_is_kept(helpers):
    _test(helpers)
    first = helpers.tmp_path / "reports" / "version_0" / "robustness_test.csv"
    before = first.read_bytes()
    _test(helpers)
    assert first.read_bytes() == before
    assert (helpers.tmp_path / "reports" / "version_1" / "robustness_test.csv").is_file()


def test_one_run_keeps_one_folder_across_stages(helpers):
    trainer = _fit(helpers, limit_train_batches=1)
    _test(helpers, trainer=trainer)
    folder = helpers.tmp_path / "reports" / "version_0"
    assert (folder / "robustness_val.csv").is_file() and (folder / "robustness_test.csv").is_file()
    assert not (helpers.tmp_path / "reports" / "version_1").exists()


def test_with_a_versioned_logger_reports_go_to_its_folder(helpers):
    _test(helpers, logger=CSVLogger(helpers.tmp_path, name="run"))
    _test(helpers, logger=CSVLogger(helpers.tmp_path, name="run"))
    assert (helpers.tmp_path / "run" / "version_0" / "robustness_test.csv").is_file()
    assert (helpers.tmp_path / "run" / "version_1" / "robustness_test.csv").is_file()
    assert not (helpers.tmp_path / "reports").exists()
