"""The web app: health and the registry page, in-process and as `python app.py` serves it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from app import build_app
from zoo import registry
from zoo.settings import REPO_ROOT


def test_healthz_and_index_in_process():
    client = TestClient(build_app())
    assert client.get("/healthz").json() == {"status": "ok"}
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count("<tr>") == len(registry.load()) + 1
    assert "resnet50.a1_in1k ★" in page.text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
