"""Build the ResNet Zoo web app (FastAPI); `python app.py` serves it on ZOO_HOST:ZOO_PORT."""

from __future__ import annotations

from fastapi import FastAPI

import zoo
from zoo.api import router


def build_app() -> FastAPI:
    """The FastAPI app: REST routes (and, with the UI issue, the Gradio demo mounted at /)."""
    app = FastAPI(title="ResNet Zoo", version=zoo.__version__, description=zoo.__doc__)
    app.include_router(router)
    return app


app = build_app()

if __name__ == "__main__":
    import uvicorn

    settings = zoo.get_settings()
    print(f"ResNet Zoo on http://{settings.host}:{settings.port}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
