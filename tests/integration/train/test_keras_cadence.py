"""Issue 25: ``train.checkpoint_every`` in the Keras loop, as in the torch loop: fewer checkpoints,
never losing the first, the best or the last (tests/integration/test_fast_defaults.py has the rule)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # TensorFlow's start and a 4-epoch Keras run (~1 min)


def test_keras_loop_writes_checkpoints_at_the_cadence_the_best_and_the_last(data_root, tmp_path):
    from raylm.config import load_config
    from raylm.runtime import ensure_ray
    from raylm.train import fit
    from raylm.train.checkpoint import read_meta

    ensure_ray(num_cpus=2, configure_logging=False)
    # lr ~0: validation accuracy never improves after epoch 1, so only the cadence (3) and the last (4)
    # add checkpoints; every checkpoint is kept (keep_checkpoints) so the written ones can be counted.
    cfg = load_config(None, [
        "task.modality=image", "model.name=seed_mlp", "model.backend=keras", f"data.path={data_root['image']}",
        "data.validation_fraction=0.3", f"data.cache_dir={tmp_path / 'cache'}", f"train.storage_path={tmp_path / 'runs'}",
        "train.epochs=4", "train.batch_size=16", "train.num_workers=1", "train.cpus_per_worker=1", "train.lr=1e-9",
        "train.checkpoint_every=3", "train.keep_checkpoints=10", "train.name=keras-cadence",
    ])
    outcome = fit(cfg)
    written = sorted(p for p in Path(outcome.run_dir).rglob("checkpoint_*")
                     if p.is_dir() and re.fullmatch(r"checkpoint_\d+", p.name))
    epochs = sorted(read_meta(p)["epoch"] for p in written)
    assert epochs == [1, 3, 4], written
    assert [h["epoch"] for h in read_meta(Path(outcome.checkpoint))["history"]] == [1, 2, 3, 4]
