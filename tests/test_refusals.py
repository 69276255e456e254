"""Gradio's own refusals name the zoo's setting behind them and the value met (README "Limits")."""

from __future__ import annotations

import httpx
import pytest

from tests.liveserver import LiveServer
from zoo import settings


@pytest.fixture
def small_limits(monkeypatch):
    from app import build_app

    monkeypatch.setenv("ZOO_MAX_UPLOAD_MB", "1")
    monkeypatch.setenv("ZOO_QUEUE_SIZE", "3")
    settings.get_settings.cache_clear()
    app = build_app()
    server = LiveServer(app).start()
    yield server, app.routes[-1].app.get_blocks()._queue
    server.stop()


def test_an_upload_over_the_limit_names_zoo_max_upload_mb_and_its_size(small_limits):
    server, _ = small_limits
    r = httpx.post(f"{server.url}/gradio_api/upload", files={"files": ("big.png", b"x" * (3 << 19), "image/png")},
                   timeout=30)
    assert r.status_code == 413
    detail = r.text
    assert detail.startswith("The file is larger than this server takes: at most 1 MiB (ZOO_MAX_UPLOAD_MB)")
    assert "this upload is 1.5 MiB" in detail


def test_a_full_queue_names_zoo_queue_size_and_how_many_wait(small_limits):
    server, queue = small_limits
    assert queue.max_size == 3
    queue.max_size = 0  # full at once: as if ZOO_QUEUE_SIZE requests were already waiting
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/gradio_api/call/model_card", json={"data": ["resnet18.a1_in1k"]})
        body = r.text if r.status_code != 200 else http.get(f"/gradio_api/call/model_card/{r.json()['event_id']}").text
    assert "Queue is full: 0 requests are waiting, the most this server takes (ZOO_QUEUE_SIZE=0)." in body, body
