"""Train one model per modality on the bundled offline demo data and print their metrics.

    ray job submit --working-dir . -- python jobs/demo.py --epochs 2
    python jobs/demo.py          # embedded local Ray
"""

import sys

from raylm.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
