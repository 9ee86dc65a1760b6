"""The root config's own rules (raylm/config/root.py), word for word: the compression methods per
backend and the rules between them, the names a refusal gives, the default run name, the run's
location, a saved config made to run again, and the helpers that build a config tree. Aimed at the
survivors of ``benchmarks/mutation.sh raylm/config/root.py`` (docs/testing.md names them)."""

from __future__ import annotations

import re

import pytest

from raylm.config import ConfigError, RaylmConfig, load_config, parse_overrides
from raylm.config.root import merge, validate_config
from raylm.errors import RaylmError

IMAGE = ["task.modality=image", "model.name=seed_cnn"]
TEXT = ["task.modality=text", "model.name=bert_tiny"]
KERAS = IMAGE + ["model.backend=keras"]


def _refusal(*overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(None, list(overrides))
    head, *lines = str(err.value).split("\n")
    assert head == "invalid raylm config:" and len(lines) == 1, str(err.value)
    return lines[0]


@pytest.mark.parametrize("overrides, line", [
    ([*TEXT, "compress.distill.method=distill", "compress.distill.epochs=0"],
     "  compress.distill.epochs: the distill student is trained: at least 1 epoch"),
    ([*KERAS, "compress.distill.method=distill"],
     "  compress.distill.method: unknown compression method 'distill' for task 'distill' (backend keras); known: none"),
    ([*IMAGE, "compress.quantize.mode=static", "compress.export=safetensors"],
     "  compress.export: int8 models are exported as onnx (set export=onnx or auto)"),
    ([*IMAGE, "compress.vocabulary=train"],
     "  compress.vocabulary: only a torch text model exported as ONNX has its vocabulary shrunk (the id lookup lives in the ONNX graph)"),
    ([*TEXT, "compress.vocabulary=train", "compress.export=safetensors"],
     "  compress.vocabulary: only a torch text model exported as ONNX has its vocabulary shrunk (the id lookup lives in the ONNX graph)"),
    ([*KERAS, "compress.prune.method=magnitude", "compress.prune.sparsity=0.5", "compress.finetune_epochs=0"],
     "  compress.finetune_epochs: keras's magnitude pruning prunes while fine-tuning: at least 1 epoch when it removes weights"),
    ([*KERAS, "compress.export=onnx"],
     "  compress.export: unknown compression method 'onnx' for task 'export' (backend keras); known: tflite"),
])
def test_compression_rules_refuse_in_their_own_words(overrides, line):
    assert _refusal(*overrides) == line


@pytest.mark.parametrize("overrides", [
    [*TEXT, "compress.distill.method=distill", "compress.distill.epochs=1"],  # the least a trained student takes
    [*TEXT, "compress.distill.method=none", "compress.distill.epochs=0"],  # no student: no epochs needed
    [*IMAGE, "compress.quantize.mode=none", "compress.export=safetensors"],  # float: any export
    [*KERAS, "compress.quantize.mode=static", "compress.export=tflite"],  # Keras int8 is TFLite
    [*KERAS, "compress.quantize.mode=static-selective"],
    [*TEXT, "compress.vocabulary=train"],  # export auto: ONNX
    [*TEXT, "compress.vocabulary=train", "compress.export=onnx"],
    [*KERAS, "compress.prune.method=magnitude", "compress.prune.sparsity=0.5", "compress.finetune_epochs=1"],
    [*KERAS, "compress.prune.method=magnitude", "compress.prune.sparsity=0", "compress.finetune_epochs=0"],  # removes nothing
])
def test_compression_recipes_just_inside_the_rules_are_accepted(overrides):
    load_config(None, overrides)


def test_model_and_dataset_refusals_name_their_field():
    assert _refusal(*IMAGE[:1], "model.name=nope").startswith("  model.name: unknown model 'nope' for task 'image'")
    assert _refusal(*TEXT, "model.backend=keras").startswith("  model.name: unknown model 'bert_tiny' for task 'text' (backend keras)")
    assert _refusal(*IMAGE, "model.kwargs={nope: 1}").startswith("  model.kwargs: ")
    assert _refusal(*IMAGE, "data.name=nope").startswith("  data.name: unknown dataset 'nope' for task 'image'")
    assert load_config(None, [*IMAGE, "data.name=digits"]).data.name == "digits"  # declared for any backend


def test_an_unnamed_run_is_named_by_modality_model_and_time():
    assert re.fullmatch(r"image-seed_cnn-\d{8}-\d{6}", load_config(None, IMAGE).train.name)


def test_the_run_directory_is_local_or_the_open_workspaces(tmp_path):
    local = load_config(None, [*IMAGE, f"train.storage_path={tmp_path}", "train.name=r"])
    assert local.run_dir == tmp_path / "r"
    remote = load_config(None, [*IMAGE, "train.storage_path=s3://bucket/runs", "train.name=r",
                                "train.storage_options={endpoint_override: 'http://127.0.0.1:9'}"])
    assert dict(remote.run_location.options) == {"endpoint_override": "http://127.0.0.1:9"}
    with pytest.raises(RaylmError) as err:
        remote.run_dir  # no workspace open in this process: never a local path made of the URI
    assert str(err.value) == ("train.storage_path: s3://bucket/runs/r is object storage; this step needs the run's "
                              "workspace (raylm.storage.run_workspace(cfg.run_location))")


def test_a_saved_config_without_its_train_or_task_section_runs_again():
    saved = load_config(None, IMAGE).to_dict()
    assert saved == __import__("json").loads(__import__("json").dumps(saved))  # plain JSON values
    assert isinstance(saved["train"]["num_workers"], int)
    elastic = load_config(None, [*IMAGE, "train.num_workers=[1, 2]"])
    assert elastic.train.num_workers == (1, 2) and elastic.to_dict()["train"]["num_workers"] == [1, 2]  # JSON: a list
    del saved["train"]
    again = RaylmConfig.from_saved(saved, labels=["a", "b"])
    assert again.train.resume_from is None and again.task.labels == ["a", "b"]
    with pytest.raises(ConfigError, match=r"task\.modality"):
        RaylmConfig.from_saved({"model": {"name": "seed_cnn"}}, labels=["a", "b"])


def test_overrides_split_at_the_first_equals_sign_and_merge_copies():
    assert parse_overrides(["data.text.text_column=a=b"]) == {"data": {"text": {"text_column": "a=b"}}}
    base = {"train": {"epochs": 2, "lr": 0.1}}
    out = merge(base, {})
    out["train"]["epochs"] = 9
    assert base == {"train": {"epochs": 2, "lr": 0.1}}  # the result shares nothing with the base


def test_errors_name_the_missing_field_without_a_value_and_the_whole_config_when_it_is_no_mapping():
    with pytest.raises(ConfigError) as err:
        validate_config({"model": {"name": "seed_cnn"}})
    assert "  task: Field required" in str(err.value).split("\n") and "(got" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        validate_config(["x"])  # type: ignore[arg-type]
    assert str(err.value).split("\n")[1].startswith("  <config>: Input should be ")


def test_a_streaming_budget_just_over_one_is_megabytes_not_a_share():
    """data.stream_memory <= 1 is a share of the object store; above 1 it is MB and must hold two blocks."""
    assert _refusal(*IMAGE, "data.stream_memory=1.5") == (
        "  data.stream_memory: Value error, 1.5 MB holds fewer than two blocks of 1 MiB, the smallest data.block_mib=0 "
        "fits to the budget; give at least 2, or a share of the object store (<= 1)")
    assert _refusal(*IMAGE, "data.block_mib=8", "data.stream_memory=15") == (
        "  data.stream_memory: Value error, 15 MB holds fewer than two blocks of data.block_mib (8 MiB); give at "
        "least twice the block size, or a share of the object store (<= 1)")
    assert load_config(None, [*IMAGE, "data.stream_memory=1"]).data.stream_memory == 1


def test_an_mlflow_uri_is_read_up_to_its_first_colon_and_plus_and_keeps_its_path():
    from raylm.config import MlflowConfig

    with pytest.raises(ValueError, match="must be a URI with one of the schemes"):
        MlflowConfig(uri="databricks")  # a scheme's name alone is no URI
    assert MlflowConfig(uri="postgresql+psycopg2+x://u@h/db").uri == "postgresql+psycopg2+x://u@h/db"
    assert MlflowConfig(uri="http://127.0.0.1:5000/MLX/").uri == "http://127.0.0.1:5000/MLX"  # only the slash goes


def test_an_mlflow_uri_without_the_client_installed_is_refused_naming_the_field(monkeypatch):
    import importlib.util

    from raylm.config import MlflowConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    assert MlflowConfig().uri is None  # tracking off: no client needed
    with pytest.raises(ValueError) as err:
        MlflowConfig(uri="http://127.0.0.1:5000")
    assert ("tracking.mlflow.uri: the MLflow client is not installed (pip install 'raylm[mlflow]' or mlflow-skinny)"
            in str(err.value))


def test_population_schedulers_keras_refusal_and_pb2s_numeric_dimensions():
    population = ["train.num_workers=1", "train.epochs=4", "train.storage_path=file:///tmp/x",
                  "tune.space={train.lr: {uniform: [0.1, 0.2]}, train.batch_size: {randint: [4, 16]}}"]
    assert _refusal(*KERAS, *population, "tune.scheduler=pbt") == (
        "  model.backend: keras trials cannot checkpoint and restore mid-sweep; tune.scheduler=pbt needs model.backend=torch")
    assert load_config(None, [*IMAGE, *population, "tune.scheduler=pb2"]).tune.scheduler == "pb2"  # uniform, randint
