"""Sweep augmentation, training and compression together with Ray Tune; print the Pareto front.

    RAY_AUTH_MODE=token ray job submit --address http://localhost:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- python jobs/tune.py --config jobs/configs/image_tune.yaml \
        train.storage_path=/mnt/raylm/runs train.storage_shared=true train.name=image-sweep train.use_gpu=true tune.num_samples=32

Continue an interrupted sweep (finished trials are kept):
    ... -- python jobs/tune.py --resume /mnt/raylm/runs/image-sweep
Locally (embedded Ray): python jobs/tune.py --config jobs/configs/image_tune.yaml
"""

import sys

from raylm.cli import entry

if __name__ == "__main__":
    entry(["tune", *sys.argv[1:]])
