"""Why full-int8 TFLite is not faster than float TFLite for the Keras seed CNN: one JSON line.

The Keras seed CNN (Conv2D(32, 3x3) on RGB -> MaxPool -> Dense) converted four ways, timed PAIRED
(all interleaved, order alternating) on LiteRT's interpreter with 1 thread, XNNPACK as installed
(``default``) and with its latest features (``latest``: ``experimental_default_delegate_latest_features``):

- ``fp``: float TFLite (the reference);
- ``int8``: full integer (int8 input/output, per-channel weights, ``TFLITE_BUILTINS_INT8``, no float fallback);
- ``int8_float_io``: the same with float input/output (a QUANTIZE op in the graph);
- ``int8_conv_float``: everything int8 except CONV_2D (``QuantizationDebugger`` denylist), the second
  candidate of the Keras ``compress.quantize.mode=static-selective`` (``raylm.compress.keras_int8``);
  ``static_selective_serves`` names the one that recipe keeps for this model.

The RGB convolution has a reduction of only 3 x 3 x 3 = 27: int8 kernels (XNNPACK QS8 or TFLite's
ruy) pack and requantize for so little work that float wins; the model's size is in the Dense layer,
so keeping that one Conv in float keeps ~0.27x of the size at float speed. ONNX Runtime's int8 shows
the same (raylm.compress.static_int8). Weights are random-init trained one epoch on noise: timing only.

    python benchmarks/tflite_int8.py [--runs 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _converter(tf, model, x, *, int8_io: bool):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in x[:64])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter


def _runner(path: str, x: np.ndarray, **options):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=1, **options)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(x.shape))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)

    def run():
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    import tensorflow as tf

    from raylm.compress.keras_int8 import faster_int8, int8_convs_float
    from raylm.compress.tflite import to_tflite
    from raylm.config import load_config
    from raylm.registry import MODELS

    cfg = load_config(None, ["task.modality=image", "model.backend=keras", "model.name=seed_cnn"])
    model = MODELS.get("image", "seed_cnn", "keras")(cfg=cfg, num_classes=10)
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((128, 32, 32, 3), dtype=np.float32)
    model.fit(x, rng.integers(0, 10, 128), epochs=1, verbose=0)
    files = {"fp": to_tflite(model), "int8": to_tflite(model, int8_calibration=x[:64]),
             "int8_float_io": _converter(tf, model, x, int8_io=False).convert(),
             "int8_conv_float": int8_convs_float(model, x[:64])}
    # What compress.quantize.mode=static-selective serves for this model (the faster on a calibration batch of 16).
    served, _, choice_ms = faster_int8(files["int8"], model, x[:64], batch_size=16)
    out: dict = {"benchmark": "tflite_int8", "model": "keras seed_cnn", "threads": 1, "runs": args.runs,
                 "static_selective_serves": served, "static_selective_choice_ms_b16": choice_ms}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            Path(tmp, f"{name}.tflite").write_bytes(data)
        out["size_ratio"] = {name: round(len(data) / len(files["fp"]), 3) for name, data in files.items()}
        for batch in (1, 16):
            runs = {f"{name}/{mode}": _runner(str(Path(tmp, f"{name}.tflite")), x[:batch], **options)
                    for mode, options in (("default", {}), ("latest", {"experimental_default_delegate_latest_features": True}))
                    for name in files}
            for run in runs.values():
                for _ in range(5):
                    run()
            times: dict[str, list[float]] = {k: [] for k in runs}
            for i in range(args.runs):
                for key in (list(runs) if i % 2 == 0 else list(reversed(list(runs)))):
                    started = time.perf_counter()
                    runs[key]()
                    times[key].append(time.perf_counter() - started)
            reference = float(np.median(times["fp/default"]))
            out[f"p50_ratio_b{batch}"] = {k: round(float(np.median(v)) / reference, 3) for k, v in times.items()}
            out[f"fp_p50_ms_b{batch}"] = round(reference * 1000, 4)
    out["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
