"""The decisions of the training loop that need no Ray: the lr of an epoch, when a checkpoint is
written, which checkpoint a (re)start resumes from (raylm/train/loop.py)."""

import math
import time

import pytest
import torch

from raylm.config import load_config
from raylm.train.checkpoint import save_checkpoint_atomic
from raylm.train.loop import checkpoint_due, epoch_lr, evaluate, newest_stored


def _train(*overrides):
    return load_config(None, ["task.modality=image", "model.name=seed_cnn", *overrides]).train


def test_cosine_lr_follows_the_curve_from_the_epoch_alone():
    tc = _train("train.lr=0.1", "train.epochs=4", "train.lr_schedule=cosine")
    assert [round(epoch_lr(tc, e), 6) for e in range(5)] == [0.1, 0.085355, 0.05, 0.014645, 0.0]
    assert epoch_lr(tc, 2) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert epoch_lr(_train("train.lr=0.1", "train.epochs=4", "train.lr_schedule=constant"), 3) == 0.1


def _rows(*accuracies):
    return [{"epoch": i + 1, "val_accuracy": a} for i, a in enumerate(accuracies)]


@pytest.mark.parametrize("accuracies, due", [
    ((0.5,), True),                 # the first epoch beats nothing yet
    ((0.6, 0.5), False),            # worse, not the cadence, not the last
    ((0.6, 0.6), False),            # equal is not better
    ((0.6, 0.7), True),             # a new best
    ((0.6, 0.5, 0.5), True),        # every third epoch
    ((0.6, 0.5, 0.5, 0.5, 0.5), True),  # the last epoch
    ((0.6, 0.5, 0.5, 0.5), False),
    ((0.5, 0.7, 0.5, 0.6), False),  # better than the first epoch, not than the best one (the second)
])
def test_checkpoints_at_the_cadence_the_last_epoch_and_every_new_best(accuracies, due):
    tc = _train("train.epochs=5", "train.checkpoint_every=3")
    assert checkpoint_due(tc, _rows(*accuracies)) is due


def test_an_equal_accuracy_at_a_lower_loss_is_a_new_best():
    tc = _train("train.epochs=5", "train.checkpoint_every=3")
    rows = [{"epoch": 1, "val_accuracy": 1.0, "val_loss": 1.0}, {"epoch": 2, "val_accuracy": 1.0, "val_loss": 0.5}]
    assert checkpoint_due(tc, rows) is True
    rows[1]["val_loss"] = 1.2
    assert checkpoint_due(tc, rows) is False
    # Lower only at float32's resolution (a Keras run at lr 1e-9: 0.7861410 -> 0.7861408) is a tie.
    rows = [{"epoch": 1, "val_accuracy": 0.5, "val_loss": 0.786141037940979},
            {"epoch": 2, "val_accuracy": 0.5, "val_loss": 0.7861407995223999}]
    assert checkpoint_due(tc, rows) is False
    rows[0]["val_loss"] = float("nan")  # a finite loss beats a non-finite one at the same accuracy
    assert checkpoint_due(tc, rows) is True


def _checkpoint(directory, epoch):
    """A saved checkpoint as Ray Train hands one to a restarted loop."""
    from ray.train import Checkpoint

    cfg = load_config(None, ["task.modality=image", "model.name=seed_cnn", "task.labels=[a,b]"])
    from raylm.models import build_model

    return Checkpoint.from_directory(str(save_checkpoint_atomic(directory, build_model(cfg, 2), cfg, ["a", "b"], epoch=epoch)))


def test_a_restart_resumes_from_the_highest_epoch_in_storage_or_given(tmp_path):
    train = tmp_path / "train"
    assert newest_stored(str(train), None, {}) is None  # nothing anywhere: a fresh start
    _checkpoint(train / "checkpoint_000000", 1)
    _checkpoint(train / "checkpoint_000002", 3)
    _checkpoint(train / "checkpoint_000001", 2)
    given = _checkpoint(tmp_path / "elsewhere" / "checkpoint_x", 2)
    assert newest_stored(str(train), None, {}).endswith("checkpoint_000002")
    assert newest_stored(str(train), given, {}).endswith("checkpoint_000002")  # the stored one is newer
    later = _checkpoint(tmp_path / "later" / "checkpoint_y", 7)
    assert newest_stored(str(train), later, {}).endswith("later/checkpoint_y")
    assert newest_stored(str(tmp_path / "none"), given, {}).endswith("elsewhere/checkpoint_x")


def test_evaluate_sums_loss_accuracy_and_count_over_batches():
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    batches = [{"x": torch.tensor([[2.0, 0.0], [0.0, 2.0]]), "label": torch.tensor([0, 0])},
               {"x": torch.tensor([[0.0, 3.0]]), "label": torch.tensor([1])}]
    out = evaluate(model, batches, ("x",), torch.device("cpu"), "fp32")
    assert out["val_samples"] == 3 and out["val_accuracy"] == pytest.approx(2 / 3)
    expected = sum(torch.nn.functional.cross_entropy(model(b["x"]), b["label"], reduction="sum").item() for b in batches) / 3
    assert out["val_loss"] == pytest.approx(expected)
    assert evaluate(model, [], ("x",), torch.device("cpu"), "fp32") == {"val_loss": 0.0, "val_accuracy": 0.0, "val_samples": 0}


def test_the_trainers_waits_are_told_per_tenth_of_the_epochs_steps():
    from raylm.train.loop import wait_by_tenth, waiting_on

    waited, steps = [0.0, 0.0], []
    assert list(waiting_on(iter(range(25)), waited, steps)) == list(range(25)) and len(steps) == 25

    def slow_to_end():  # the feed's end takes a while to be known (Ray Data's split closing): it is a wait too
        yield from range(3)
        time.sleep(0.05)

    waited, steps = [0.0, 0.0], []
    assert list(waiting_on(slow_to_end(), waited, steps)) == [0, 1, 2] and len(steps) == 3
    assert steps[-1] >= 0.05 and sum(steps) == pytest.approx(waited[0])
    # 20 steps: two a tenth; a slow first step (the pipeline's start) and a stall at 3/4 of the epoch.
    waits = [1.0, 0.0] + [0.0] * 12 + [0.5, 0.25] + [0.0] * 4
    assert wait_by_tenth(waits, joined=0.5) == [1.5, 0, 0, 0, 0, 0, 0, 0.75, 0, 0]
    assert wait_by_tenth([0.1, 0.2, 0.3]) == [0.1, 0, 0, 0.2, 0, 0, 0.3, 0, 0, 0]  # fewer steps than tenths
