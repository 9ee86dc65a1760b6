"""Reading a request before it is parsed: the API key, and a body held to ``serve.max_payload_bytes``.

The ingress reads bodies itself (rather than through FastAPI's parameters) so that an oversized body
is refused while it streams in, and malformed JSON is a 400 naming the problem."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from fastapi import HTTPException, Request


def check_key(request: Request, header: str, key_digest: str | None) -> None:
    if key_digest is None:
        return
    given = request.headers.get(header, "")
    if not hmac.compare_digest(hashlib.sha256(given.encode()).hexdigest(), key_digest):
        raise HTTPException(401, f"missing or wrong API key (header {header})")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"payload of {declared} bytes exceeds serve.max_payload_bytes={limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"payload exceeds serve.max_payload_bytes={limit}")
    return bytes(body)


def json_body(body: bytes, content_type: str | None = None, field: str | None = None) -> Any:
    """The body parsed as JSON, whatever its content type (curl -d sends JSON as form data); when it
    is not JSON and was sent as something else (a WAV file posted as audio/wav), the 400 says what to
    send instead of only where the parser stopped."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:  # also ints past Python's digit limit
        sent = (content_type or "").split(";")[0].strip().lower()
        hint = ""
        if sent and "json" not in sent:
            example = f'{{"{field}": ...}}' if field else "an object"
            hint = (f" (the body was sent as {sent}; this route takes JSON, content-type application/json: "
                    f"{example}, binary inputs as base64 strings)")
        reason = str(err)[:200]
        if "int_max_str_digits" in reason:  # Python's own advice to a programmer, not to an HTTP client
            reason = "a number with more digits than JSON numbers may have here (4300)"
        raise HTTPException(400, f"malformed JSON{hint}: {reason}") from None
    except RecursionError:  # json's C parser recurses once per nesting level
        raise HTTPException(400, "malformed JSON: nested too deeply") from None
