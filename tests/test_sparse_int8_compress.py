"""compress() on a real local Ray: an 80 % magnitude-pruned int8 model is stored in the int8 bitmask layout
(issue #28 item 1), smaller than its dense-layout int8 file, with the same logits on the validation rows."""

import numpy as np
import onnx
import pytest
from test_compress_integration import FAST, trained  # noqa: F401 (the fixture: one trained checkpoint per module run)

from raylm.artifacts import load_artifact
from raylm.artifacts.onnx_runtime import onnx_session
from raylm.artifacts.sparse_layout import with_sparse_weights
from raylm.compress import compress
from raylm.compress.measure import collect
from raylm.data import build_datasets

pytestmark = pytest.mark.integration


def test_sparse_int8_artifact_is_smaller_with_the_dense_layouts_logits(trained, tiny_config):  # noqa: F811
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
    reference = onnx_session(dense_layout).run(["logits"], {"image": val["image"]})[0]
    np.testing.assert_array_equal(artifact.predict({"image": val["image"]}), reference)
