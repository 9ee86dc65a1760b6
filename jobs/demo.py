"""Train one model per modality on the bundled offline demo data and print their metrics.

    RAY_AUTH_MODE=token ray job submit --address http://localhost:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- python jobs/demo.py --epochs 2 --storage-path /mnt/raylm/runs
    python jobs/demo.py          # embedded local Ray
"""

import sys

from raylm.cli import entry

if __name__ == "__main__":
    entry(["demo", *sys.argv[1:]])
