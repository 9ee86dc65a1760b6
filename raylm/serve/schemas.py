"""Request and response bodies of the HTTP API, one request model per modality.

A request carries one item or a list of them; ``tier`` (or the ``x-raylm-tier`` header) picks the
compression tier. Unknown fields are rejected so that a typo ("txt") is a 422 naming the field,
not a silently empty request.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

TIER_HEADER = "x-raylm-tier"

NonEmptyText = Annotated[str, StringConstraints(min_length=1, strip_whitespace=False)]
Base64 = Annotated[str, StringConstraints(min_length=1)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    tier: str | None = Field(None, description=f"compression tier; else the {TIER_HEADER} header, else the default")


class TextRequest(_Request):
    text: NonEmptyText | list[NonEmptyText] = Field(..., description="one text or a list of texts")


class ImageRequest(_Request):
    image: Base64 | list[Base64] = Field(..., description="base64 PNG/JPEG bytes, or a list of them")


class AudioRequest(_Request):
    audio: Base64 | list[Base64] = Field(..., description="base64 WAV/FLAC/OGG bytes, or a list of them")


REQUESTS: dict[str, type[_Request]] = {"text": TextRequest, "image": ImageRequest, "audio": AudioRequest}


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


class ModelsResponse(BaseModel):
    modality: str
    labels: list[str]
    tiers: list[TierInfo]
