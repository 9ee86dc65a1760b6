"""compress() end to end on a real local Ray: artifacts, int8 agreement, fine-tuning, bad input."""

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from raylm.artifacts import ArtifactError, load_artifact
from raylm.artifacts.onnx_runtime import onnx_session
from raylm.artifacts.sparse_layout import with_sparse_weights
from raylm.compress import CompressError, compress
from raylm.compress.measure import collect
from raylm.compress.prune import sparsity_stats
from raylm.data import MODEL_INPUTS, build_datasets
from raylm.models import build_model
from raylm.train.checkpoint import save_checkpoint_atomic
from tests.helpers.oracles import assert_beats_chance

pytestmark = pytest.mark.integration

_TRAINED: dict[str, str] = {}
_EPOCHS = {"image": 3, "audio": 4, "text": 8}


def _train_in_process(cfg) -> str:
    """A small trained checkpoint without a Ray Train run (that path is tested in test_train_*)."""
    data = build_datasets(cfg)
    inputs = MODEL_INPUTS[cfg.task.modality]
    rows = collect(data.train, inputs + ("label",))
    torch.manual_seed(0)
    model = build_model(cfg, len(data.labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    n = len(rows["label"])
    for _ in range(_EPOCHS[cfg.task.modality]):
        for i in torch.randperm(n).split(8):
            batch = {k: torch.from_numpy(v[i.numpy()]) for k, v in rows.items()}
            loss = F.cross_entropy(model(*(batch[k] for k in inputs)), batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    path = save_checkpoint_atomic(cfg.run_dir / "train" / "checkpoint_inproc", model.eval(), cfg, data.labels,
                                  epoch=_EPOCHS[cfg.task.modality], data_fingerprint=data.fingerprint)
    return str(path)


@pytest.fixture
def trained(ray_local, tiny_config):
    def get(modality: str) -> str:
        if modality not in _TRAINED:
            _TRAINED[modality] = _train_in_process(tiny_config(modality, "train.lr=0.003"))
        return _TRAINED[modality]
    return get


FAST = ("compress.latency_runs=3", "compress.latency_warmup=1", "compress.serving_batch_size=4")


@pytest.mark.parametrize("modality, mode", [("image", "static"), ("audio", "static"), ("text", "dynamic")])
def test_int8_model_runs_and_agrees_with_float(trained, tiny_config, modality, mode):
    report = compress(tiny_config(modality, f"compress.quantize.mode={mode}", *FAST), trained(modality), verbose=False)
    dense, int8 = report["dense"], report["compressed"]
    assert_beats_chance(dense["accuracy"], dense["samples"], modality)  # so agreement means something
    assert int8["agreement_with_dense"] >= 0.95
    assert int8["accuracy"] >= dense["accuracy"] - 0.05
    assert report["parity"]["passed"] and report["parity"]["fp32_onnx_max_abs_diff"] <= 1e-4
    artifact = load_artifact(report["artifact"])
    # The weights are int8: >= 90 % of the elements of every weight-sized initializer (scales and zero
    # points aside). An export left mostly fp32 fails here whatever the model's size.
    graph = onnx.load(str(artifact.weight_files[0])).graph
    weights = [(onnx.helper.tensor_dtype_to_np_dtype(init.data_type), int(np.prod(init.dims)))
               for init in graph.initializer if np.prod(init.dims) >= 16]
    int8_share = sum(n for dtype, n in weights if dtype.itemsize == 1) / sum(n for _, n in weights)
    assert int8_share >= 0.9, int8_share
    # A full int8 export is 0.25-0.3 of fp32 (weights 4x smaller, plus scales and graph). The tiny audio
    # model (~4k weights, 17 KB) is 0.67x: per-channel scales, QDQ nodes and names outweigh its weights.
    if dense["file_bytes"] >= 100_000:
        assert report["ratios"]["size_ratio"] <= 0.35, report["ratios"]
    assert artifact.meta["model_file"] == "model.onnx" and artifact.session is not None
    assert artifact.meta["report"]["compressed"]["accuracy"] == int8["accuracy"]


def test_structured_artifact_round_trip_same_predictions(trained, tiny_config):
    cfg = tiny_config("image", "compress.prune.method=structured", "compress.prune.structured_ratio=0.5",
                      "compress.export=safetensors", *FAST)
    report = compress(cfg, trained("image"), verbose=False)
    assert report["ratios"]["params_ratio"] < 0.6
    assert report["parity"]["max_abs_diff"] == 0.0
    artifact = load_artifact(report["artifact"])
    meta = json.loads((artifact.path / "artifact.json").read_text())
    assert meta["architecture"]["shapes"]["features.0.weight"][0] == 16  # of 32 channels
    assert meta["lineage"]["parent_checkpoint"] == trained("image")
    assert meta["preprocessing"]["size"] == cfg.data.image.size and meta["labels"] == ["horizontal", "vertical"]
    rows = collect(build_datasets(cfg).validation, ("image",))
    again = load_artifact(report["artifact"])
    np.testing.assert_array_equal(artifact.predict(rows), again.predict(rows))
    assert artifact.predict(rows).shape == (len(rows["image"]), 2)


def test_corrupted_artifact_is_a_clear_error(trained, tiny_config, tmp_path):
    report = compress(tiny_config("audio", "compress.quantize.mode=dynamic", *FAST), trained("audio"), verbose=False)
    path = report["artifact"]
    model = f"{path}/model.onnx"
    data = bytearray(open(model, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(model, "wb").write(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.onnx: corrupted"):
        load_artifact(path)
    open(f"{path}/artifact.json", "w").write("{truncated")
    with pytest.raises(ArtifactError, match=r"artifact\.json: corrupted"):
        load_artifact(path)
    with pytest.raises(ArtifactError, match="not a raylm artifact"):
        load_artifact(tmp_path)


def test_failed_check_leaves_no_partial_artifact(trained, tiny_config):
    # An impossible tolerance makes the fp32 ONNX parity check fail after files were written.
    cfg = tiny_config("image", "compress.export=onnx", "compress.parity_atol=1e-12", "compress.variant=doomed", *FAST)
    with pytest.raises(CompressError, match="parity check failed"):
        compress(cfg, trained("image"), verbose=False)
    compress_dir = cfg.run_dir / "compress"
    assert not (compress_dir / "doomed").exists()
    assert not [p for p in compress_dir.iterdir() if p.name.startswith(".doomed")]


def test_checkpoint_that_does_not_match_the_config_is_rejected(trained, tiny_config):
    with pytest.raises(CompressError, match="model.name: the config says 'resnet_small'"):
        compress(tiny_config("image", "model.name=resnet_small"), trained("image"), verbose=False)
    with pytest.raises(CompressError, match="--checkpoint: .* not a raylm checkpoint"):
        compress(tiny_config("image"), "/nonexistent", verbose=False)


@pytest.mark.slow  # ~1 min; the in-process fine-tune runs in the pipeline case
def test_finetune_under_ray_train_keeps_the_zeros(trained, tiny_config):
    import onnx

    cfg = tiny_config("image", "compress.prune.method=magnitude", "compress.prune.sparsity=0.6",
                      "compress.finetune_epochs=1", *FAST)
    report = compress(cfg, trained("image"), verbose=False)
    assert report["variant"] == "magnitude60-global-ft1-fp32"
    # The masks survived the optimizer steps: the fine-tuned weights are still 60 % zeros ...
    assert report["compressed"]["sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert report["compressed"]["nonzero_params"] < 0.45 * report["dense"]["nonzero_params"]
    assert any((cfg.run_dir / "compress" / ".finetune" / report["variant"]).glob("checkpoint_*"))
    # ... and the exported file stores only the kept ones (sparse initializers), so it is smaller
    # than the dense reference while ONNX Runtime rebuilds the same logits.
    graph = onnx.load(f"{report['artifact']}/model.onnx").graph
    assert graph.sparse_initializer and report["parity"]["sparse_tensors"] == len(graph.sparse_initializer)
    kept = sum(t.values.dims[0] for t in graph.sparse_initializer) / sum(int(np.prod(t.dims)) for t in graph.sparse_initializer)
    assert kept == pytest.approx(0.4, abs=0.05)
    assert report["ratios"]["size_ratio"] < 0.85 and report["parity"]["max_abs_diff"] <= cfg.compress.parity_atol
    assert report["dense"]["runtime"] == "onnx-fp32"  # the reference runs on the fastest runtime too


# An 80 % magnitude-pruned int8 model is stored in the int8 bitmask layout (issue #28 item 1), smaller
# than its dense-layout int8 file, with the same logits on the validation rows.
def test_sparse_int8_artifact_is_smaller_with_the_dense_layouts_logits(trained, tiny_config):
    cfg = tiny_config("image", "compress.prune.method=magnitude", "compress.prune.sparsity=0.8",
                      "compress.prune.schedule=oneshot", "compress.quantize.mode=dynamic", *FAST)
    report = compress(cfg, trained("image"), verbose=False)
    assert report["variant"] == "magnitude80-global-int8-dynamic"
    parity = report["parity"]
    assert parity["sparse_int8_tensors"] == 1 and parity["sparse_int8_max_abs_diff"] == 0.0
    artifact = load_artifact(report["artifact"])
    assert artifact.meta["sparse_weights"]["layout"] == "int8-bitmask" and artifact.meta["format_version"] == 2
    assert report["compressed"]["file_bytes"] == sum(p.stat().st_size for p in artifact.weight_files)
    # The dense-layout int8 file this artifact stands for: the graph with the bitmask weights put back.
    graph = with_sparse_weights(onnx.load(str(artifact.weight_files[0])), artifact.path, artifact.meta["sparse_weights"])
    dense_layout = graph.SerializeToString()
    assert report["compressed"]["file_bytes"] < 0.6 * len(dense_layout)
    val = collect(build_datasets(cfg).validation, ("image",))
    session = onnx_session(dense_layout)
    # Row by row: a dynamic-int8 model's activation scales span its batch, so the artifact answers each row
    # alone (raylm.artifacts.load.Artifact.rows_interact); the dense layout is asked the same way.
    reference = np.concatenate([session.run(["logits"], {"image": val["image"][i:i + 1]})[0]
                                for i in range(len(val["image"]))])
    np.testing.assert_array_equal(artifact.predict({"image": val["image"]}), reference)


def test_a_fine_tuning_compress_decodes_the_data_once(trained, tiny_config, monkeypatch):
    """`raylm compress` with fine-tune epochs decoded (and checked) the data twice: once to measure, once
    more in the fine-tune's trainer. The splits are decoded once and the trainer starts from them."""
    import raylm.data

    checkpoint = trained("image")  # before the count: the fixture decodes to train it
    calls = []
    real = raylm.data.decode_splits
    monkeypatch.setattr(raylm.data, "decode_splits", lambda cfg, **kw: calls.append(cfg.compress.finetune_epochs) or real(cfg, **kw))
    cfg = tiny_config("image", "compress.prune.method=structured", "compress.prune.structured_ratio=0.5",
                      "compress.finetune_epochs=1", *FAST)
    report = compress(cfg, checkpoint, verbose=False)
    assert report["variant"] == "structured50-ft1-fp32"
    assert any((cfg.run_dir / "compress" / ".finetune" / report["variant"]).glob("checkpoint_*"))  # it fine-tuned
    assert calls == [1]
