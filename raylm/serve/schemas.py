"""Request and response bodies of the HTTP API, one request model per modality.

A request carries one item or a list of them; ``tier`` (or the ``x-raylm-tier`` header) picks the
compression tier. Unknown fields are rejected so that a typo ("txt") is a 422 naming the field,
not a silently empty request.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

TIER_HEADER = "x-raylm-tier"

NonEmptyText = Annotated[str, StringConstraints(min_length=1, strip_whitespace=False)]
Base64 = Annotated[str, StringConstraints(min_length=1)]
TextList = Annotated[list[NonEmptyText], Field(min_length=1)]
Base64List = Annotated[list[Base64], Field(min_length=1)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    tier: str | None = Field(None, description=f"compression tier; else the {TIER_HEADER} header, else the default")


class TextRequest(_Request):
    text: NonEmptyText | TextList = Field(..., description="one text or a list of texts")


class ImageRequest(_Request):
    image: Base64 | Base64List = Field(..., description="base64 PNG/JPEG bytes, or a list of them")


class AudioRequest(_Request):
    audio: Base64 | Base64List = Field(..., description="base64 WAV/FLAC/OGG bytes, or a list of them")


REQUESTS: dict[str, type[_Request]] = {"text": TextRequest, "image": ImageRequest, "audio": AudioRequest}

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


# Routes whose body the handler reads itself (size limit, 400 for malformed JSON) and so FastAPI cannot
# describe: the request model each one takes, by modality.
def _bodies(modality: str) -> dict[str, type[BaseModel]]:
    from raylm.serve.v2 import InferRequest

    return {"/predict": REQUESTS[modality], "/v2/models/{name}/infer": InferRequest}


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
