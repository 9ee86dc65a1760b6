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


def test_a_keras_rerun_continues_from_the_newest_whole_checkpoint_not_the_last_one_ray_registered(tmp_path):
    """Ctrl-C landed after epochs 3 and 4 were saved but before Ray's controller registered them: its
    snapshot hands a rerun epoch 2's checkpoint, the driver found epoch 4's in storage. The Keras loop took
    Ray's and trained epochs 3 and 4 again (the torch loop already took the newest)."""
    import ray.train

    from raylm.train.checkpoint import newest_checkpoint, write_meta

    cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn", f"train.storage_path={tmp_path}"])
    saved = {}
    for epoch in (2, 4):
        saved[epoch] = tmp_path / f"checkpoint_epoch{epoch}"
        saved[epoch].mkdir()
        write_meta(saved[epoch], cfg, ["a", "b"], epoch=epoch)
    registered, in_storage = (ray.train.Checkpoint(str(saved[e])) for e in (2, 4))
    assert newest_checkpoint([registered, in_storage]).path == str(saved[4])
    assert newest_checkpoint([in_storage, registered]).path == str(saved[4])
    assert newest_checkpoint([registered, None]).path == str(saved[2])  # a restart in a fresh run: Ray's alone
    assert newest_checkpoint([None, None]) is None
