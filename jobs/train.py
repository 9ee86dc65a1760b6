"""Train one model under Ray Train.

    RAY_AUTH_MODE=token ray job submit --address http://localhost:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- python jobs/train.py --config jobs/configs/image.yaml \
        train.epochs=3 train.use_gpu=true train.storage_path=/mnt/raylm/runs train.storage_shared=true

Locally (embedded Ray): python jobs/train.py --config jobs/configs/image.yaml
Prints the run directory, checkpoints and final metrics as JSON; a bad config fails before Ray
starts, naming the field. Clusters and the token: docs/cluster.md.
"""

import sys

from raylm.cli import entry

if __name__ == "__main__":
    entry(["train", *sys.argv[1:]])
