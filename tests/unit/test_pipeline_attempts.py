"""The compress stage's attempts, in order (raylm.pipeline._recipes): what a pipeline tries after the
accuracy guard refused the chosen recipe. The guard's verdict itself is in tests/unit/test_records.py;
the integration tests run the loop with real models (a pipeline whose first attempt passes)."""

from __future__ import annotations

from raylm.compress import variant_name
from raylm.pipeline import _recipes
from raylm.records import PipelineRecord
from raylm.records.pipeline import Alternate, Stages, SweepMeasurement, TuneStage

MAGNITUDE = {"train.lr": 0.01, "compress.prune.method": "magnitude", "compress.prune.sparsity": 0.9,
             "compress.prune.scope": "layer", "compress.quantize.mode": "none"}
STRUCTURED = {"train.lr": 0.02, "compress.prune.method": "structured", "compress.prune.structured_ratio": 0.5,
              "compress.quantize.mode": "none"}
DENSE = {"train.lr": 0.03, "compress.prune.method": "none", "compress.quantize.mode": "none"}


def _record(chosen: dict, *alternates: dict) -> PipelineRecord:
    tune = TuneStage(tune_dir="/r/tune", trials=4, completed=4, pareto_front=["a", "b", "c", "d"], chosen="a",
                     params=chosen, sweep_measurement=SweepMeasurement(accuracy=0.9),
                     alternates=[Alternate(trial_id=t, params=p) for t, p in zip("bcd", alternates)])
    return PipelineRecord(stages=Stages(tune=tune))


def test_the_attempts_go_chosen_recovery_front_then_dense_each_recipe_once(tiny_config):
    """A pruned choice without fine-tune epochs trains pipeline.prune_epochs around its mask; if the guard
    refuses it, a recovery fine-tune (+pipeline.recovery_epochs), then the other front members (a recipe
    already tried is not tried again, a dense member waits for the end), then the dense model; every
    attempt keeps the chosen point's hyperparameters."""
    cfg = tiny_config("image", "pipeline.prune_epochs=1", "pipeline.recovery_epochs=2", "compress.finetune_epochs=0")
    attempts = _recipes(cfg, _record(MAGNITUDE, DENSE, MAGNITUDE, STRUCTURED))
    assert [label for label, _ in attempts] == ["chosen a", "recovery fine-tune (+2 ep)", "front d", "dense"]
    chosen, recovery, front, dense = (candidate for _, candidate in attempts)
    assert (chosen.compress.prune.method, chosen.compress.prune.sparsity, chosen.compress.finetune_epochs) == ("magnitude", 0.9, 1)
    assert recovery.compress.finetune_epochs == 3 and recovery.compress.prune.sparsity == 0.9
    assert front.compress.prune.method == "structured" and front.train.lr == 0.02  # a member's own point
    assert variant_name(dense) == "fp32" and dense.compress.prune.method == "none"
    assert chosen.train.lr == recovery.train.lr == dense.train.lr == 0.01  # the chosen point's, not the base config's


def test_a_dense_choice_is_tried_once_as_the_last_resort(tiny_config):
    cfg = tiny_config("image", "pipeline.recovery_epochs=2")
    attempts = _recipes(cfg, _record(DENSE, STRUCTURED))
    assert [label for label, _ in attempts] == ["front b", "dense"]
    assert attempts[-1][1].train.lr == 0.03


def test_after_the_front_each_quantizer_is_tried_alone_on_the_dense_model(tiny_config):
    """Pruned recipes that all miss the guard: before the dense fp32 model, each quantize mode they used
    (chosen first, each once) on the dense model at the chosen point (nothing pruned or distilled)."""
    static = MAGNITUDE | {"compress.quantize.mode": "static-selective"}
    dynamic = STRUCTURED | {"compress.quantize.mode": "dynamic"}
    cfg = tiny_config("image", "pipeline.recovery_epochs=0")
    attempts = _recipes(cfg, _record(static, dynamic, static | {"compress.prune.sparsity": 0.8}))
    assert [label for label, _ in attempts] == [
        "chosen a", "front b", "front c", "static-selective alone (dense, not pruned)",
        "dynamic alone (dense, not pruned)", "dense"]
    for (_, candidate), mode in zip(attempts[3:5], ["static-selective", "dynamic"]):
        assert (candidate.compress.quantize.mode, candidate.compress.prune.method) == (mode, "none")
        assert candidate.compress.distill.method == "none" and candidate.train.lr == 0.01
