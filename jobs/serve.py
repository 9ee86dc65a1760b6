"""Serve compressed ARTIFACTs (tiers of one model) over HTTP with Ray Serve: batched, autoscaled.

    ray job submit --working-dir . -- python jobs/serve.py --detach \
        --artifact int8=~/raylm_runs/<run>/compress/int8-dynamic --artifact fp32=~/raylm_runs/<run>/compress/fp32 \
        serve.host=0.0.0.0 serve.max_replicas=4 serve.api_key_env=RAYLM_API_KEY

Locally (embedded Ray, blocks until Ctrl-C): python jobs/serve.py --artifact <dir>
Then: curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"text": "great film"}'
The same application from Serve's own tools: serve run raylm.serve.app:app_builder artifact=<dir>,
or serve deploy cluster/serve-config.yaml.
"""

import sys

from raylm.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
