"""Sweeps: bad spaces rejected before any trial; ASHA stops weak trials; the multi-objective front;
exports that load; an interrupted sweep resumed without rerunning finished trials."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from raylm.config import ConfigError

from tests.helpers.signals import freeze, signal_frozen
from tests.helpers.paths import REPO
from tests.helpers.oracles import assert_beats_chance
from tests.helpers.tuning import _SWEEP, _finished_trials, brute_force_front, front_points, validation_accuracy


# ------------------------------------------------------------------ bad spaces, before Ray


@pytest.mark.parametrize("space, message", [
    ("{train.learning_rate: {uniform: [0.1, 0.2]}}", "tune.space.train.learning_rate: unknown field 'learning_rate'"),
    ("{train.lr: {choice: []}}", "tune.space.train.lr: Value error, choice: needs at least one value"),
    ("{train.lr: {uniform: [0.2, 0.1]}}", "low=0.2 must be below high=0.1"),
    ("{compress.prune.sparsity: {uniform: [0.0, 1.5]}}", "tune.space.compress.prune.sparsity: uniform value 1.5 is not valid"),
    ("{compress.quantize.mode: {choice: [none, int4]}}", "choice value 'int4' is not valid"),
    ("{train.storage_path: {choice: [a, b]}}", "train.storage_path is fixed for a whole sweep"),
    ("{compress.prune: {choice: [a]}}", "is a whole section"),
    ("{train.lr.x: {choice: [1]}}", "'train.lr' is a value, not a section"),
    # another modality's augmentation validates but is never read: searched for nothing, then refused on replay
    ("{augment.audio.noise_p: {uniform: [0, 0.5]}}",
     "tune.space.augment.audio.noise_p: audio augmentation, but this sweep trains image data (augment.image.*)"),
])
def test_bad_spaces_are_rejected_naming_the_field(tiny_config, space, message):
    from raylm.tune import check_space

    with pytest.raises(ConfigError, match=None) as err:
        check_space(tiny_config("image", f"tune.space={space}"))
    assert message in str(err.value)


def test_grid_needs_random_search_and_an_empty_space_is_refused(tiny_config):
    from raylm.tune import check_space

    with pytest.raises(ConfigError, match="grid dimensions need tune.search=random"):
        tiny_config("image", "tune.space={train.lr: {grid: [0.1, 0.01]}}", "tune.search=optuna")
    with pytest.raises(ConfigError, match="tune.space: empty"):
        check_space(tiny_config("image"))


def test_cli_rejects_a_bad_space_before_ray_starts(tiny_config, tmp_path):
    cfg = tiny_config("image", "tune.space={train.lr: {uniform: [0.001, 20.0]}}")
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    proc = subprocess.run([sys.executable, "-m", "raylm.cli", "tune", "--config", str(path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert "tune.space.train.lr: uniform value 20.0 is not valid" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout


def test_asha_rungs_sit_at_fractions_of_the_budget(tiny_config):
    from raylm.tune.sweep import grace_period

    space = "tune.space={train.lr: {choice: [0.01]}}"
    # 8 epochs + the measurement = 9 iterations, factor 3: rungs at 3 and 9 (not at epoch 1).
    assert grace_period(tiny_config("image", space, "train.epochs=8", "tune.reduction_factor=3")) == 3
    # 17 iterations, factor 2: rungs at 2.125, 4.25, 8.5, 17; never at epoch 16, before the measurement.
    assert grace_period(tiny_config("image", space, "train.epochs=16", "tune.reduction_factor=2")) == 2.125
    # A short budget still gets a rung below the top: 3 epochs, factor 4 -> 1 (4 / 4).
    assert grace_period(tiny_config("image", space, "train.epochs=3", "tune.reduction_factor=4")) == 1
    assert grace_period(tiny_config("image", space, "train.epochs=8", "tune.grace_period=1")) == 1


def test_a_hand_set_grace_period_with_a_rung_on_the_last_epoch_is_warned(tiny_config, caplog):
    from raylm.tune.sweep import _tuner_parts

    space = "tune.space={train.lr: {choice: [0.01]}}"
    _tuner_parts(tiny_config("image", space, "tune.search=random", "tune.scheduler=asha", "train.epochs=8", "tune.grace_period=1"), 1)
    assert "puts an ASHA rung on epoch 8, the last" in caplog.text  # rungs 1, 2, 4, 8 (factor 2)
    caplog.clear()
    _tuner_parts(tiny_config("image", space, "tune.search=random", "tune.scheduler=asha", "train.epochs=8", "tune.grace_period=3"), 1)
    assert "ASHA rung" not in caplog.text  # rungs 3, 6


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_asha_never_decides_a_rung_at_a_trials_last_epoch(tiny_config, factor):
    """A rung decided at the last epoch stops a trial that trained its whole budget, before its
    measurement: `train.epochs=2` at factor 2 had a rung at 1.5 (decided at epoch 2), and 2 of 3 trials
    ended "stopped" after 2 of 2 epochs, unmeasured. Ray's own ASHA rungs for each short budget."""
    from ray.tune.schedulers import ASHAScheduler

    from raylm.tune.sweep import asha_decided_at, grace_period

    space = "tune.space={train.lr: {choice: [0.01]}}"
    for epochs in range(1, 13):
        grace = grace_period(tiny_config("image", space, f"train.epochs={epochs}", f"tune.reduction_factor={factor}"))
        asha = ASHAScheduler(time_attr="training_iteration", metric="a", mode="max", max_t=epochs + 1,
                             grace_period=grace, reduction_factor=factor)
        decided_at = [math.ceil(rung - 1e-9) for bracket in asha._brackets for rung, _ in bracket._rungs]
        assert sorted(decided_at) == asha_decided_at(epochs, grace, factor)  # raylm's reading of Ray's rungs
        for hand_set in [g for g in (1, 2, 3) if g <= epochs + 1]:  # a tune.grace_period set by hand (warned on the last epoch)
            ray_rungs = ASHAScheduler(time_attr="training_iteration", metric="a", mode="max", max_t=epochs + 1,
                                      grace_period=hand_set, reduction_factor=factor)._brackets[0]._rungs
            assert sorted(math.ceil(r - 1e-9) for r, _ in ray_rungs) == asha_decided_at(epochs, hand_set, factor)
        assert epochs not in decided_at, (epochs, factor, decided_at)
        assert all(at <= epochs - 1 or at == epochs + 1 for at in decided_at), (epochs, factor, decided_at)
        if epochs >= 2 * factor:  # room for early stopping: a rung before the last epoch
            assert min(decided_at) <= epochs - 1


# ------------------------------------------------------------------ real sweeps


@pytest.mark.integration
def test_concurrency_is_what_the_cluster_holds(ray_local, tiny_config):
    from raylm.tune.sweep import concurrency

    space = "tune.space={train.lr: {choice: [0.01]}}"
    # 2 CPUs: one stays for Ray Data; a one-worker trial trains in its own actor and takes its 0.5.
    assert concurrency(tiny_config("image", space, "train.num_workers=1")) == 2
    with pytest.raises(ConfigError, match="tune.max_concurrent_trials=3: each trial takes .* fit 2 at once"):
        concurrency(tiny_config("image", space, "train.num_workers=1", "tune.max_concurrent_trials=3"))
    # A Keras trial keeps Train's worker group: a 0.25-CPU driver + 1 x 0.5.
    assert concurrency(tiny_config("image", space, "train.num_workers=1", "model.backend=keras")) == 1
    with pytest.raises(ConfigError, match="one trial needs 2.25 CPUs"):
        concurrency(tiny_config("image", space, "train.num_workers=2", "train.cpus_per_worker=1"))
    # GPU workers the autoscaler has not started yet: not counted against the sweep ...
    from raylm.capacity import Capacity, CapacityError, NodeType, read_capacity

    gpu_type = NodeType("gpu", {"CPU": 8.0, "GPU": 1.0}, max_workers=4)
    grows = Capacity(nodes_up=read_capacity().nodes_up, node_types=[gpu_type], autoscaler=True)
    assert concurrency(tiny_config("image", space, "train.use_gpu=true", "tune.max_concurrent_trials=2"), grows) == 2
    # ... but with no GPU and none to add (this machine), a GPU sweep is refused like `raylm train`: it said
    # "leaving the GPU workers to the autoscaler" on a cluster without one, and every trial failed.
    with pytest.raises(CapacityError, match="train.use_gpu=true: this cluster has no GPU and no GPU node type to add"):
        concurrency(tiny_config("image", space, "train.use_gpu=true", "tune.max_concurrent_trials=2"))


@pytest.mark.integration
def test_asha_sweep_stops_weak_trials_and_exports_the_best(ray_local, tiny_config):
    from raylm.tune import sweep

    cfg = tiny_config("image", *_SWEEP, "tune.space={train.lr: {grid: [0.01, 1.0e-7]}}", "tune.num_samples=2",
                      "tune.scheduler=asha", "tune.export=best", "tune.measure_on=trial")
    result = sweep(cfg, verbose=False)

    statuses = [r["status"] for r in result.rows]
    assert statuses.count("completed") >= 1 and "error" not in statuses, result.rows
    stopped = [r for r in result.rows if r["status"] == "stopped"]
    assert stopped, f"ASHA stopped no trial: {result.rows}"
    assert all(r["epochs"] < cfg.train.epochs and r["params"]["train.lr"] == 1e-7 for r in stopped)
    assert result.best["params"]["train.lr"] == 0.01
    # tune.measure_on=trial: measured where each trial ran (one machine here), and recorded.
    measured = [r["measured_on"] for r in result.rows if r["status"] == "completed"]
    assert measured and all(m["place"] == "trial" and m["cpu"] for m in measured)
    assert all(r["trial_latency_ms"] is None for r in result.rows)

    tune_dir = result.tune_dir
    # One trial at a time, in grid order (good, weak, good, weak): a stopped trial hands its actor to
    # the next one as a finished one does, so no stop costs a new process (and torch imported again).
    pids = {json.loads(log.read_text().splitlines()[-1])["pid"] for log in tune_dir.glob("*/result.json")}
    assert len(pids) == 1, f"{len(pids)} trial actors for 4 trials, one at a time: a stop did not reuse its actor"
    assert {"trials.csv", "trials.json", "pareto.png"} <= {p.name for p in tune_dir.iterdir()}
    assert list(tune_dir.glob("*/events.out.tfevents.*")), "no TensorBoard logs"
    # raylm's report reads result.json; Tune's progress.csv, which nothing reads, is not written.
    assert len(list(tune_dir.glob("*/result.json"))) == 4 and not list(tune_dir.glob("*/progress.csv"))
    assert len(json.loads((tune_dir / "trials.json").read_text())["trials"]) == 4

    exported = result.exported["tune-best"]
    assert exported == cfg.run_dir / "compress" / "tune-best"
    # Scored here on the validation split, not on noise: it learned, and it is the model the row describes.
    accuracy, samples = validation_accuracy(cfg, exported)
    assert_beats_chance(accuracy, samples)
    assert abs(accuracy - result.best["accuracy"]) <= 1 / samples + 1e-9


@pytest.mark.integration
def test_multi_objective_sweep_returns_a_non_dominated_front(ray_local, tiny_config):
    from raylm.artifacts import load_artifact
    from raylm.tune import sweep

    cfg = tiny_config("image", *_SWEEP, "train.epochs=2", "compress.prune.method=magnitude",
                      "tune.space={compress.prune.sparsity: {choice: [0.0, 0.9]}, compress.quantize.mode: {choice: [none, dynamic]}}",
                      "tune.search=optuna", "tune.num_samples=3", "tune.objectives=[accuracy, latency_ms, size_mb]",
                      "tune.export=pareto", "tune.measure_on=driver")
    result = sweep(cfg, verbose=False)

    assert [r["status"] for r in result.rows].count("completed") == 3, result.rows
    assert result.front
    for row in result.rows:  # every trial measured its own dense model beside its compressed one
        assert row["dense_accuracy"] is not None and row["size_ratio"] > 0 and isinstance(row["gain"], bool)
        if row["params"]["compress.prune.sparsity"] == 0.0 and row["params"]["compress.quantize.mode"] == "none":
            assert row["gain"] is False and row not in result.front  # the dense model again: no gain
    # The front against one computed here by comparing every pair of points (not raylm's own candidates()).
    assert front_points(result.front) == brute_force_front(result.rows, result.objectives), result.rows
    # tune.measure_on=driver: one probe on the driver's node timed every trial's models.
    import ray

    (place,) = {json.dumps(r["measured_on"], sort_keys=True) for r in result.rows}
    place = json.loads(place)
    assert place["place"] == "driver" and place["node_id"] == ray.get_runtime_context().get_node_id()
    assert place["cpu"] and place["device"] == "cpu"
    assert all(r["latency_ms"] > 0 and r["dense_latency_ms"] > 0 and r["trial_latency_ms"] > 0 for r in result.rows)
    recorded = json.loads((result.tune_dir / "trials.json").read_text())
    assert recorded["pareto_front"] == [r["trial_id"] for r in result.front]
    assert {json.dumps(r["measured_on"], sort_keys=True) for r in recorded["trials"]} == {json.dumps(place, sort_keys=True)}
    assert len(result.exported) == len(result.front)
    for path in result.exported.values():  # each export scores on the validation split what its row claims
        assert load_artifact(path).meta["labels"] == ["horizontal", "vertical"]
        claimed = json.loads((path / "tune_trial.json").read_text())["accuracy"]
        accuracy, samples = validation_accuracy(cfg, path)
        assert abs(accuracy - claimed) <= 1 / samples + 1e-9, (path.name, accuracy, claimed)


def _measured_row(trial_id: str, accuracy: float, latency_ms: float, cpu: str) -> dict:
    return {"trial_id": trial_id, "status": "completed", "params": {}, "accuracy": accuracy, "latency_ms": latency_ms,
            "size_mb": 1.0, "kind": "compressed", "measured_on": {"place": "trial", "node_id": cpu, "node_ip": "10.0.0.1",
                                                                 "cpu": cpu, "logical_cpus": 8, "device": "cpu"}}


def test_a_front_never_ranks_latencies_measured_on_different_hardware():
    from raylm.tune.results import MixedHardwareError, best_row, fronts_by_hardware, pareto_front

    # A GPU node's fast CPU would put trial b ahead of a on latency: a comparison of machines.
    rows = [_measured_row("a", 0.9, 5.0, "Intel Xeon Platinum 8375C"), _measured_row("b", 0.9, 2.0, "AMD EPYC 7R32"),
            _measured_row("c", 0.8, 9.0, "Intel Xeon Platinum 8375C")]
    objectives = ["accuracy", "latency_ms"]
    with pytest.raises(MixedHardwareError, match=r"tune\.measure_on: .* 2 kinds of hardware .*AMD EPYC 7R32"):
        pareto_front(rows, objectives)
    with pytest.raises(MixedHardwareError):
        best_row(rows, objectives)
    # Split: each hardware its own front (a dominates c on the Xeon; b alone on the EPYC).
    assert sorted(r["trial_id"] for r in fronts_by_hardware(rows, objectives)) == ["a", "b"]
    # Without latency among the objectives there is nothing hardware-bound to compare.
    assert {r["trial_id"] for r in pareto_front(rows, ["accuracy"])} == {"a", "b"}
    # One hardware: ranked as before.
    same = [_measured_row("a", 0.9, 5.0, "x"), _measured_row("b", 0.9, 2.0, "x")]
    assert [r["trial_id"] for r in pareto_front(same, objectives)] == ["b"]


def test_measure_on_is_refused_naming_the_key(ray_local, tiny_config):
    from raylm.tune.measure_on import start_probe

    with pytest.raises(ConfigError, match="tune.measure_on"):
        tiny_config("image", "tune.measure_on=two words")
    with pytest.raises(ConfigError, match=r"tune\.measure_on=serving_node: no node has a resource named 'serving_node'"):
        start_probe(tiny_config("image", "tune.measure_on=serving_node"))


@pytest.mark.faults  # the sweep driver killed: the fault tier (budget, #27)
@pytest.mark.integration
def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(ray_local, tiny_config, tmp_path):
    import ray

    from raylm.tune import sweep

    # Six trials of eight epochs, two at a time: the driver, frozen when the first finishes, starts no
    # other, so some are still unfinished when Ctrl-C lands.
    cfg = tiny_config("image", *_SWEEP, "train.epochs=8", "tune.space={train.lr: {grid: [0.01, 0.005, 0.002]}}",
                      "tune.num_samples=2", "tune.max_concurrent_trials=2", "tune.export=none", "train.name=interrupted")
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    trials = cfg.run_dir / "tune" / "trials"
    # A second driver on the test's cluster, interrupted (Ctrl-C) once its first trial finished.
    # TUNE_GLOBAL_CHECKPOINT_S=0: Tune syncs its experiment (each trial's result.json, polled below) at
    # every step, not every few seconds; with the default the first finished trial showed up only after
    # all six had finished.
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address, TUNE_GLOBAL_CHECKPOINT_S="0")
    proc = subprocess.Popen([sys.executable, "-m", "raylm.cli", "tune", "--config", str(path)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not _finished_trials(cfg.run_dir / "tune"):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.1)
        # Frozen first, then Ctrl-C: the driver cannot start (or finish) another trial in between.
        freeze(proc)
        rc = signal_frozen(proc, signal.SIGINT, timeout_s=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Recorded as interrupted, with the command that continues it (Tune returns from a Ctrl-C as if done).
    stderr, stdout = proc.stderr.read(), proc.stdout.read()
    assert rc == 130 and f"continue it with: raylm tune --resume {cfg.run_dir}" in stderr, stderr[-3000:]
    assert "[sweep] stopped after" in stdout + stderr and "[sweep] done in" not in stdout + stderr, stdout[-3000:]
    assert json.loads((cfg.run_dir / "logs" / "status.json").read_text())["state"] == "interrupted"
    assert not (cfg.run_dir / "tune" / "trials.csv").exists()  # no table from an unfinished sweep
    finished = {t: (trials / t / "raylm_trial.json").stat().st_mtime_ns for t in _finished_trials(cfg.run_dir / "tune")}
    assert 1 <= len(finished) < 6

    result = sweep(resume=cfg.run_dir, verbose=False)
    assert [r["status"] for r in result.rows] == ["completed"] * 6, result.rows
    for trial_id, mtime in finished.items():  # kept, not trained again
        assert (trials / trial_id / "raylm_trial.json").stat().st_mtime_ns == mtime
        assert len([p for p in (trials / trial_id / "train").glob("checkpoint_*") if p.is_dir()]) in (2, 3)  # two best (+ the latest)
    assert {r["params"]["train.lr"] for r in result.rows} == {0.01, 0.005, 0.002}


@pytest.mark.integration
def test_a_reused_trial_actor_trains_like_a_fresh_one(ray_local, tiny_config):
    """Trials 1 and 3 share a config; trial 3 runs in the actor trial 2 used (same pid). A reused actor
    that kept any training state (Train's report handler, its last checkpoint, data iterators) would
    resume, fail or train differently; a clean one gives trial 1's model. One batch per epoch (the
    whole train split): Ray Data's block order, which varies from run to run, then changes only the
    float summation order of the gradient, not the weights beyond rounding."""
    from safetensors.numpy import load_file

    from raylm.tune import sweep

    cfg = tiny_config("image", *_SWEEP, "train.epochs=2", "train.batch_size=256", "data.materialize=true", "tune.scheduler=fifo",
                      "tune.space={train.lr: {grid: [0.01, 0.002, 0.01]}}", "tune.num_samples=1", "tune.export=none")
    result = sweep(cfg, verbose=False)
    assert [r["status"] for r in result.rows] == ["completed"] * 3, result.rows

    finals = {}
    for log in result.tune_dir.glob("*/result.json"):
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        finals[lines[-1]["trial_id"]] = lines[-1]
    order = sorted(finals)  # trial ids count up in the order Tune started them
    assert len({finals[t]["pid"] for t in order}) == 1, "the trials did not share one actor"
    first, _, third = (finals[t] for t in order)
    assert first["config"] == third["config"] == {"train.lr": 0.01}
    assert first["epochs"] == third["epochs"] == 2
    # Weights equal to 1e-4 (summation order): only a sample whose logit margin is below that could flip,
    # so the two accuracies may differ by one validation sample, not more (61 of them, tests/helpers/oracles.py).
    assert abs(first["val_accuracy"] - third["val_accuracy"]) <= 1 / 61 + 1e-9
    assert abs(first["accuracy"] - third["accuracy"]) <= 1 / 61 + 1e-9
    weights = [load_file(str(Path(f["checkpoint"]) / "model.safetensors")) for f in (first, third)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        np.testing.assert_allclose(weights[0][name], weights[1][name], rtol=0, atol=1e-4, err_msg=name)


def test_the_pipeline_shows_the_saved_sweep_table_after_the_tune_stage(tmp_path):
    """``console`` sits below ``tune``: the pipeline hands the console the sweep's table to show."""
    import io
    from functools import partial

    from raylm import console
    from raylm.tune.results import sweep_table, write_results

    rows = [{"trial_id": f"t{i}", "params": {"train.lr": lr}, "status": "completed", "epochs": 2,
             "val_accuracy": acc, "accuracy": acc, "latency_ms": 1.0, "size_mb": 0.5, "kind": "compressed"}
            for i, (lr, acc) in enumerate([(0.01, 0.91), (0.001, 0.42)])]
    write_results(tmp_path, rows, rows[:1], rows[0], ["accuracy"])
    table = sweep_table(tmp_path)
    assert "t0" in table and "t1" in table and "best" in table.splitlines()[1]
    out = io.StringIO()
    console.start(out, io.StringIO(), live=False)
    try:
        with console.pipeline_stage("tune", None, {}, table=partial(sweep_table, tmp_path)) as done:
            done({})
    finally:
        console.stop()  # and its warning handler: later tests' raylm warnings go to their own stderr
    assert table in out.getvalue()
    assert sweep_table(tmp_path / "missing") == ""


@pytest.mark.integration
def test_measure_on_auto_times_in_the_trial_on_one_node_that_cannot_grow(ray_local, tiny_config):
    """auto: on one node with no autoscaler every place is the same hardware, so no probe is started."""
    from raylm.tune.measure_on import start_probe

    assert start_probe(tiny_config("image", "tune.measure_on=auto")) is None
