"""Build the ResNet Zoo web app: the REST routes and the Gradio UI at `/` in one FastAPI app.
`python app.py` serves it on ZOO_HOST:ZOO_PORT."""

from __future__ import annotations

from zoo import accel  # noqa: F401  (first: on a ZeroGPU Space `spaces` must load before CUDA is touched)

# isort: split
import gradio as gr
from fastapi import FastAPI

import zoo
from zoo import api, apierrors, docpages, hubapi, serving, ui


def build_app(settings: zoo.Settings | None = None) -> FastAPI:
    """The FastAPI app: REST routes first (they take precedence), then the Gradio demo mounted at `/`.
    `/docs` and `/redoc` load Swagger UI and ReDoc from files shipped in `fastapi_offline`, never a CDN."""
    settings = settings or zoo.get_settings()
    _own_upload_folder()
    _sweep_abandoned_uploads(settings)
    _sweep_dead_jobs(settings)
    app = FastAPI(title="ResNet Zoo", version=zoo.__version__, description=zoo.__doc__, docs_url=None, redoc_url=None)
    docpages.install(app)
    api.install(app)
    demo = ui.build_demo(settings, rest_routes=[*api.router.routes, *hubapi.router.routes])
    demo.state_session_capacity = settings.max_sessions  # the UI keeps per-session state for this many sessions
    app = gr.mount_gradio_app(
        app, demo, path="/", theme=ui.THEME, css=ui.CSS, ssr_mode=False, footer_links=["api", "settings"],
        enable_monitoring=False,  # Gradio's traffic dashboard: off, every /monitoring route answers 403
        max_file_size=settings.max_upload_mb * 1024 * 1024, show_error=True,
        allowed_paths=[str(ui.EXAMPLES[0].parent)] if ui.EXAMPLES else None,
    )
    # Gradio lets an event's input name only a file its users uploaded (and an output only a file it may serve)
    # once the Blocks are launched, which gr.mount_gradio_app never marks: without this an API call could name
    # any file on the server as its "upload", have Gradio copy it into its cache and the handler read it
    demo.has_launched = True
    apierrors.install_generic(app.routes[-1].app)  # the UI's bare 404/405s in the one JSON shape too
    ui.install_sessions(app.routes[-1].app, settings.max_sessions)  # bounded, and cheap for each new visitor
    ui.install_queue_wake(app.routes[-1].app)  # its queue waits for work instead of polling every 1 ms
    ui.install_refusals(app.routes[-1].app, settings)  # refusals name their setting; uploads' disk bounded
    app.add_middleware(serving.BodyLimit, exempt=ui.is_upload)  # JSON calls and REST bodies: 1 MiB at most
    return app


UPLOADS_PREFIX = "resnet-zoo-uploads-"


def _sweep_abandoned_uploads(settings: zoo.Settings) -> None:
    """Partial uploads whose client left stay in Gradio's upload folder (`zoo.uploads`): deleted once older than
    ZOO_UPLOAD_TTL_S, and never before the server would have ended their body for lack of data."""
    import os
    from pathlib import Path

    from zoo import serving, uploads

    folder = os.environ.get("GRADIO_TEMP_DIR")
    if folder:
        uploads.start_sweeper(Path(folder), max(settings.upload_ttl_s, serving.BODY_IDLE_S + 10))


def _sweep_dead_jobs(settings: zoo.Settings) -> None:
    """What a server stopped mid-job left behind (its job folder of unpacked images, a run's temp folder) goes
    at the next start, not only when the next job starts or the next run is saved."""
    import contextlib

    from zoo import durable
    from zoo.transfer import data, runs

    with contextlib.suppress(OSError):  # a store that cannot be read says so where it is used
        data.sweep_jobs(settings)
        durable.sweep(runs.root(settings))


def _own_upload_folder() -> None:
    """Gradio keeps uploads in GRADIO_TEMP_DIR, by default one machine-wide `/tmp/gradio` that every Gradio
    process shares (and empties on restart); this server gets a folder of its own, named by its pid. It is
    removed at exit, and the folders of servers that died (or were stopped by a signal, which skips exit
    handlers) are removed by the next server to start. A GRADIO_TEMP_DIR set by the user is kept as it is."""
    import atexit
    import os
    import shutil
    import tempfile
    from pathlib import Path

    if os.environ.get("GRADIO_TEMP_DIR"):
        return
    from zoo import durable

    for old in Path(tempfile.gettempdir()).glob(f"{UPLOADS_PREFIX}*-*"):
        pid = durable.owner(old.name, UPLOADS_PREFIX)
        if not (pid is not None and durable.alive(pid)):
            shutil.rmtree(old, ignore_errors=True)  # its server is gone
    folder = tempfile.mkdtemp(prefix=f"{UPLOADS_PREFIX}{os.getpid()}-")
    os.environ["GRADIO_TEMP_DIR"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


def serve(settings: zoo.Settings | None = None) -> None:
    """Serve the app until SIGINT/SIGTERM. Requests in flight then get ZOO_SHUTDOWN_S seconds; after that
    uvicorn closes the connections and the process ends at once, by the signal (Ctrl-C: `serving.end_now`),
    not waiting for handlers still running; the kernel ends any ONNX
    export child with it (`backends.export_in_subprocess` arms PR_SET_PDEATHSIG). A connection whose client takes
    nothing for `serving.CONNECTION_TIMEOUT_S` is aborted by the kernel."""
    from zoo import residency, serving

    residency.tune_heap()  # before any server thread: freed memory is reused, not kept per thread or re-faulted
    settings = settings or zoo.get_settings()
    print(f"ResNet Zoo on http://{settings.host}:{settings.port}", flush=True)
    app = build_app(settings)
    residency.freeze_startup_objects()  # full garbage collections then skip the app's own long-lived objects
    serving.run(app, host=settings.host, port=settings.port, shutdown_s=settings.shutdown_s)


def main() -> int:
    """`python app.py`: serve, or say in one line why a setting stops it (uvicorn reports a port in use)."""
    import sys

    try:
        serve()
    except zoo.ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
