"""Compress a Keras checkpoint with tfmot and export a full-int8 TFLite artifact.

    RAY_AUTH_MODE=token ray job submit --address http://localhost:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- python jobs/compress_keras.py \
        --config jobs/configs/keras_image.yaml --checkpoint /mnt/raylm/runs/<run>/train/checkpoint_... \
        compress.prune.method=magnitude compress.prune.sparsity=0.8 compress.quantize.mode=static

Locally (embedded Ray): the same command from `python jobs/compress_keras.py` on. The cluster's
image needs the keras extra (pip install -e ".[keras]"); TF_USE_LEGACY_KERAS=1 comes from
jobs/runtime_env.yaml.

Prints the measured report (one row per variant: dense, pruned, int8) and the artifact's path.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before anything imports TensorFlow

from raylm.config import ConfigError, load_config  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--config", required=True)
parser.add_argument("--checkpoint", required=True, help="a keras checkpoint directory written by raylm train")
parser.add_argument("overrides", nargs="*", metavar="key=value")
args = parser.parse_args()
try:
    cfg = load_config(args.config, args.overrides)
    if cfg.model.backend != "keras":
        raise ConfigError("model.backend: this job compresses keras checkpoints (got torch)")
except ConfigError as err:
    print(f"compress_keras: {err}", file=sys.stderr)
    sys.exit(2)

from raylm.compress.keras import compress_keras_checkpoint  # noqa: E402
from raylm.runtime import ensure_ray  # noqa: E402

ensure_ray()
result = compress_keras_checkpoint(cfg, args.checkpoint)
print(json.dumps({"artifact": str(result.artifact), "sparsity": result.sparsity, "report": result.report}, indent=2))
