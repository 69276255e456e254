"""`/docs` (Swagger UI) and `/redoc` (ReDoc) from the copies `fastapi_offline` ships, never a CDN, with a
Content-Security-Policy that keeps the browser on this server: ReDoc's footer asks cdn.redoc.ly for a logo,
and on an air-gapped machine nothing may be asked of another host."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(fastapi_offline.__file__).parent / "static"  # swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js
PREFIX = "/api-docs-static"
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' blob:; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")


def install(app: FastAPI) -> None:
    """Serve the two pages and their assets on `app` (made with docs_url=None, redoc_url=None)."""
    app.mount(PREFIX, StaticFiles(directory=STATIC), name="api-docs-static")

    @app.get("/docs", include_in_schema=False)
    def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{root}{PREFIX}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{PREFIX}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{PREFIX}/favicon.png")
        page.headers["Content-Security-Policy"] = CSP
        return page

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{PREFIX}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{PREFIX}/favicon.png", with_google_fonts=False)
        page.headers["Content-Security-Policy"] = CSP
        return page
