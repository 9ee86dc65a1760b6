"""Ray Serve of compressed-model ARTIFACTs: batched, autoscaled, one deployment for a model's tiers.

    app = build_app(["int8=/runs/x/compress/dynamic-int8", "/runs/x/compress/fp32"], load_serve_config())
    serve.run(app)          # POST /predict {"text": "..."}; GET /models, /healthz, /docs
"""

from raylm.serve.app import app_builder, build_app
from raylm.serve.loading import load_serve_config, resolve_tiers

__all__ = ["app_builder", "build_app", "load_serve_config", "resolve_tiers"]
