"""A rerun that continues a run says so on the console (the first epoch line would read 16/40 with no
word of where it came from); one that has nothing left to train says that instead."""

from __future__ import annotations

import logging

from raylm.config import load_config


def _run(tmp_path, epoch: int, epochs: int):
    from raylm.train.checkpoint import write_meta

    cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn", f"train.storage_path={tmp_path}",
                             "train.name=img", f"train.epochs={epochs}"])
    checkpoint = tmp_path / "img" / "train" / "checkpoint_000013"
    checkpoint.mkdir(parents=True)
    write_meta(checkpoint, cfg, ["a", "b"], epoch=epoch)
    return cfg, str(checkpoint)


def test_a_resumed_run_says_from_which_epoch_on_the_console(tmp_path, caplog):
    from raylm.train import _say_if_trained

    cfg, checkpoint = _run(tmp_path, 13, 40)
    with caplog.at_level(logging.INFO, logger="raylm"):
        _say_if_trained(cfg, checkpoint, cfg.run_location.join("train"))
    (record,) = [r for r in caplog.records if "resuming" in r.getMessage()]
    assert record.getMessage() == "[raylm] resuming img after epoch 13 of 40 (from its last checkpoint)"
    assert getattr(record, "console", False)  # marked for the console, not only the run's log


def test_a_finished_run_says_nothing_is_left_and_names_itself_once(tmp_path, caplog):
    from raylm.console import _ConsoleFormat
    from raylm.train import _say_if_trained

    cfg, checkpoint = _run(tmp_path, 40, 40)
    with caplog.at_level(logging.INFO, logger="raylm"):
        _say_if_trained(cfg, checkpoint, cfg.run_location.join("train"))
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert _ConsoleFormat().format(record).startswith("raylm: WARNING: img is already trained to epoch 40")
