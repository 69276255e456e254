"""What Gradio adds to one classification on resnet18 over calling the service directly.

The whole app (REST + Gradio) is served by uvicorn on 127.0.0.1 in this process, so both sides share
one engine (eager PyTorch, so no background export changes the backend mid-run). Per round, in turn:
- direct: `inference.classify([image], tag)`, the service the UI calls;
- browser path: what the page does over HTTP — upload the file, POST /gradio_api/call/classify,
  read the result as server-sent events (target: at most 60 ms more than direct);
- gradio_client: `Client.predict` (reported only: the client polls its queues every 50 ms).
Weights are random (the Hub is out of reach here); speed does not depend on their values.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench import Target, free_port

ROUNDS = 25
TARGET_MS = 60.0


def _serve(app):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def run() -> list[Target]:
    absent = [m for m in ("gradio", "gradio_client", "uvicorn", "httpx") if importlib.util.find_spec(m) is None]
    if absent:
        print(f"SKIP ui_gradio_added_ms_resnet18: {', '.join(absent)} not installed (pip install -r requirements.txt)",
              flush=True)
        return []
    import httpx
    import timm
    import torch
    from safetensors.torch import save_file

    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    os.environ.update({"ZOO_WEIGHTS_DIR": str(tmp / "weights"), "HF_HUB_OFFLINE": "1", "ZOO_CPU_BACKEND": "eager",
                       "GRADIO_ANALYTICS_ENABLED": "False"})
    from zoo import inference, settings, weights

    settings.get_settings.cache_clear()
    tag = "resnet18.a1_in1k"
    torch.manual_seed(0)
    save_file(timm.create_model("resnet18").state_dict(), str(tmp / "r18.safetensors"))
    weights.import_file(tmp / "r18.safetensors", tag)
    image = str(settings.REPO_ROOT / "examples" / "chelsea.jpg")

    from gradio_client import Client, handle_file

    from app import build_app

    server, url = _serve(build_app())
    http = httpx.Client(base_url=url, timeout=60)
    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)

    def direct():
        return inference.classify([image], tag)[0][0]

    def browser():
        with open(image, "rb") as f:
            path = http.post("/gradio_api/upload", files={"files": ("chelsea.jpg", f, "image/jpeg")}).json()[0]
        data = [{"path": path, "orig_name": "chelsea.jpg", "meta": {"_type": "gradio.FileData"}}, tag]
        event = http.post("/gradio_api/call/classify", json={"data": data}).json()["event_id"]
        with http.stream("GET", f"/gradio_api/call/classify/{event}") as r:
            body = b"".join(r.iter_bytes())
        if b"event: complete" not in body:
            raise RuntimeError(f"classify failed: {body[-300:]!r}")

    def via_client():
        client.predict(handle_file(image), tag, api_name="/classify")

    sides = {"direct": direct, "browser path": browser, "gradio_client": via_client}
    times: dict[str, list[float]] = {k: [] for k in sides}
    for fn in sides.values():  # warm: model loaded, connections open
        fn()
        fn()
    for _ in range(ROUNDS):
        for name, fn in sides.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1000)
    server.should_exit = True
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:>14}: {v:7.1f} ms median of {ROUNDS} (+{v - med['direct']:.1f} ms over direct)")
    added = med["browser path"] - med["direct"]
    print(f"Gradio adds {added:.1f} ms per classification on the browser's path (upload + queue + SSE); "
          f"gradio_client adds {med['gradio_client'] - med['direct']:.1f} ms (its own 50 ms polling included)")
    return [Target("ui_gradio_added_ms_resnet18", added, "<=", TARGET_MS)]
