"""A PBT sweep interrupted (Ctrl-C) after a perturbation continues where it stopped (Tune's restore):
the paused trial trains on from its perturbation checkpoint, no epoch of it is trained twice, and the
learned schedule.json covers every epoch. Audio and text populations learn a schedule too, and so
does PB2 (its GP-bandit explore, GPy)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.paths import REPO
from tests.helpers.tuning import interrupt_sweep_driver

_PBT = ["train.num_workers=1", "tune.scheduler=pbt", "compress.latency_runs=3", "compress.latency_warmup=1",
        "tune.max_concurrent_trials=1", "tune.trial_cpus=0.25", "tune.export=none", "tune.measure_on=trial"]


def _results(tune_dir: Path) -> dict[str, list[dict]]:
    """Every epoch result Tune's driver logged, per trial (both drivers' lines: Tune appends on resume)."""
    by_trial: dict[str, list[dict]] = {}
    for log in tune_dir.glob("*/result.json"):
        for line in log.read_text().splitlines():
            try:
                result = json.loads(line)
            except json.JSONDecodeError:  # the line being written when the driver was interrupted
                continue
            if "start_epoch" in result:  # an epoch's report (the last one is the compressed measurement)
                by_trial.setdefault(result["trial_id"], []).append(result)
    return by_trial


def _trial_id(trial_dir: Path) -> str:
    """Tune's trial directory ``InProcessTrial_<exp>_<nnnnn>_<n>_<params>_<date>`` -> ``<exp>_<nnnnn>``."""
    return "_".join(trial_dir.name.split("_")[1:3])


def _perturbed(tune_dir: Path) -> list[Path]:
    """Tune checkpoints of trials PBT paused or exploited (Tune's save of a trial: ``<trial>/checkpoint_*``)."""
    return [p for p in tune_dir.glob("*/checkpoint_*") if p.is_dir() and any(p.iterdir())]


@pytest.mark.timeout(1800)
@pytest.mark.slow  # a 2-trial x 3-epoch PBT sweep, interrupted and resumed: 291 s on the shared 2-core machine at load 30-55
def test_an_interrupted_pbt_sweep_continues_from_its_perturbation_checkpoints(ray_local, tiny_config, tmp_path):
    from raylm.tune import sweep

    epochs = 3
    cfg = tiny_config("image", *_PBT, f"train.epochs={epochs}", "tune.num_samples=2", "tune.perturbation_interval=1",
                      "tune.quantile_fraction=0.5", "tune.seed=1", "train.name=pbt-interrupted",
                      "tune.space={train.lr: {loguniform: [0.002, 0.02]}, augment.image.rotate_p: {uniform: [0.0, 0.5]}}")
    path = tmp_path / "pbt.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    tune_dir = cfg.run_dir / "tune"
    # A second driver on the test's cluster, interrupted (Ctrl-C) once PBT has paused a trial at a
    # perturbation (one trial at a time: the first is paused after epoch 1 so that the second starts).
    rc, stderr = interrupt_sweep_driver(path, lambda: bool(_perturbed(tune_dir)), "a perturbation checkpoint",
                                        cwd=REPO, deadline_s=600)
    # Recorded as interrupted, with the command that continues it (Tune returns from a Ctrl-C as if done).
    assert rc == 130, stderr[-3000:]
    assert f"continue it with: raylm tune --resume {cfg.run_dir}" in stderr, stderr[-3000:]
    assert json.loads((cfg.run_dir / "logs" / "status.json").read_text())["state"] == "interrupted"
    interrupted = time.time()
    # Trials PBT had paused at a perturbation when the driver was interrupted: Tune holds their checkpoint.
    paused = {_trial_id(p.parent) for p in _perturbed(tune_dir)}
    assert not (tune_dir / "schedule.json").exists(), "the interrupted sweep already finished"

    result = sweep(resume=cfg.run_dir, verbose=False)
    assert [r["status"] for r in result.rows] == ["completed"] * 2, result.rows
    # What the resumed driver logged (Tune rewrites a restored trial's result.json: the interrupted
    # driver's lines are not all kept, so only lines after the interruption are read).
    resumed = {t: [r for r in rows if r["timestamp"] >= int(interrupted)] for t, rows in _results(tune_dir).items()}
    for trial in paused:
        assert resumed.get(trial), f"{trial}: nothing trained after the resume"
        # Continued from its perturbation checkpoint, not from scratch (an exploit starts from a donor's epoch >= 1).
        assert all(r["start_epoch"] >= 1 for r in resumed[trial]), f"{trial} trained from scratch again: {resumed[trial]}"
    assert max(r["epoch"] for rows in resumed.values() for r in rows) == epochs

    schedule = json.loads((tune_dir / "schedule.json").read_text())
    assert [e["epoch"] for e in schedule["per_epoch"]] == list(range(1, epochs + 1))
    assert set(schedule["keys"]) == {"train.lr", "augment.image.rotate_p"}


@pytest.mark.slow  # tiny population sweeps (2 trials x 2 epochs each)
@pytest.mark.parametrize("modality, scheduler, space", [
    ("audio", "pbt", "{augment.audio.noise_p: {uniform: [0.0, 0.8]}, augment.audio.time_masks: {randint: [0, 3]}}"),
    ("text", "pbt", "{augment.text.dropout_p: {uniform: [0.0, 0.3]}, train.lr: {loguniform: [0.002, 0.02]}}"),
    ("image", "pb2", "{augment.image.rotate_p: {uniform: [0.0, 0.8]}, train.lr: {loguniform: [0.002, 0.02]}}"),
])
def test_populations_learn_a_schedule(ray_local, tiny_config, modality, scheduler, space):
    from raylm.tune import sweep

    cfg = tiny_config(modality, *_PBT, f"tune.scheduler={scheduler}", "train.epochs=2", "tune.num_samples=2",
                      "tune.perturbation_interval=1", "tune.quantile_fraction=0.5", f"tune.space={space}")
    result = sweep(cfg, verbose=False)
    assert [r["status"] for r in result.rows] == ["completed"] * 2, result.rows
    schedule = json.loads(result.files["schedule"].read_text())
    assert schedule["scheduler"] == scheduler
    assert [e["epoch"] for e in schedule["per_epoch"]] == [1, 2]
    keys = {k.split(":")[0].strip("{} ") for k in space.split("}, ")}
    assert set(schedule["keys"]) == keys
    for entry in schedule["per_epoch"]:  # each epoch's values lie in the space
        assert set(entry["values"]) == keys
