"""Opt-in: `python -m pytest -m gpu` on a machine with CUDA."""

import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_gpu_worker_trains_in_bf16(ray_local, tiny_config):
    from raylm.train import fit

    outcome = fit(tiny_config("image", "train.num_workers=1", "train.use_gpu=auto", "train.precision=auto"))
    assert outcome.metrics["val_accuracy"] > 0.75
