"""The Open Inference Protocol (KServe v2 REST) over raylm's tiers: request parsing and response bodies.

Each compression tier is a v2 model (its name is the tier). The model's one input is named after the
modality and carries what ``/predict`` takes, as a ``BYTES`` tensor of shape ``[N]``: texts, or encoded
image / audio files (raw bytes with the binary tensor extension, base64 strings in plain JSON). The
outputs are ``probabilities`` (``FP32 [N, classes]``) and ``label`` (``BYTES [N]``).

Binary tensor data extension (what Triton's client sends by default): the JSON header is the first
``Inference-Header-Content-Length`` bytes of the body; an input whose ``parameters.binary_data_size``
is set takes that many bytes after it, in input order; ``BYTES`` elements are each a 4-byte
little-endian length and the bytes. Outputs are always answered in JSON (clients accept either).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raylm.data.modality import modality_record
from raylm.errors import RaylmError

BINARY_HEADER = "inference-header-content-length"
OUTPUTS = ("probabilities", "label")


class V2Error(RaylmError):
    """A request the protocol answers with 400 and ``{"error": reason}``."""


class InferInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferOutputRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(..., min_length=1)
    outputs: list[InferOutputRequest] | None = None


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[Tensor]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Ready(BaseModel):
    ready: bool


class Live(BaseModel):
    live: bool


class ErrorBody(BaseModel):
    error: str


# The v2 metadata's "platform" per artifact file (Triton's names where it has one; raylm/artifacts/format.py
# RUNTIME_OF_FILE lists the files an artifact can carry).
PLATFORM_OF_SUFFIX = {".onnx": "onnxruntime_onnx", ".tflite": "tensorflow_tflite", ".safetensors": "pytorch_safetensors"}


def model_metadata(tier: str, meta: dict[str, Any], version: str = "1") -> dict[str, Any]:
    """The model's one version: the registry's, or the artifact's content hash (raylm/serve/versions.py)."""
    runtime = PLATFORM_OF_SUFFIX[Path(meta["model_file"]).suffix]
    return {"name": tier, "versions": [version], "platform": runtime,
            "inputs": [{"name": meta["task"]["modality"], "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(meta["labels"])]},
                        {"name": "label", "datatype": "BYTES", "shape": [-1]}]}


def _split_bytes(raw: bytes, where: str) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise V2Error(f"{where}: truncated BYTES element length at byte {offset}")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise V2Error(f"{where}: BYTES element of {size} bytes runs past the binary data")
        items.append(raw[offset:offset + size])
        offset += size
    return items


def parse_infer(body: bytes, header_length: str | None, modality: str) -> tuple[InferRequest, list[str] | list[bytes]]:
    """The request and its items (texts as str; images / clips as bytes or base64 str), or V2Error naming the field."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise V2Error(f"{BINARY_HEADER}: {header_length!r} is not a length within the {len(body)}-byte body")
        head, binary = body[:int(header_length)], body[int(header_length):]
    else:
        head, binary = body, b""
    try:
        request = InferRequest.model_validate_json(head)
    except ValidationError as err:
        raise V2Error("; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors()[:5])) from None
    offset = 0
    found = None
    for i, tensor in enumerate(request.inputs):
        where = f"inputs[{i}] ({tensor.name})"
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise V2Error(f"{where}: binary_data_size {size!r} does not fit the binary data")
            values: list[Any] = _split_bytes(binary[offset:offset + size], where)
            offset += size
        elif tensor.data is not None:
            values = tensor.data
        else:
            raise V2Error(f"{where}: no data and no binary_data_size")
        if tensor.name != modality:
            raise V2Error(f"{where}: unknown input; this model takes one input named {modality!r}")
        if found is not None:  # was answered for the last one alone
            raise V2Error(f"{where}: a second input named {modality!r}; this model takes one")
        if tensor.datatype != "BYTES" or len(tensor.shape) != 1 or tensor.shape[0] != len(values):
            raise V2Error(f"{where}: datatype {tensor.datatype} and shape {tensor.shape} for {len(values)} elements; "
                          f"this input takes datatype BYTES and shape [N], N its element count ([{len(values)}] here)")
        found = values
    if not found:
        raise V2Error(f"inputs: no input named {modality!r}, or it has no elements")
    if not modality_record(modality).request_bytes:  # BYTES elements of a text input are its UTF-8 texts
        try:
            found = [v.decode("utf-8") if isinstance(v, bytes) else v for v in found]
        except UnicodeDecodeError:
            raise V2Error(f"inputs ({modality}): an element is not UTF-8 text") from None
    if not all(isinstance(v, (str, bytes)) for v in found):
        raise V2Error(f"inputs ({modality}): BYTES elements must be strings")
    for output in request.outputs or []:
        if output.name not in OUTPUTS:
            raise V2Error(f"outputs: unknown output {output.name!r}; one of {list(OUTPUTS)}")
    return request, found


def infer_response(tier: str, request: InferRequest, probs: np.ndarray, labels: list[str],
                   version: str | None = None) -> bytes:
    wanted = [o.name for o in request.outputs] if request.outputs else list(OUTPUTS)
    tensors = {"probabilities": {"name": "probabilities", "shape": list(probs.shape), "datatype": "FP32",
                                 "data": probs.astype(np.float32).ravel().tolist()},
               "label": {"name": "label", "shape": [len(probs)], "datatype": "BYTES",
                         "data": [labels[int(i)] for i in probs.argmax(-1)]}}
    body: dict[str, Any] = {"model_name": tier, "outputs": [tensors[name] for name in wanted]}
    if version is not None:
        body["model_version"] = version
    if request.id is not None:
        body["id"] = request.id
    return json.dumps(body).encode()
