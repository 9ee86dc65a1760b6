"""``replica_digests``: what the two-worker training test compares to know the DDP replicas stayed one model."""

from __future__ import annotations

import torch

from raylm.train.loop import replica_digests


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))


def test_equal_parameters_give_equal_digests_and_one_changed_weight_does_not():
    a, b = _model(0), _model(0)
    assert replica_digests(a) == replica_digests(b) and len(replica_digests(a)) == 1  # no process group: this rank
    with torch.no_grad():
        b[2].weight[0, 0] += 1e-6  # the smallest drift of one replica shows
    assert replica_digests(a) != replica_digests(b)
    assert replica_digests(_model(0)) != replica_digests(_model(1))


def test_buffers_are_left_out():
    a, b = _model(0), _model(0)
    b[1].running_mean += 1.0  # BatchNorm's statistics: each rank's own between DDP's broadcasts
    assert replica_digests(a) == replica_digests(b)


def test_in_a_process_group_every_rank_is_listed(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = _model(0)
        (alone,) = replica_digests(model)
        dist.destroy_process_group()
        assert [alone] == replica_digests(model)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
