"""The sweep's decisions on made-up rows (raylm/tune/results.py): the front against a brute-force
front, the best row, candidates under a budget, and latencies of different hardware never ranked."""

import numpy as np
import pytest

from raylm.tune.results import (
    MixedHardwareError,
    best_row,
    candidates,
    dense_row,
    describe,
    fronts_by_hardware,
    hardware_key,
    pareto_front,
)
from tests.helpers.tuning import brute_force_front, front_points

CPU = {"place": "trial", "node_id": "n1", "node_ip": "10.0.0.1", "cpu": "Xeon", "logical_cpus": 8, "device": "cpu"}


def _row(trial_id, accuracy, latency_ms, size_mb, *, dense=(0.9, 10.0, 4.0), gain=True, drop=None, status="completed",
         measured_on=CPU):
    return {"trial_id": trial_id, "status": status, "params": {"train.lr": 0.01, "compress.quantize.mode": "dynamic"},
            "accuracy": accuracy, "latency_ms": latency_ms, "size_mb": size_mb, "kind": "compressed",
            "dense_accuracy": dense[0], "dense_latency_ms": dense[1], "dense_size_mb": dense[2], "gain": gain,
            "accuracy_drop_pts": round((dense[0] - accuracy) * 100, 3) if drop is None else drop,
            "measured_on": measured_on}


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("objectives", [["accuracy", "latency_ms"], ["accuracy", "latency_ms", "size_mb"], ["accuracy"]])
def test_the_front_is_the_brute_force_front(seed, objectives):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(int(rng.integers(1, 7))):
        # Values on a coarse grid so that ties (equal on every objective, or on some) happen.
        dense = (rng.integers(5, 10) / 10, float(rng.integers(1, 5)), float(rng.integers(1, 5)))
        rows.append(_row(f"t{i}", rng.integers(5, 10) / 10, float(rng.integers(1, 5)), float(rng.integers(1, 5)),
                         dense=dense, gain=bool(rng.integers(0, 2)), status=["completed", "completed", "stopped"][i % 3]))
    assert front_points(pareto_front(rows, objectives)) == brute_force_front(rows, objectives)


def test_dense_models_and_gaining_compressed_ones_are_the_candidates():
    rows = [_row("a", 0.88, 5.0, 1.0), _row("b", 0.8, 5.0, 1.0, gain=False), _row("c", 0.7, 1.0, 1.0, status="stopped")]
    assert [(r["trial_id"], r["kind"]) for r in candidates(rows)] == [("a-dense", "dense"), ("a", "compressed"),
                                                                        ("b-dense", "dense")]
    # Within a budget of accuracy points against its own dense model: a loses 2 points.
    assert [r["trial_id"] for r in candidates(rows, max_accuracy_drop=2.0)] == ["a-dense", "a", "b-dense"]
    assert [r["trial_id"] for r in candidates(rows, max_accuracy_drop=1.9)] == ["a-dense", "b-dense"]
    legacy = {k: v for k, v in _row("old", 0.8, 2.0, 1.0).items() if not k.startswith("dense_")}
    assert candidates([legacy]) == [legacy]  # recorded before dense references: counts as itself


def test_a_dense_row_is_the_trials_dense_model():
    dense = dense_row(_row("a", 0.8, 5.0, 1.0, dense=(0.9, 10.0, 4.0)))
    assert dense["trial_id"] == "a-dense" and dense["kind"] == "dense" and dense["variant"] == "dense"
    assert (dense["accuracy"], dense["latency_ms"], dense["size_mb"]) == (0.9, 10.0, 4.0)
    assert dense["params"] == {"train.lr": 0.01, "compress.prune.method": "none", "compress.quantize.mode": "none",
                               "compress.distill.method": "none"}  # the dense model: no compression step at all
    assert dense["artifact"] is None and dense["gain"] is None and dense["size_ratio"] == 1.0


def test_the_best_row_is_best_on_the_first_objective_then_the_next():
    rows = [_row("a", 0.9, 5.0, 1.0, dense=(0.9, 9.0, 4.0)), _row("b", 0.8, 1.0, 1.0, dense=(0.85, 8.0, 4.0))]
    assert best_row(rows, ["accuracy", "latency_ms"])["trial_id"] == "a"  # ties a-dense on accuracy, faster
    assert best_row(rows, ["latency_ms", "accuracy"])["trial_id"] == "b"
    assert best_row(rows, ["size_mb", "accuracy"])["trial_id"] == "a"  # 1 MB twice: the more accurate
    assert best_row([_row("x", 0.5, 1, 1, status="stopped")], ["accuracy"]) is None


def test_latencies_of_different_hardware_are_never_ranked():
    other = CPU | {"cpu": "EPYC", "node_ip": "10.0.0.2"}
    rows = [_row("a", 0.9, 5.0, 1.0), _row("b", 0.8, 1.0, 1.0, measured_on=other)]
    with pytest.raises(MixedHardwareError, match=r"measured on 2 kinds of hardware \(2 candidate\(s\) on Xeon x8 cpu "
                                                 r"\(10.0.0.1\); 2 candidate\(s\) on EPYC x8 cpu \(10.0.0.2\)\)"):
        pareto_front(rows, ["accuracy", "latency_ms"])
    with pytest.raises(MixedHardwareError):
        best_row(rows, ["latency_ms"])
    assert {r["trial_id"] for r in pareto_front(rows, ["accuracy", "size_mb"])} == {"a"}  # no latency: comparable
    assert {r["trial_id"] for r in fronts_by_hardware(rows, ["accuracy", "latency_ms"])} == {"a", "b", "b-dense"}
    same_machine_type = CPU | {"node_id": "n2", "node_ip": "10.0.0.9"}
    assert hardware_key(same_machine_type) == hardware_key(CPU) == ("Xeon", 8, "cpu")
    assert hardware_key(None) is None and describe(None) == "unrecorded hardware"


def test_a_dense_row_replaces_every_measured_field_and_keeps_the_rest():
    row = _row("a", 0.8, 5.0, 1.0, dense=(0.9, 10.0, 4.0)) | {
        "size_ratio": 0.25, "latency_ratio": 0.5, "gain_reason": "4x smaller", "artifact": "/runs/a/int8",
        "variant": "int8", "checkpoint": "/runs/a/ckpt"}
    assert dense_row(row) == {
        **row, "trial_id": "a-dense", "kind": "dense",
        "params": {"train.lr": 0.01, "compress.distill.method": "none", "compress.prune.method": "none",
                   "compress.quantize.mode": "none"},
        "accuracy": 0.9, "size_mb": 4.0, "latency_ms": 10.0, "accuracy_drop_pts": 0.0, "size_ratio": 1.0,
        "latency_ratio": 1.0, "gain": None, "gain_reason": "dense reference", "artifact": None, "variant": "dense"}
    assert row["trial_id"] == "a" and row["kind"] == "compressed"  # the trial's own row is not changed


def test_the_refusal_names_each_hardware_and_its_distinct_candidates():
    other = CPU | {"cpu": "EPYC", "logical_cpus": 4, "node_ip": "10.0.0.2"}
    rows = [_row("a", 0.9, 5.0, 1.0), _row("b", 0.8, 1.0, 1.0, gain=False, measured_on=other),
            _row("c", 0.8, 1.0, 1.0, measured_on=other)]
    with pytest.raises(MixedHardwareError) as err:
        best_row(rows, ["accuracy", "latency_ms"])
    assert str(err.value) == (
        "tune.measure_on: the sweep's latencies were measured on 2 kinds of hardware (2 candidate(s) on Xeon x8 cpu "
        "(10.0.0.1); 3 candidate(s) on EPYC x4 cpu (10.0.0.2)); a front ranking them would rank machines, not "
        "models. trials.json keeps a front per hardware; sweep again with tune.measure_on=driver or a custom "
        "resource, or drop latency_ms from tune.objectives")
    # One hardware, or no latency among the objectives: ranked.
    assert best_row(rows[:1], ["accuracy", "latency_ms"])["trial_id"] == "a"  # as accurate as a-dense, faster
    assert best_row(rows, ["accuracy", "size_mb"])["trial_id"] == "a"


def test_a_point_dominates_only_when_no_worse_anywhere_and_better_somewhere():
    from raylm.tune.results import _dominates

    a = {"accuracy": 0.9, "latency_ms": 2.0, "size_mb": 1.0}
    assert _dominates(a, a | {"accuracy": 0.8}, ["accuracy", "latency_ms"])
    assert _dominates(a, a | {"latency_ms": 3.0}, ["accuracy", "latency_ms"])
    assert not _dominates(a, a, ["accuracy", "latency_ms"])  # equal everywhere: neither dominates
    assert not _dominates(a, a | {"accuracy": 0.95, "latency_ms": 3.0}, ["accuracy", "latency_ms"])
    assert not _dominates(a | {"size_mb": 2.0}, a, ["accuracy", "size_mb"])
    assert _dominates(a, a | {"size_mb": 2.0}, ["size_mb"])


# Aimed at the survivors of benchmarks/mutation.sh raylm/tune/results.py (docs/testing.md names them).


def test_a_dense_row_drops_every_compression_param_not_only_the_three_methods():
    row = _row("a", 0.8, 5.0, 1.0)
    row["params"] |= {"compress.prune.sparsity": 0.9, "compress.finetune_epochs": 2, "augment.image.rotate_p": 0.3}
    assert dense_row(row)["params"] == {"train.lr": 0.01, "augment.image.rotate_p": 0.3, "compress.distill.method": "none",
                                        "compress.prune.method": "none", "compress.quantize.mode": "none"}


def test_a_trial_that_did_not_complete_is_skipped_not_the_end_of_the_rows():
    rows = [_row("stopped", 0.9, 1.0, 1.0, status="stopped"), _row("a", 0.88, 5.0, 1.0)]
    assert [r["trial_id"] for r in candidates(rows)] == ["a-dense", "a"]


def test_a_hardware_with_a_single_candidate_is_named_too():
    other = CPU | {"cpu": "EPYC", "node_ip": "10.0.0.2"}
    rows = [_row("a", 0.9, 5.0, 1.0), _row("b", 0.8, 1.0, 1.0, gain=False, measured_on=other)]  # b: its dense model only
    with pytest.raises(MixedHardwareError, match=r"\(2 candidate\(s\) on Xeon x8 cpu \(10.0.0.1\); 1 candidate\(s\) on "
                                                 r"EPYC x8 cpu \(10.0.0.2\)\)"):
        pareto_front(rows, ["accuracy", "latency_ms"])


def test_a_row_recorded_before_dense_references_is_not_the_end_of_the_rows():
    legacy = {k: v for k, v in _row("old", 0.8, 2.0, 1.0).items() if not k.startswith("dense_")}
    assert [r["trial_id"] for r in candidates([legacy, _row("a", 0.88, 5.0, 1.0)])] == ["old", "a-dense", "a"]


def test_the_saved_table_marks_a_dense_row_on_the_front_and_as_the_best(tmp_path):
    """trials.json lists compressed rows only; its front and best may name "<trial>-dense" (stop 42: never marked)."""
    from raylm.tune.results import sweep_table, write_results

    rows = [_row("t0", 0.85, 5.0, 1.0, gain=False) | {"epochs": 2, "val_accuracy": 0.9, "size_ratio": 0.25, "latency_ratio": 0.5},
            _row("t1", 0.80, 4.0, 1.0) | {"epochs": 2, "val_accuracy": 0.8, "size_ratio": 0.25, "latency_ratio": 0.4}]
    dense = dense_row(rows[0])
    write_results(tmp_path, rows, [dense, rows[1]], dense, ["accuracy", "latency_ms"])
    marks = {line.split()[0]: line for line in sweep_table(tmp_path).splitlines()[1:]}
    assert marks["t0-dense"].endswith("* best") and marks["t1"].endswith("*")
    assert not marks["t0"].endswith("*") and not marks["t1-dense"].endswith("*")
    # trials.csv lists the same candidates, marked the same (a dense best had no line there: a new user's find)
    import csv

    with open(tmp_path / "trials.csv", newline="") as f:
        listed = {row["trial_id"]: row for row in csv.DictReader(f)}
    assert {k: (v["kind"], v["pareto"]) for k, v in listed.items()} == {
        "t0": ("compressed", "False"), "t1": ("compressed", "True"), "t0-dense": ("dense", "True"),
        "t1-dense": ("dense", "False")}
    assert listed["t0-dense"]["compress.quantize.mode"] == "none"
