"""Ray Data's scheduling loop paced by raylm's execution callback (raylm/data/pacing.py), on a fake clock."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from raylm.data import pacing


class FakeClock:
    def __init__(self) -> None:
        self.now, self.slept = 100.0, []

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(pacing.time, "perf_counter", fake.perf_counter)
    monkeypatch.setattr(pacing.time, "sleep", fake.sleep)
    return fake


def test_steps_that_return_at_once_are_held_to_the_floor(clock):
    paced = pacing.PacedSchedulingLoop()
    for _ in range(50):  # a spinning loop: every step returns without waiting
        clock.now += 0.0002
        paced.on_execution_step(None)
    assert len(clock.slept) == 50
    assert all(s == pytest.approx(pacing.MIN_STEP_S - 0.0002) for s in clock.slept)
    # 50 steps now span 50 floors of time, not 50 x 0.2 ms
    assert clock.now - 100.0 == pytest.approx(50 * pacing.MIN_STEP_S)


def test_a_step_that_waited_on_a_task_is_not_delayed(clock):
    paced = pacing.PacedSchedulingLoop()
    clock.now += 0.1  # ray.wait blocked for its full timeout
    paced.on_execution_step(None)
    clock.now += pacing.MIN_STEP_S * 0.5  # then a short one: only the rest of the floor is slept
    paced.on_execution_step(None)
    assert clock.slept == [pytest.approx(pacing.MIN_STEP_S * 0.5)]


def test_bounded_stream_adds_the_pacing_to_the_datasets_it_creates_and_restores_the_context():
    from ray.data import DataContext

    from raylm.data.shards import bounded_stream

    context = DataContext.get_current()
    before = list(context.custom_execution_callback_classes)
    cfg = SimpleNamespace(data=SimpleNamespace(stream_memory=64, block_mib=8))  # the two keys it reads
    with bounded_stream(cfg):
        inside = DataContext.get_current().custom_execution_callback_classes
        assert pacing.PacedSchedulingLoop in inside
        assert pacing.PacedSchedulingLoop in DataContext.get_current().execution_callback_classes
    assert context.custom_execution_callback_classes == before
