"""Validate KubeRay manifests (RayCluster, RayJob, RayService; apiVersion ray.io/v1) against the
openAPIV3Schema of KubeRay v1.7.0's CRDs, kept beside this file (``*.v1.schema.json``: the CRDs'
schemas with descriptions stripped, ~530 KB in all).

    python cluster/schemas/validate.py cluster/kuberay/*.yaml

Exits 1 and names the field when a document does not conform. The API server fills schema
defaults before it validates; this check does not, so set defaulted required fields
(e.g. a worker group's maxReplicas) explicitly. CEL rules (``x-kubernetes-validations``) are
not evaluated: jsonschema ignores them.
"""

from __future__ import annotations

import json
import pathlib
import sys

import jsonschema
import yaml

HERE = pathlib.Path(__file__).parent
SCHEMAS = {p.name.split(".")[0]: json.loads(p.read_text()) for p in HERE.glob("*.v1.schema.json")}


def document_errors(doc: dict) -> str | None:
    """The first (best-matching) reason ``doc`` does not conform, naming the field; None when it does."""
    if doc.get("apiVersion") != "ray.io/v1":
        return f"{doc['kind']} needs apiVersion ray.io/v1, not {doc.get('apiVersion')}"
    err = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(SCHEMAS[doc["kind"]]).iter_errors(doc))
    if err is None:
        return None
    where = "/".join(str(p) for p in err.absolute_path) or "(root)"
    return f"{doc['kind']} at {where}: {err.message}"


def validate_files(paths: list[str | pathlib.Path]) -> tuple[int, list[str]]:
    """(KubeRay documents checked, one message per failing document) over every YAML document in ``paths``."""
    checked, failures = 0, []
    for path in paths:
        for doc in yaml.safe_load_all(pathlib.Path(path).read_text()):
            if not isinstance(doc, dict) or doc.get("kind") not in SCHEMAS:
                continue
            checked += 1
            error = document_errors(doc)
            if error is not None:
                failures.append(f"{path}: {error}")
    return checked, failures


def main(paths: list[str]) -> int:
    checked, failures = validate_files(paths)
    for line in failures:
        print(line)
    print(f"{checked} KubeRay documents checked, {len(failures)} failing")
    return 1 if failures or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
