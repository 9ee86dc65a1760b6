"""The text moonshot recipe through ``compress()`` on real Ray: the training split's vocabulary, a
distilled student (fewer layers, narrower FFN), dynamic int8, one ONNX file the unchanged tokenizer feeds."""

from __future__ import annotations

import pytest

from tests.helpers.models import fit


@pytest.mark.integration
# Opt-in as its image sibling in test_compress_fast.py: a nice'd Ray start at load average 60-100 is slow.
@pytest.mark.slow
def test_vocabulary_student_int8_is_a_tenth_of_the_dense_model(ray_local, tiny_config, caplog):
    from raylm.compress import compress, load_artifact
    from raylm.compress.measure import collect
    from raylm.data import build_datasets
    from raylm.models import build_model
    from raylm.train.checkpoint import save_checkpoint_atomic

    base = ("model.kwargs={num_hidden_layers: 4, intermediate_size: 64}",)
    cfg = tiny_config("text", *base)
    data = build_datasets(cfg)
    rows = collect(data.train, ("input_ids", "attention_mask", "label"))
    teacher = fit(build_model(cfg, len(data.labels)), rows, ("input_ids", "attention_mask"), epochs=6, batch_size=16)
    checkpoint = save_checkpoint_atomic(cfg.run_dir / "train" / "checkpoint_inproc", teacher, cfg, data.labels,
                                        epoch=6, data_fingerprint=data.fingerprint)
    caplog.set_level("WARNING", logger="raylm")
    report = compress(tiny_config("text", *base, "compress.vocabulary=train", "compress.distill.method=distill",
                                  "compress.distill.layers=0.5", "compress.distill.epochs=4",
                                  "compress.quantize.mode=dynamic", "compress.latency_runs=3",
                                  "compress.latency_warmup=1", "compress.serving_batch_size=4"),
                      checkpoint, verbose=False)
    assert report["variant"] == "vocabtrain-distill50-layers50-int8-dynamic"
    dense, student = report["dense"], report["compressed"]
    # bert_tiny's 30k x 32 embedding is ~90 % of its weights: the kept rows are the tiny split's tokens.
    assert report["ratios"]["size_ratio"] < 0.1
    assert student["params"] < 0.1 * dense["params"]
    assert student["accuracy"] >= dense["accuracy"] - 0.15 and dense["accuracy"] > 0.5
    artifact = load_artifact(report["artifact"])
    val = collect(data.validation, ("input_ids", "attention_mask", "label"))
    preds = artifact.predict({k: val[k] for k in ("input_ids", "attention_mask")}).argmax(-1)
    assert (preds == val["label"]).mean() == pytest.approx(student["accuracy"], abs=1e-6)
    assert artifact.meta["recipe"]["vocabulary"] == "train"
    # What the accuracy above cannot show is said, with the share of validation tokens outside the kept ids
    import re

    (said,) = [r.getMessage() for r in caplog.records if "compress.vocabulary=train keeps" in r.getMessage()]
    kept, total, outside = re.search(r"keeps (\d+) of (\d+) token ids .*; ([\d.]+) % of the validation", said).groups()
    assert 0 < int(kept) < int(total) // 10 and 0.0 <= float(outside) < 100.0
