"""The whole path in one job: sweep -> retrain the chosen point -> compress -> evaluate -> serve -> smoke request.

    RAY_AUTH_MODE=token ray job submit --address http://localhost:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- python jobs/pipeline.py --config jobs/configs/image_tune.yaml \
        train.storage_path=/mnt/raylm/runs train.storage_shared=true train.name=image-pipeline serve.host=0.0.0.0

Every stage writes under <train.storage_path>/<train.name>/ and records its outputs in pipeline.json;
re-enter without redoing earlier stages: ... python jobs/pipeline.py --config ... train.name=image-pipeline --from compress
Stop before serving (a RayService serves the artifact instead): ... --to evaluate
Locally (embedded Ray; serves until Ctrl-C): python jobs/pipeline.py --config jobs/configs/image_tune.yaml
"""

import sys

from raylm.cli import entry

if __name__ == "__main__":
    entry(["pipeline", *sys.argv[1:]])
