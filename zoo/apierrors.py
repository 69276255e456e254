"""How the REST API says no: one JSON error shape for every error (ours, HTTP's, validation's, the Gradio
mount's bare 404s), the Hub's X-Error-Code headers on mirror lookups, 405 with `Allow`, and 422 for a
single-valued query parameter given twice.

The shape: {"error": {"status", "code", "message", "suggestions"}}.
"""

from __future__ import annotations

import collections.abc
import http
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from zoo.errors import (
    ConfigError,
    HubLookupError,
    InvalidArgumentError,
    OutOfMemoryError,
    StoreError,
    UnknownModelError,
    WeightsCorruptError,
    WeightsIntegrityError,
    WeightsUnavailableError,
    ZooError,
    without_paths,
)

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
_CODES: list[tuple[type[ZooError], int, str]] = [
    (UnknownModelError, 404, "unknown_model"),
    (WeightsUnavailableError, 404, "weights_not_local"),
    (WeightsCorruptError, 503, "weights_changed_on_disk"),
    (WeightsIntegrityError, 409, "weights_corrupt"),
    (StoreError, 503, "store_not_writable"),
    (InvalidArgumentError, 400, "invalid_argument"),
    (ConfigError, 500, "misconfigured"),
    (OutOfMemoryError, 503, "out_of_memory"),
]


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str
    suggestions: list[str] = []


class ErrorResponse(BaseModel):
    error: ErrorBody


def error(status: int, code: str, message: str, suggestions: Iterable[str] | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error response: the JSON shape above, with `headers` added."""
    body = ErrorResponse(error=ErrorBody(status=status, code=code, message=message,
                                         suggestions=list(suggestions or [])))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _header_text(text: str) -> str:
    """A message as an HTTP header value: one line of printable ASCII, not too long."""
    return " ".join(text.encode("ascii", "replace").decode().split())[:500]


def zoo_error(exc: ZooError) -> JSONResponse:
    if isinstance(exc, HubLookupError):  # the Hub's answer: its code in the body and in X-Error-Code alike
        headers = {"X-Error-Code": exc.code, "X-Error-Message": _header_text(str(exc))}
        if exc.commit:
            headers["X-Repo-Commit"] = exc.commit
        return error(404, exc.code, str(exc), exc.suggestions, headers)
    message = without_paths(str(exc))  # a remote client is not told where the server keeps its files
    for kind, status, code in _CODES:
        if isinstance(exc, kind):
            return error(status, code, message, getattr(exc, "suggestions", None))
    return error(500, "error", message)


def _http_code(status: int) -> str:
    return {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")


def install(app: FastAPI) -> None:
    """Make every error on `app`'s own routes the one JSON shape."""

    @app.exception_handler(ZooError)
    async def _zoo(_: Request, exc: ZooError) -> JSONResponse:
        return zoo_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error(422, "invalid_request", f"The request is not valid: {where}.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, _http_code(exc.status_code), str(exc.detail),
                     headers=getattr(exc, "headers", None))


def install_generic(app: FastAPI) -> None:
    """On a mounted app we do not own (Gradio's): its bare routing 404/405s get the JSON shape; its own
    errors, which its client reads as {"detail": ...}, stay as they are."""

    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405) and exc.detail == http.HTTPStatus(exc.status_code).phrase:
            path = request.url.path[:200]
            message = (f"Nothing is served at {path}." if exc.status_code == 404
                       else f"{request.method} is not allowed on {path}.")
            return error(exc.status_code, _http_code(exc.status_code),
                         f"{message} GET /docs lists the REST routes; the UI is at /.",
                         headers=getattr(exc, "headers", None))
        return await http_exception_handler(request, exc)

    app.add_exception_handler(StarletteHTTPException, _http)


class StrictQueryRoute(APIRoute):
    """An APIRoute that answers 422 when a single-valued query parameter is given more than once
    (FastAPI would silently take the last value)."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        single = [f.alias for f in self.dependant.query_params if not _many(f.field_info.annotation)]
        if not single:
            return handler

        async def strict(request: Request) -> Response:
            twice = [n for n in single if len(request.query_params.getlist(n)) > 1]
            if twice:
                raise RequestValidationError([{"loc": ("query", n), "msg": "given more than once; give it once",
                                               "type": "repeated_value"} for n in twice])
            return await handler(request)

        return strict


def _many(annotation: Any) -> bool:
    """Whether a parameter's type takes several values (list[str], tuple[int, ...] | None, ...)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_many(a) for a in typing.get_args(annotation))
    origin = typing.get_origin(annotation) or annotation
    return (isinstance(origin, type) and issubclass(origin, collections.abc.Sequence)
            and not issubclass(origin, str | bytes))


def refusals(*routers: APIRouter) -> APIRouter:
    """Routes for the methods the paths of `routers` do not declare: HEAD wherever GET is (the GET endpoint;
    the server sends no body), OPTIONS with 204 and `Allow`, any other method 405 with `Allow` (instead of
    falling through to a 404). Include it after them; nothing here is in the OpenAPI schema."""
    allowed: dict[str, set[str]] = {}
    gets: dict[str, APIRoute] = {}
    for route in (r for router in routers for r in router.routes):
        if isinstance(route, APIRoute):
            allowed.setdefault(route.path, set()).update(route.methods)
            if "GET" in route.methods:
                gets[route.path] = route
    out = APIRouter(route_class=StrictQueryRoute)
    for path, methods in allowed.items():
        if "GET" in methods and "HEAD" not in methods:
            get = gets[path]
            out.add_api_route(path, get.endpoint, methods=["HEAD"], include_in_schema=False,
                              response_class=get.response_class)
            methods = methods | {"HEAD"}
        allow = ", ".join([m for m in METHODS if m in methods] + ["OPTIONS"])
        others = [m for m in (*METHODS, "OPTIONS") if m not in methods]
        out.add_api_route(path, _refuse(allow), methods=others, include_in_schema=False)
    return out


def _refuse(allow: str) -> Callable[[Request], Response]:
    def refuse(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"Allow": allow})
        return error(405, "method_not_allowed", f"{request.method} is not allowed here; use {allow}.",
                     headers={"Allow": allow})

    return refuse
