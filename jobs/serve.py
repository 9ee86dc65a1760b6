"""Serve compressed ARTIFACTs (tiers of one model) over HTTP with Ray Serve: batched, autoscaled.

    RAY_AUTH_MODE=token ray job submit --address http://localhost:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- python jobs/serve.py --detach \
        --artifact int8=/mnt/raylm/runs/<run>/compress/int8-dynamic --artifact fp32=/mnt/raylm/runs/<run>/compress/fp32 \
        serve.host=0.0.0.0 serve.max_replicas=4 serve.api_key_env=RAYLM_API_KEY

(RAYLM_API_KEY must be set on the cluster's nodes, not only in the submitting shell.)

Locally (embedded Ray, blocks until Ctrl-C): python jobs/serve.py --artifact <dir>
Then: curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"text": "great film"}'
The same application from Serve's own tools: serve run raylm.serve.app:app_builder artifact=<dir>,
or serve deploy cluster/serve-config.yaml.
"""

import sys

from raylm.cli import entry

if __name__ == "__main__":
    entry(["serve", *sys.argv[1:]])
