"""Validate KubeRay manifests (RayCluster, RayJob, RayService; apiVersion ray.io/v1) against the
openAPIV3Schema of KubeRay v1.7.0's CRDs, kept beside this file (``*.v1.schema.json``: the CRDs'
schemas with descriptions stripped, ~530 KB in all).

    python cluster/schemas/validate.py cluster/kuberay/*.yaml

Exits 1 and names the field when a document does not conform, or holds a field its schema does not declare
(what ``kubectl apply``'s strict field validation refuses). The API server fills schema
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


def unknown_fields(value, schema: dict, where: str = "") -> list[str]:
    """Fields of ``value`` its schema does not declare, as paths: what ``kubectl apply`` (strict field
    validation, the default since kubectl 1.27) refuses, e.g. a typo'd ``workerGroupSpec``. An object schema
    with ``additionalProperties`` or ``x-kubernetes-preserve-unknown-fields`` (or no ``properties``, like
    ``metadata`` here) takes any field."""
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        open_schema = schema.get("additionalProperties")
        for key, item in value.items():
            path = f"{where}/{key}" if where else str(key)
            if key in schema["properties"]:
                found += unknown_fields(item, schema["properties"][key], path)
            elif isinstance(open_schema, dict):
                found += unknown_fields(item, open_schema, path)
            elif not open_schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
                found.append(path)
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            found += unknown_fields(item, schema["additionalProperties"], f"{where}/{key}" if where else str(key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{where}/{i}")
    return found


def document_errors(doc: dict) -> str | None:
    """The first (best-matching) reason ``doc`` does not conform, naming the field; None when it does."""
    if doc.get("apiVersion") != "ray.io/v1":
        return f"{doc['kind']} needs apiVersion ray.io/v1, not {doc.get('apiVersion')}"
    err = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(SCHEMAS[doc["kind"]]).iter_errors(doc))
    if err is None:
        unknown = unknown_fields(doc, SCHEMAS[doc["kind"]])
        return f"{doc['kind']} at {unknown[0]}: unknown field (not in the CRD's schema)" if unknown else None
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
    if not checked:
        kinds = ", ".join(sorted(SCHEMAS))
        print(f"no KubeRay document (kind {kinds}, apiVersion ray.io/v1) in {' '.join(paths) or 'no files'}")
        return 1
    print(f"{checked} KubeRay documents checked, {len(failures)} failing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
