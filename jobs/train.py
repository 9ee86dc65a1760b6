"""Train one model under Ray Train.

    ray job submit --working-dir . --runtime-env-json '{"env_vars": {"TF_USE_LEGACY_KERAS": "1"}}' \
        -- python jobs/train.py --config jobs/configs/image.yaml train.epochs=3

Locally (embedded Ray): python jobs/train.py --config jobs/configs/image.yaml
"""

import sys

from raylm.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
