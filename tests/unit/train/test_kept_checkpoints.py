"""A rerun of a killed one-worker run keeps ``train.keep_checkpoints`` for the run, its earlier checkpoints
included (a user's rerun kept 3 old checkpoints beside 3 new)."""

from __future__ import annotations

from raylm.config import load_config


def test_a_resumed_runs_old_checkpoints_count_toward_the_kept_ones(tmp_path):
    from raylm.storage import StoragePath
    from raylm.train.checkpoint import write_meta
    from raylm.train.in_process import _PersistedReports

    cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn", f"train.storage_path={tmp_path}",
                             "train.name=img1w"])
    train = tmp_path / "img1w" / "train"
    for number, (epoch, acc) in enumerate([(1, 0.80), (2, 0.95), (3, 0.90)]):  # the killed run's three
        directory = train / f"checkpoint_{number:06d}"
        directory.mkdir(parents=True)
        write_meta(directory, cfg, ["a", "b"], epoch=epoch, metrics={"epoch": epoch, "val_accuracy": acc})
    reports = _PersistedReports({}, StoragePath.of(str(train)), keep=2, on_report=None)
    assert [m["epoch"] for _, m in reports.kept] == [1, 2, 3] and reports.checkpoints == 3

    new = train / "checkpoint_000003"  # the rerun's first epoch, as report() persists it
    new.mkdir()
    write_meta(new, cfg, ["a", "b"], epoch=4, metrics={"epoch": 4, "val_accuracy": 0.85})
    reports.kept.append((StoragePath.of(str(new)), {"epoch": 4, "val_accuracy": 0.85}))
    reports._prune()
    # Two best (0.95, 0.90) and the latest: the killed run's worst is gone.
    assert sorted(p.name for p in train.iterdir()) == ["checkpoint_000001", "checkpoint_000002", "checkpoint_000003"]
