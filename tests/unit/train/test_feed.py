"""EpochFeed: the next epoch's batches, started early on a thread, arrive whole and in order."""

import threading

import pytest

from raylm.train.feed import EpochFeed


def _make(log):
    def make(epoch):
        log.append((epoch, threading.current_thread().name))
        return [f"e{epoch}b{i}" for i in range(3)]
    return make


def test_started_epoch_is_built_on_a_thread_before_it_is_asked_for_and_yields_every_batch_once():
    log = []
    feed = EpochFeed(_make(log))
    assert list(feed.batches(0)) == ["e0b0", "e0b1", "e0b2"]  # nothing started: built in the caller
    feed.start(1)
    assert list(feed.batches(1)) == ["e1b0", "e1b1", "e1b2"]
    assert [epoch for epoch, _ in log] == [0, 1]
    assert log[0][1] == threading.current_thread().name and log[1][1] == "raylm-feed-epoch-1"


def test_an_epoch_other_than_the_started_one_is_built_fresh():
    log = []
    feed = EpochFeed(_make(log))
    feed.start(2)
    assert list(feed.batches(3)) == ["e3b0", "e3b1", "e3b2"]  # e.g. a resumed loop's first epoch
    assert list(feed.batches(2)) == ["e2b0", "e2b1", "e2b2"]  # the early start was dropped, not reused
    assert [epoch for epoch, _ in log] == [2, 3, 2]


def test_an_error_while_starting_is_raised_where_the_batches_are_asked_for():
    def broken(epoch):
        raise OSError(f"epoch {epoch}: source gone")

    feed = EpochFeed(broken)
    feed.start(1)
    with pytest.raises(OSError, match="epoch 1: source gone"):
        feed.batches(1)


def test_an_empty_epoch_is_empty():
    feed = EpochFeed(lambda epoch: [])
    feed.start(0)
    assert list(feed.batches(0)) == []
