"""HTTP routes over the services: health, the model catalog and cards, weight files (GET/HEAD with
ETag, ranges and conditional requests), safetensors headers, and a Hugging Face Hub-compatible mirror.

Files are found by registry name or Hub repo id through the store's records, never from a path built
from the request. Every error is JSON: {"error": {"status", "code", "message", "suggestions"}}.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from zoo import catalog, httpfiles, hub, registry, weights
from zoo.errors import (
    ConfigError,
    InvalidArgumentError,
    UnknownModelError,
    WeightsIntegrityError,
    WeightsUnavailableError,
    ZooError,
)
from zoo.settings import get_settings

router = APIRouter()
Name = Annotated[str, Path(description="A registry tag (`resnet50.a1_in1k`) or bare architecture (`resnet50`)",
                           max_length=200)]
_CODES: list[tuple[type[ZooError], int, str]] = [
    (UnknownModelError, 404, "unknown_model"),
    (WeightsUnavailableError, 404, "weights_not_local"),
    (WeightsIntegrityError, 409, "weights_corrupt"),
    (InvalidArgumentError, 400, "invalid_argument"),
    (ConfigError, 500, "misconfigured"),
]


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str
    suggestions: list[str] = []


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown name, or its weights are not on this server"},
}


def error(status: int, code: str, message: str, suggestions: list[str] | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(status=status, code=code, message=message, suggestions=suggestions or []))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def zoo_error(exc: ZooError) -> JSONResponse:
    for kind, status, code in _CODES:
        if isinstance(exc, kind):
            return error(status, code, str(exc), getattr(exc, "suggestions", None))
    return error(500, "error", str(exc))


def install(app: FastAPI) -> None:
    """Add the routes and make every error on them (ours, HTTP's, validation's) the same JSON shape."""
    app.include_router(router)

    @app.exception_handler(ZooError)
    async def _zoo(_: Request, exc: ZooError) -> JSONResponse:
        return zoo_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error(422, "invalid_request", f"The request is not valid: {where}.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the store is usable; degraded when the Hub cannot be reached")
def readyz() -> JSONResponse:
    settings = get_settings()
    store_ok, store_detail = weights.store(settings).writable()
    hub_state, hub_detail = hub.status(settings)
    status = "not-ready" if not store_ok else ("ready" if hub_state == "reachable" else "degraded")
    body = {"status": status, "models": len(registry.load()),
            "local_weights": len(weights.store(settings).records()),
            "checks": {"store": {"ok": store_ok, "detail": store_detail},
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


FILE = {"response_class": Response, "responses": {
    200: {"content": {"application/octet-stream": {}}, "description": "The whole file"},
    206: {"content": {"application/octet-stream": {}, "multipart/byteranges": {}}, "description": "Ranges of it"},
    304: {"description": "The client's copy (If-None-Match) is current"},
    416: {"description": "No requested range lies in the file; Content-Range: bytes */size"},
    **ERRORS}}
FILE_ABOUT = "The .safetensors file (ETag = SHA-256, ranges, If-None-Match, If-Range)"


@router.get("/api/models/{name}/weights", summary=FILE_ABOUT, **FILE)
@router.head("/api/models/{name}/weights", summary=FILE_ABOUT, **FILE)
def weight_file(name: Name, request: Request) -> Response:
    return httpfiles.send(catalog.require_stored(name), request.headers)


@router.get("/api/models/{name}/header", summary="The safetensors header (tensors, dtypes, shapes, metadata)",
            responses=ERRORS)
def weight_header(name: Name) -> dict[str, Any]:
    return catalog.header(catalog.require_stored(name))


HUB_ABOUT = "Hub-compatible download (set HF_ENDPOINT to this server)"


@router.get("/{org}/{repo}/resolve/{revision}/{filename:path}", summary=HUB_ABOUT, **FILE)
@router.head("/{org}/{repo}/resolve/{revision}/{filename:path}", summary=HUB_ABOUT, **FILE)
def hub_resolve(org: str, repo: str, revision: str, filename: str, request: Request) -> Response:
    """What `huggingface_hub` asks the Hub for; answered from the store with the headers it reads."""
    repo_id = f"{org}/{repo}"
    entry = catalog.by_hub_path(repo_id, filename)
    if entry is None:
        known = any(e.hf_hub_id == repo_id for e in registry.load())
        code = "EntryNotFound" if known else "RepoNotFound"
        return error(404, code, f"{repo_id} has no file {filename!r} here.", headers={"X-Error-Code": code})
    stored = catalog.stored_file(entry.name)
    if stored is None:
        return error(404, "EntryNotFound", f"{entry.name} is not in this zoo's store. {weights.how_to_get(entry.name)}",
                     headers={"X-Error-Code": "EntryNotFound"})
    if revision not in ("main", stored.commit):
        return error(404, "RevisionNotFound", f"{repo_id} is served here at main ({stored.commit}) only.",
                     headers={"X-Error-Code": "RevisionNotFound"})
    extra = {"X-Repo-Commit": stored.commit, "X-Linked-Etag": httpfiles.etag(stored),
             "X-Linked-Size": str(stored.size)}
    return httpfiles.send(stored, request.headers, extra)


@router.api_route("/api/{rest:path}", methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"],
                  include_in_schema=False)
def api_not_found(rest: str) -> JSONResponse:
    return error(404, "not_found", f"No API route /api/{rest[:200]}. GET /api/models lists the catalog.")
