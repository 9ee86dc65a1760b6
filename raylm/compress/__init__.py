"""Compression of trained PyTorch models into ARTIFACTs that serving loads.

    report = compress(cfg, checkpoint_dir)      # prune -> fine-tune -> quantize -> export -> measure
    artifact = load_artifact(report["artifact"])
    logits = artifact.predict({"image": batch})  # inputs named as raylm.data.MODEL_INPUTS
"""

from raylm.artifacts import Artifact, ArtifactError, load_artifact  # the format's layer (#26); kept here for callers
from raylm.compress.pipeline import CompressError, compress, variant_name

__all__ = ["Artifact", "ArtifactError", "CompressError", "compress", "load_artifact", "variant_name"]
