"""Compress a Keras checkpoint with tfmot and export a full-int8 TFLite artifact: ``raylm compress``,
which reads the backend from the checkpoint (this script is kept for the commands that name it).

    RAY_AUTH_MODE=token ray job submit --address http://localhost:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- python jobs/compress_keras.py \
        --config jobs/configs/keras_image.yaml --checkpoint /mnt/raylm/runs/<run>/train/checkpoint_... \
        compress.prune.method=magnitude compress.prune.sparsity=0.8 compress.quantize.mode=static

Locally (embedded Ray): the same command from `python jobs/compress_keras.py` on. The cluster's
image needs the keras extra (pip install -e ".[keras]"); TF_USE_LEGACY_KERAS=1 comes from
jobs/runtime_env.yaml.

Prints the measured table (one row per variant: dense, pruned, int8), the verdict and the artifact's
path; TensorFlow's and Ray's own lines go to the run's logs/ray.log (-v shows them).
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before anything imports TensorFlow

from raylm.cli import entry  # noqa: E402

if __name__ == "__main__":
    entry(["compress", *sys.argv[1:]])
