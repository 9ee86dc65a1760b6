"""``augment.schedule`` checked before Ray starts: the file, and every epoch's values, named."""

import json
import subprocess
import sys

import pytest

from raylm.config import load_config
from raylm.data.schedule import ScheduleError, check_schedule
from tests.helpers.paths import REPO


def _schedule(tmp_path, *per_epoch):
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps({"version": 1, "scheduler": "pbt", "epochs": len(per_epoch),
                                "per_epoch": [{"epoch": i + 1, "values": v} for i, v in enumerate(per_epoch)]}))
    return path


def _cfg(path):
    return load_config("jobs/configs/image_pbt.yaml", [f"augment.schedule={path}"])


def test_every_epochs_values_are_checked_naming_file_epoch_and_key(tmp_path):
    good = {"augment.image.rotate_p": 0.4, "train.lr": 0.002}
    check_schedule(_cfg(_schedule(tmp_path, good, good)))
    with pytest.raises(ScheduleError, match=r"epoch 2: augment.image.rotate_p: .*less than or equal to 1 \(got 5.0\)"):
        check_schedule(_cfg(_schedule(tmp_path, good, {"augment.image.rotate_p": 5.0})))
    with pytest.raises(ScheduleError, match=r"epoch 1: train.lr must be a number > 0"):
        check_schedule(_cfg(_schedule(tmp_path, {"train.lr": -1})))
    with pytest.raises(ScheduleError, match=r"epoch 1: augment.audio.noise_p is not an augment.image"):
        check_schedule(_cfg(_schedule(tmp_path, {"augment.audio.noise_p": 0.1})))
    with pytest.raises(ScheduleError, match="cannot read"):
        check_schedule(_cfg(tmp_path / "missing.json"))


@pytest.mark.parametrize("per_epoch, epochs, message", [
    ([{"epoch": 1, "values": {}}, {"epoch": 3, "values": {}}], 3,
     r"per_epoch lists epochs \[1, 3\]; it needs one entry per epoch, in order, from 1 \(1..2\)"),
    ([{"epoch": 3, "values": {}}, {"epoch": 1, "values": {}}, {"epoch": 2, "values": {}}], 3,
     r"per_epoch lists epochs \[3, 1, 2\]; it needs one entry per epoch, in order"),
    ([{"epoch": 1, "values": {}}, {"epoch": 2, "values": {}}], 3, r"says epochs=3 but per_epoch has 2 entries"),
    ([1, 2], 2, r"per_epoch\[0\] is 1, not \{\"epoch\": n, \"values\": \{...\}\}"),
    ([{"epoch": 1, "values": [0.1]}], 1, r"per_epoch\[0\] is \{\"epoch\": 1, \"values\": \[0.1\]\}"),
])
def test_a_hand_written_schedule_follows_its_epochs_or_is_refused(tmp_path, per_epoch, epochs, message):
    """Entries are replayed in list order: gaps, a different order or a wrong count would train other
    values at an epoch than the file says, so they are refused, as is an entry that is no object."""
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps({"version": 1, "scheduler": "hand", "epochs": epochs, "per_epoch": per_epoch}))
    with pytest.raises(ScheduleError, match=message):
        check_schedule(_cfg(path))


def test_train_refuses_a_bad_schedule_before_ray_starts(tmp_path):
    bad = _schedule(tmp_path, {"augment.image.rotate_p": 5.0})
    done = subprocess.run([sys.executable, "-m", "raylm.cli", "train", "--config", "jobs/configs/image_pbt.yaml",
                           f"augment.schedule={bad}", f"train.storage_path={tmp_path / 'runs'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "augment.schedule:" in done.stderr and "epoch 1" in done.stderr, done.stderr
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written
