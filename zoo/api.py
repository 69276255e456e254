"""HTTP routes over the services: health, the model catalog and cards, weight files (GET/HEAD with ETag,
ranges and conditional requests), safetensors headers; `install` adds them, the Hub mirror (`zoo.hubapi`)
and the error handling (`zoo.apierrors`) to an app.

Names are exact (`catalog.exact`): a registry tag, a bare architecture (its default tag) or a run id, as
the registry spells it; anything else is a 404 that suggests the close names. Files are found through the
store's records, never from a path built from the request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from zoo import apierrors, catalog, httpfiles, hub, hubapi, registry, weights
from zoo.apierrors import ErrorResponse, StrictQueryRoute, error
from zoo.settings import get_settings

router = APIRouter(route_class=StrictQueryRoute, tags=["ResNet Zoo"])
Name = Annotated[str, Path(description="A registry tag (`resnet50.a1_in1k`), a bare architecture (`resnet50`) or "
                                       "a transfer run's id, spelt exactly", max_length=200)]
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown name, or its weights are not on this server"},
}


def install(app: FastAPI) -> None:
    """Add the REST routes and the Hub mirror's; 405/OPTIONS with `Allow` for the methods a path does not
    take; a JSON 404 for any other /api path; every error in the one JSON shape."""
    app.include_router(router)
    app.include_router(hubapi.router)
    app.include_router(apierrors.refusals(router, hubapi.router))
    app.add_api_route("/api/{rest:path}", api_not_found, methods=list(apierrors.METHODS), include_in_schema=False)
    apierrors.install(app)


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _local_weights(store) -> int:
    """Tags whose file is in the store (one stat each, no hashing): a record whose file was moved aside for
    changing on disk does not count, as the catalog's `local` does not list it, nor one reached through a
    symbolic link, which is not served."""
    return sum(1 for rec in store.records() if catalog.safe_file(store.path_of(rec), store.root, rec.size))


@router.get("/readyz", summary="Readiness: the store can be read (a read-only store is a read-only mirror); "
            "degraded when the Hub cannot be reached")
def readyz() -> JSONResponse:
    settings = get_settings()
    store_state, store_detail = weights.store(settings).state()
    hub_state, hub_detail = hub.status(settings)
    store_ok = store_state != "unusable"
    status = "not-ready" if not store_ok else ("ready" if hub_state == "reachable" else "degraded")
    body = {"status": status, "models": len(registry.load()),
            "local_weights": _local_weights(weights.store(settings)),
            "checks": {"store": {"ok": store_ok, "mode": store_state, "detail": store_detail},
                       "hub": {"state": hub_state, "detail": hub_detail}}}
    return JSONResponse(body, status_code=200 if store_ok else 503)


@router.get("/api/models", summary="The catalog, filtered by family, depth, license, local or words")
def models(family: Literal["resnet", "resnext"] | None = None,
           depth: Annotated[int | None, Query(ge=1, le=1000)] = None,
           license: Annotated[str | None, Query(max_length=64)] = None, local: bool | None = None,
           q: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
    found = catalog.search(family=family, depth=depth, license=license, local=local, q=q)
    return {"count": len(found), "models": found}


@router.get("/api/models/{name}", summary="A model's card: facts, preprocessing, license, its weights here",
            responses=ERRORS)
def model_card(name: Name) -> dict[str, Any]:
    return catalog.card_for(name)


FILE_ABOUT = "The .safetensors file (ETag = SHA-256, ranges, If-None-Match, If-Match, If-Range, dates)"


@router.get("/api/models/{name}/weights", summary=FILE_ABOUT, **httpfiles.openapi(ERRORS))
@router.head("/api/models/{name}/weights", summary=FILE_ABOUT, **httpfiles.openapi(ERRORS))
def weight_file(name: Name, request: Request) -> Response:
    return httpfiles.send(catalog.require_stored(name), request.headers)


@router.get("/api/models/{name}/header", summary="The safetensors header (tensors, dtypes, shapes, metadata)",
            responses=ERRORS)
def weight_header(name: Name) -> dict[str, Any]:
    return catalog.header(catalog.require_stored(name))


def api_not_found(rest: str) -> JSONResponse:
    return error(404, "not_found", f"No API route /api/{rest[:200]}. GET /api/models lists the catalog; "
                 "/docs lists every route.")
