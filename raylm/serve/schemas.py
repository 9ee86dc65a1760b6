"""Request and response bodies of the HTTP API, one request model per modality (from its record).

A request carries one item or a list of them; ``tier`` (or the ``x-raylm-tier`` header) picks the
compression tier. Unknown fields are rejected so that a typo ("txt") is a 422 naming the field,
not a silently empty request.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from raylm.data.modality import modality_record
from raylm.serve.v2 import ErrorBody, InferRequest

TIER_HEADER = "x-raylm-tier"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    tier: str | None = Field(None, description=f"compression tier; else the {TIER_HEADER} header, else the default")


@functools.cache
def request_model(modality: str) -> type[_Request]:
    """``/predict``'s body for a modality: its field (named as the modality) holds one item or a non-empty list."""
    record = modality_record(modality)
    item = record.request_item
    field = (item | Annotated[list[item], Field(min_length=1)], Field(..., description=record.request_doc))
    return create_model(f"{modality.capitalize()}Request", __base__=_Request, **{modality: field})


TextRequest = request_model("text")  # the name benchmarks/serve_load.py's bare FastAPI baseline uses

_JSON_TYPES = {"int": "a number", "float": "a number", "bool": "true or false", "NoneType": "null", "dict": "an object"}


def _union_member(part: Any) -> bool:
    """pydantic's tag for a member of a union in an error's location (``constrained-str``,
    ``list[constrained-str]``): an internal type name, not something the client sent."""
    return isinstance(part, str) and ("[" in part or part.startswith("constrained-"))


def request_error(err: ValidationError, body: dict[str, Any]) -> str:
    """A request model's validation errors as plain sentences naming the field (``text[0]: String should
    have at least 1 character``). Of a one-or-a-list field, only the reasons of the shape sent are kept;
    a value of neither shape is named by its JSON type."""
    reasons: list[str] = []
    for e in err.errors():
        field, *rest = e["loc"] or ("body",)
        if rest and _union_member(rest[0]):
            value = body.get(field)
            if not isinstance(value, (str, list)):
                reason = f"{field}: expected a string or a list of strings, got {_JSON_TYPES.get(type(value).__name__, 'a value of another type')}"
                reasons += [] if reason in reasons else [reason]
                continue
            if isinstance(value, list) != rest[0].startswith("list["):
                continue  # the reason of the shape that was not sent
            rest = rest[1:]
        reasons.append(f"{field}{''.join(f'[{p}]' if isinstance(p, int) else f'.{p}' for p in rest)}: {e['msg']}")
    return "; ".join(reasons[:5])


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    model: str = Field(..., description="the artifacts' model name")
    tier: str = Field(..., description="the compression tier that answered")
    predictions: list[Prediction]
    batch_requests: int = Field(..., description="how many requests the replica ran in the same model call")


class TierInfo(BaseModel):
    tier: str
    model_file: str
    default: bool
    report: dict


class Batching(BaseModel):
    max_batch_size: int = Field(..., description="rows per model call (1 = batching off)")
    batch_wait_timeout_s: float = Field(..., description="longest wait for a batch to fill while requests arrive")


class ModelsResponse(BaseModel):
    modality: str
    labels: list[str]
    tiers: list[TierInfo]
    batching: Batching


class ErrorDetail(BaseModel):
    detail: str = Field(..., description="what is wrong, naming the field")


# The error answers each route documents (OpenAPI ``responses``): raylm's own routes, and the Open Inference Protocol's.
ERRORS = {code: {"model": ErrorDetail, "description": why} for code, why in (
    (400, "malformed JSON"), (401, "missing or wrong API key"), (413, "payload over serve.max_payload_bytes"),
    (422, "invalid request, naming the field"))}
V2_ERRORS = {code: {"model": ErrorBody, "description": why} for code, why in (
    (400, "invalid request, naming the field"), (401, "missing or wrong API key"), (404, "no such model (tier)"),
    (413, "payload over serve.max_payload_bytes"))}


# Routes whose body the handler reads itself (size limit, 400 for malformed JSON) and so FastAPI cannot
# describe: the request model each one takes, by modality.
def _bodies(modality: str) -> dict[str, type[BaseModel]]:
    return {"/predict": request_model(modality), "/v2/models/{name}/infer": InferRequest}


def openapi_document(app: Any, root_path: str, modality: str, tiers: list[str]) -> dict[str, Any]:
    """The app's OpenAPI document with the request bodies of this replica's modality in ``components``,
    so that every ``$ref`` resolves (code generators and schemathesis read it as is), and the tiers as
    the values of the Open Inference Protocol's ``{name}``."""
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                      servers=[{"url": root_path}] if root_path else None)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for path, model in _bodies(modality).items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        body = {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
        doc["paths"][path]["post"]["requestBody"] = body
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if "{name}" in path and parameter["name"] == "name":
                    parameter["schema"] = {"type": "string", "enum": tiers, "title": "tier"}
    return doc
