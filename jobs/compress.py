"""Compress a trained checkpoint (prune -> fine-tune -> int8 -> export -> measure) into an ARTIFACT.

    RAY_AUTH_MODE=token ray job submit --address http://localhost:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- python jobs/compress.py \
        --checkpoint /mnt/raylm/runs/<run>/train/checkpoint_<time> --config jobs/configs/image.yaml \
        compress.prune.method=structured compress.finetune_epochs=2 compress.quantize.mode=static

Locally (embedded Ray): python jobs/compress.py --checkpoint <dir> compress.quantize.mode=dynamic
Writes <train.storage_path>/<train.name>/compress/<variant>/ and prints the report's ratios.
"""

import sys

from raylm.cli import entry

if __name__ == "__main__":
    entry(["compress", *sys.argv[1:]])
