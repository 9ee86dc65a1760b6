"""The Open Inference Protocol's versioned model paths, ``/v2/models/{name}/versions/{version}[/ready|/infer]``:
they answer like the unversioned ones when ``version`` is the tier's version (raylm/serve/versions.py), and 404
with the reason otherwise. A mixin of TierServer (Serve's ingress takes routes of the class's bases too), so
the routes live here and app.py includes ``router``."""

# No `from __future__ import annotations`: FastAPI must see real types on the route methods.
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from raylm.serve import v2
from raylm.serve.schemas import V2_ERRORS

router = APIRouter()


class VersionedRoutes:
    """Needs of the class it is mixed into: ``_versions`` {tier: version}, ``_v2_tier``, and the unversioned
    ``v2_model``, ``v2_model_ready`` and ``v2_infer`` handlers."""

    _versions: dict[str, str]

    def _v2_version(self, request: Request, name: str, version: str) -> None:
        self._v2_tier(request, name)  # type: ignore[attr-defined]
        served = self._versions[name]
        if version != served:
            raise HTTPException(404, f"model {name!r} version {version[:64]!r}: unknown; this server serves "
                                     f"version {served!r} of {name!r}")

    @router.get("/v2/models/{name}/versions/{version}", response_model=v2.ModelMetadata, responses=V2_ERRORS)
    async def v2_version_model(self, name: str, version: str, request: Request) -> dict[str, Any]:
        self._v2_version(request, name, version)
        return await self.v2_model(name, request)  # type: ignore[attr-defined]

    @router.get("/v2/models/{name}/versions/{version}/ready", response_model=v2.Ready, responses=V2_ERRORS)
    async def v2_version_ready(self, name: str, version: str, request: Request) -> dict[str, bool]:
        self._v2_version(request, name, version)
        return await self.v2_model_ready(name, request)  # type: ignore[attr-defined]

    @router.post("/v2/models/{name}/versions/{version}/infer", response_model=v2.InferResponse, responses=V2_ERRORS,
                 openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {}}}}})
    async def v2_version_infer(self, name: str, version: str, request: Request) -> Response:
        self._v2_version(request, name, version)
        return await self.v2_infer(name, request)  # type: ignore[attr-defined]
