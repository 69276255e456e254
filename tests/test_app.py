"""The web app: health and the registry page, in-process and as `python app.py` serves it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from app import build_app
from tests.liveserver import free_port
from zoo.settings import REPO_ROOT


def test_rest_routes_and_the_gradio_ui_share_one_app():
    with TestClient(build_app()) as client:
        assert client.get("/healthz").json() == {"status": "ok"}  # REST routes win over the mount at /
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "ResNet Zoo" in page.text  # the title, in the page config
        config = client.get("/config").json()
        assert config["analytics_enabled"] is False
        info = client.get("/gradio_api/info").json()
        assert {"/classify", "/compare", "/architecture"} <= set(info["named_endpoints"])


def test_docs_and_redoc_load_only_files_this_server_has():
    """/docs and /redoc must work on an air-gapped machine: every script, style and icon they load is ours."""
    import re

    with TestClient(build_app()) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page)
            assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
            assets = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', html.text)
            assert assets and not re.search(r"https?://", html.text), (page, assets)
            for url in assets:
                r = client.get(url)
                assert r.status_code == 200 and len(r.content) > 1000, url
        assert client.get("/openapi.json").json()["info"]["title"] == "ResNet Zoo"



@pytest.mark.slow
def test_python_app_py_serves_offline(tmp_path):
    port = free_port()
    env = {**os.environ, "ZOO_PORT": str(port), "HF_HUB_OFFLINE": "1", "ZOO_WEIGHTS_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60  # bounds the wait so a broken start fails instead of hanging
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"app.py did not answer:\n{proc.communicate(timeout=5)[0]}")
                time.sleep(0.2)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "ResNet Zoo" in page.text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
