"""The Keras backend: TensorflowTrainer runs on a real local Ray, tfmot compression, TFLite export.

TensorFlow starts slowly, so the trained checkpoints are made once per module and shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from raylm.config import load_config  # noqa: E402
from tests.helpers.configs import shared_cache_dir  # noqa: E402
from tests.helpers.oracles import assert_beats_chance  # noqa: E402
from tests.helpers.ports import free_port  # noqa: E402

pytestmark = pytest.mark.integration

KERAS_MODELS = [
    pytest.param("image", "seed_cnn", marks=pytest.mark.slow),  # ~40 s; the served Keras artifact is trained by TensorflowTrainer
    # The same Ray Train path again (~50 s each); opt-in to keep the default suite short.
    pytest.param("audio", "seed_conv1d", marks=pytest.mark.slow),
    pytest.param("image", "seed_mlp", marks=pytest.mark.slow),
]


def _keras_config(data_root, root, modality: str, name: str, *overrides: str):
    return load_config(None, [
        f"task.modality={modality}", f"model.name={name}", "model.backend=keras",
        f"data.path={data_root[modality]}", "data.validation_fraction=0.3", f"data.cache_dir={shared_cache_dir(data_root, modality)}",
        "data.audio.sample_rate=8000", "data.audio.clip_seconds=0.5", "data.audio.hop_length=128",
        f"train.storage_path={root / 'runs'}", "train.epochs=1", "train.batch_size=8", "train.num_workers=2",
        "train.cpus_per_worker=0.5", "train.lr=0.005", f"train.name={modality}-{name}",
        "compress.prune.method=magnitude", "compress.prune.sparsity=0.8", "compress.quantize.mode=static",
        "compress.finetune_epochs=2", "compress.quantize.calibration_samples=16",
        *overrides,
    ])


class _Trained:
    """One epoch under TensorflowTrainer (2 workers) per model, run on first use and shared."""

    def __init__(self, data_root, root) -> None:
        self.data_root, self.root, self._runs = data_root, root, {}

    def __call__(self, modality: str, name: str):
        from raylm.train import fit

        if name not in self._runs:
            cfg = _keras_config(self.data_root, self.root, modality, name)
            self._runs[name] = (cfg, fit(cfg))
        return self._runs[name]


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    from raylm.runtime import ensure_ray

    ensure_ray(num_cpus=2, configure_logging=False)
    return _Trained(data_root, tmp_path_factory.mktemp("keras"))


@pytest.mark.parametrize("modality, name", KERAS_MODELS)
def test_the_articles_keras_models_train_an_epoch_with_two_workers(trained, modality, name):
    from raylm.train.checkpoint import read_meta

    _, outcome = trained(modality, name)
    assert set(outcome.metrics) >= {"epoch", "train_loss", "val_loss", "val_accuracy"}
    assert outcome.metrics["epoch"] == 1 and np.isfinite(outcome.metrics["train_loss"])
    assert sorted(os.listdir(outcome.checkpoint)) == ["model.weights.h5", "optimizer.npz", "raylm.json"]
    meta = read_meta(outcome.checkpoint)
    assert meta["config"]["model"]["backend"] == "keras" and meta["epoch"] == 1
    if name == "seed_cnn":  # bars vs stripes: the CNN separates them within an epoch
        # Keras' evaluate() reports no count: the split's size, by raylm's own stable split of the files.
        from raylm.data.files import split_files

        root = trained.data_root["image"]
        held_out = split_files(sorted(str(p) for p in root.glob("*/*.png")), str(root), 0.3)[1]
        assert_beats_chance(outcome.metrics["val_accuracy"], len(held_out))


@pytest.mark.slow  # ~40 s; Keras training and serving stay
def test_keras_checkpoint_reloads_and_resumes(trained, data_root):
    from raylm.train import fit
    from raylm.train.keras_loop import load_keras_checkpoint

    _, first = trained("audio", "seed_conv1d")
    loaded = load_keras_checkpoint(first.checkpoint)
    assert loaded.labels == first.labels and loaded.model.output_shape == (None, 2)

    resumed = fit(_keras_config(data_root, trained.root, "audio", "seed_conv1d", "train.epochs=2",
                                "train.name=resumed", f"train.resume_from={first.checkpoint}"))
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert resumed.history[0] == first.history[0]  # epoch 1 came from the checkpoint, not retrained
    assert resumed.metrics["step"] > first.metrics["step"]  # the optimizer's step counter was restored


@pytest.mark.slow  # ~1 min of Keras training; the cadence rule itself is a default unit case (test_fast_defaults.py)
def test_keras_checkpoint_every_keeps_the_best_and_the_last_only(trained, data_root):
    """``train.checkpoint_every`` in the Keras loop as in the torch one. lr 1e-9 leaves the weights as
    they are, so val_accuracy never improves after epoch 1: with a cadence of 10, only epoch 1 (the first
    best) and epoch 4 (the last) may be written."""
    import json

    from raylm.train import fit
    from raylm.train.loop import checkpoint_due

    cfg = _keras_config(data_root, trained.root, "audio", "seed_conv1d", "train.epochs=4", "train.lr=1e-9",
                        "train.checkpoint_every=10", "train.keep_checkpoints=10", "train.name=cadence")
    outcome = fit(cfg)
    written = sorted(json.loads(p.read_text())["epoch"] for p in (cfg.run_dir / "train").glob("checkpoint_*/raylm.json"))
    due = [row["epoch"] for i, row in enumerate(outcome.history) if checkpoint_due(cfg.train, outcome.history[:i + 1])]
    assert written == due == [1, 4], (written, [(row["val_accuracy"], row["val_loss"]) for row in outcome.history])
    assert [row["epoch"] for row in outcome.history] == [1, 2, 3, 4]  # every epoch still reported


def _fast_measure(cfg, runs: int):
    from raylm.config import validate_config

    tree = cfg.to_dict()
    tree["compress"].update(latency_runs=runs, latency_warmup=1, serving_batch_size=4)
    return validate_config(tree)


@pytest.fixture(scope="module")
def compressed(trained):
    from raylm.compress.keras import compress_keras_checkpoint

    cfg, outcome = trained("image", "seed_cnn")
    return compress_keras_checkpoint(_fast_measure(cfg, 20), outcome.checkpoint)


def test_pruning_reaches_the_requested_sparsity_after_strip(compressed):
    assert compressed.sparsity == pytest.approx(0.8, abs=0.02)
    pruned = next(row for row in compressed.report if row["variant"] == "pruned")
    dense = compressed.report[0]
    assert pruned["file_bytes"] == pytest.approx(dense["file_bytes"], rel=0.05)  # zeros are still stored...
    assert pruned["gzip_bytes"] < 0.6 * dense["gzip_bytes"]  # ...and compress away


def test_the_compress_table_shows_every_keras_variant(compressed):
    """`raylm compress` (and jobs/compress_keras.py, now the same verb) prints dense, pruned and int8 rows."""
    from raylm.compress.pipeline import summary_text
    from raylm.records import CompressReport

    table = summary_text(CompressReport.model_validate(compressed.summary), 4)
    names = [line.split()[0] for line in table.splitlines()[1:] if line and not line.startswith(("vs dense", "-"))]
    assert names[:3] == ["dense", "pruned", compressed.summary["variant"]], table


def test_int8_tflite_runs_and_agrees_with_keras(compressed):
    from raylm.artifacts import load_artifact

    int8 = compressed.report[-1]
    assert int8["variant"] == "int8" and int8["input_dtype"] == "int8" and int8["runtime"] == "tflite-int8"
    assert int8["agreement_with_keras"] >= 0.8
    assert int8["file_bytes"] < 0.5 * compressed.report[0]["file_bytes"]
    assert int8["sparsity"] == pytest.approx(0.8, abs=0.02)  # the prune-preserving QAT kept the zeros

    artifact = load_artifact(compressed.artifact)
    meta = artifact.meta
    assert artifact.runtime == "tflite" and meta["model_file"] == "model.tflite" and meta["inputs"] == ["image"]
    assert meta["report"]["compressed"] == int8 and meta["report"]["dense"] == compressed.report[0]
    assert meta["lineage"]["parent_checkpoint"] and meta["recipe"]["prune"]["sparsity"] == 0.8
    sample = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    assert artifact.predict({"image": sample}).shape == (3, 2)


def test_keras_and_torch_reports_share_one_schema(compressed, tiny_config, ray_local):
    """The same keys, the same latency batches, measured by the same measure() for TFLite and ONNX."""
    from raylm.compress import compress

    torch_cfg = tiny_config("image", "compress.quantize.mode=dynamic", "compress.latency_runs=2",
                            "compress.serving_batch_size=4", "compress.max_eval_samples=8")
    from raylm.models import build_model
    from raylm.train.checkpoint import save_checkpoint_atomic

    parent = save_checkpoint_atomic(torch_cfg.run_dir / "train" / "checkpoint_untrained",
                                    build_model(torch_cfg, 2).eval(), torch_cfg, ["horizontal", "vertical"],
                                    epoch=0, data_fingerprint="test")
    torch_report = compress(torch_cfg, parent, verbose=False)
    keras_report = compressed.summary
    assert set(keras_report) >= set(torch_report)
    for part in ("dense", "compressed"):
        assert set(keras_report[part]) >= set(torch_report[part]) - {"agreement_with_dense"}
        assert set(keras_report[part]["latency"]) == set(torch_report[part]["latency"]) == {"batch_1", "batch_4"}
    assert set(keras_report["ratios"]) == set(torch_report["ratios"])
    assert keras_report["dense"]["runtime"] == "tflite-fp32"


@pytest.mark.slow  # ~1 min; int8 TFLite of the image CNN is served by default
def test_conv1d_compresses_to_int8_although_tfmot_lacks_a_conv1d_config(trained, tmp_path):
    from raylm.compress.keras import compress_keras_checkpoint

    cfg, outcome = trained("audio", "seed_conv1d")
    result = compress_keras_checkpoint(_fast_measure(cfg, 5), outcome.checkpoint, output_dir=tmp_path / "artifact")
    int8 = result.report[-1]
    assert int8["variant"] == "int8" and int8["input_dtype"] == "int8"
    assert result.sparsity == pytest.approx(0.8, abs=0.02)
    assert int8["agreement_with_keras"] >= 0.8


def test_corrupted_artifact_is_a_clear_error(compressed, tmp_path):
    import shutil

    from raylm.artifacts import ArtifactError, load_artifact

    broken = tmp_path / "broken"
    shutil.copytree(compressed.artifact, broken)
    (broken / "artifact.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="artifact.json: corrupted"):
        load_artifact(broken)
    meta = json.loads((compressed.artifact / "artifact.json").read_text())
    (broken / "artifact.json").write_text(json.dumps(meta))
    (broken / "model.tflite").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="model.tflite: (not a loadable TFLite model|corrupted)"):
        load_artifact(broken)  # the checksum catches it
    from raylm.artifacts import write_meta

    write_meta(broken, {k: v for k, v in meta.items() if k not in ("files", "format")})  # re-listed: LiteRT refuses it
    with pytest.raises(ArtifactError, match="model.tflite: corrupted"):
        load_artifact(broken)


def test_unknown_keras_model_names_the_field(data_root, tmp_path):
    from raylm.config import ConfigError

    with pytest.raises(ConfigError, match="model.name.*backend keras.*seed_cnn"):
        _keras_config(data_root, tmp_path, "image", "resnet_small")


def test_a_torch_job_never_imports_tensorflow():
    code = (
        "import sys, raylm, raylm.train, raylm.train.loop\n"
        "from raylm.registry import MODELS\n"
        "from raylm.config import load_config\n"
        "from raylm.models import build_model\n"
        "assert 'seed_mlp' in MODELS.names('image', 'keras')\n"
        "cfg = load_config(None, ['task.modality=image', 'model.name=seed_cnn', 'task.labels=[a,b]', 'data.path=.'])\n"
        "build_model(cfg, 2)\n"
        "assert 'tensorflow' not in sys.modules and 'tf_keras' not in sys.modules, 'TensorFlow was imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_keras_int8_artifact_is_served_over_http(compressed, data_root):
    """``raylm serve`` of a Keras artifact: the TFLite int8 model answers real HTTP, with the labels
    its validation images have (bars vs stripes)."""
    import base64

    import requests
    from ray import serve

    from raylm.data.files import split_files
    from raylm.serve import build_app, load_serve_config

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = build_app([str(compressed.artifact)], load_serve_config(None, [
            "serve.replica_cpus=0.3", "serve.max_replicas=1", "serve.graceful_shutdown_timeout_s=1"]))
        serve.run(app, name="keras", route_prefix="/keras")
        # The validation files only (the split training held out, by raylm's own stable split), in requests
        # of up to 32 images: the served model's accuracy on them, against chance.
        root = data_root["image"]
        files = sorted(str(p) for p in root.glob("*/*.png"))
        _, validation = split_files(files, str(root), 0.3)
        predicted, expected = [], []
        for start in range(0, len(validation), 32):
            chunk = validation[start:start + 32]
            body = {"image": [base64.b64encode(Path(f).read_bytes()).decode() for f in chunk]}
            response = requests.post(f"http://127.0.0.1:{port}/keras/predict", json=body, timeout=60)
            assert response.status_code == 200, response.text
            predicted += [row["label"] for row in response.json()["predictions"]]
            expected += [Path(f).parent.name for f in chunk]
        correct = sum(p == e for p, e in zip(predicted, expected))
        assert_beats_chance(correct / len(expected), len(expected))
        bad = requests.post(f"http://127.0.0.1:{port}/keras/predict", json={"image": "not base64!"}, timeout=60)
        assert bad.status_code == 422 and "image" in bad.text
    finally:
        serve.shutdown()


@pytest.mark.slow  # ~3 min; the default suite serves a Keras int8 artifact over HTTP
def test_keras_pipeline_sweeps_compresses_to_int8_tflite_and_serves(tiny_config):
    """``raylm pipeline`` with ``model.backend: keras`` on tiny settings: a Keras sweep, the retrain,
    tfmot prune + QAT to int8 TFLite, evaluation from the file, and real HTTP to the served model."""
    from ray import serve

    from raylm.pipeline import format_summary, run_pipeline

    port = free_port()
    cfg = tiny_config(
        "image", "model.backend=keras", "train.name=keras-pipe", "train.num_workers=1", "train.epochs=1",
        "tune.space={train.lr: {choice: [0.01, 0.005]}}", "tune.num_samples=2", "tune.max_concurrent_trials=1",
        "tune.export=none", "tune.scheduler=fifo", "tune.objectives=[accuracy, size_mb]",
        "compress.prune.method=magnitude", "compress.prune.sparsity=0.5", "compress.quantize.mode=static",
        "compress.finetune_epochs=1", "compress.finetune_lr=0.005", "compress.quantize.calibration_samples=16",
        "compress.latency_runs=20", "compress.latency_warmup=3", "compress.serving_batch_size=4",
        "pipeline.retrain_epochs=2", "pipeline.retrain_workers=1", "pipeline.max_accuracy_drop=100",
        # int8 TFLite is ~0.3x the size but up to ~2x the float p50 on this tiny CNN: as in
        # keras_image.yaml the gain is size, and the retrain's int8 model is served even if the gate
        # (timing, under load) refuses it (recorded as over budget).
        "compress.gain_tolerance=1", "pipeline.recovery_epochs=0", "pipeline.serve_over_budget=true",
        f"serve.port={port}", "serve.replica_cpus=0.25", "serve.max_replicas=1")
    try:
        swept = run_pipeline(cfg, stop="tune", verbose=False).stages.tune
        assert swept.completed == 2
        # Whether the sweep's own int8 models gain is timing (LiteRT's int8 is slower than float here):
        # as if the sweep had chosen a compressed recipe, the retrain then compresses with the config's
        # recipe (prune 0.5 + int8), which is served (over budget if the gate refuses it, recorded).
        record_path = cfg.run_dir / "pipeline.json"
        saved = json.loads(record_path.read_text())
        saved["stages"]["tune"] |= {"params": {"train.lr": 0.01}, "alternates": []}
        record_path.write_text(json.dumps(saved))
        record = run_pipeline(cfg, start="train", verbose=False)
        stages = record.to_json()["stages"]  # the record as pipeline.json holds it
        assert list(stages) == ["tune", "train", "compress", "evaluate", "serve"]
        compressed = stages["compress"]
        assert compressed["dense"]["runtime"] == "tflite-fp32"  # the reference: the retrain's float TFLite model
        served = compressed["attempts"][-1]
        assert served["passed"] and served["recipe"].endswith("int8-static"), compressed["attempts"]
        assert compressed["size_ratio"] < 0.5  # int8 TFLite against the float TFLite of the same retrain
        from raylm.artifacts import load_artifact

        assert load_artifact(compressed["artifact"]).runtime == "tflite"
        assert_beats_chance(stages["evaluate"]["accuracy"], stages["evaluate"]["samples"])
        smoke = stages["serve"]["smoke"]
        assert smoke["status"] == 200 and smoke["correct"], smoke
        assert "tflite-fp32" in format_summary(record)
    finally:
        serve.shutdown()
