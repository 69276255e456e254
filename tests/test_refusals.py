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


def test_uploads_past_their_disk_budget_are_refused_before_their_body_is_read(monkeypatch, tmp_path):
    import threading

    from app import build_app

    monkeypatch.setenv("ZOO_UPLOADS_MAX_MB", "2")
    settings.get_settings.cache_clear()
    server = LiveServer(build_app()).start()
    try:
        url = f"{server.url}/gradio_api/upload"
        ok = httpx.post(url, files={"files": ("a.png", b"x" * 500_000, "image/png")}, timeout=30)
        assert ok.status_code == 200  # 0.5 MB stored (and the examples Gradio caches there, ~0.3 MB) of 2 MiB

        # a second upload arrives slowly: its 0.9 MB are promised while it is read
        started, release, answers = threading.Event(), threading.Event(), []
        head = (b'--b0\r\nContent-Disposition: form-data; name="files"; filename="s.png"\r\n'
                b"Content-Type: image/png\r\n\r\n")
        tail = b"\r\n--b0--\r\n"
        length = 900_000

        def slow_body():
            yield head + b"x" * 1000
            started.set()
            release.wait(20)
            yield b"x" * (length - len(head) - len(tail) - 1000) + tail

        def send():
            answers.append(httpx.post(url, content=slow_body(), timeout=30, headers={
                "content-length": str(length), "content-type": "multipart/form-data; boundary=b0"}).status_code)

        slow = threading.Thread(target=send)
        slow.start()
        assert started.wait(10)
        refused = httpx.post(url, files={"files": ("b.png", b"x" * 800_000, "image/png")}, timeout=30)
        release.set()
        slow.join(30)
        assert refused.status_code == 507
        assert "ZOO_UPLOADS_MAX_MB" in refused.text and "of the 2 MiB" in refused.text, refused.text
        assert "this one needs 0.8 MiB" in refused.text
        assert answers == [200]  # the slow one was stored (1.7 MB now): its promise became usage
        assert httpx.post(url, files={"files": ("c.png", b"x" * 50_000, "image/png")}, timeout=30).status_code == 200
    finally:
        server.stop()


def test_an_upload_the_disk_has_no_room_for_is_refused_before_its_body_is_read(monkeypatch):
    """On a nearly full disk Gradio answered a bare 500, kept the partial file open and failed every later upload."""
    import collections
    import shutil

    from app import build_app
    from zoo import uploads

    usage, real = collections.namedtuple("usage", "total used free"), shutil.disk_usage
    monkeypatch.setattr(uploads.shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 20 * 2**20, 20 * 2**20))
    server = LiveServer(build_app()).start()
    try:
        url = f"{server.url}/gradio_api/upload"
        refused = httpx.post(url, files={"files": ("a.png", b"x" * 5_000_000, "image/png")}, timeout=30)
        assert refused.status_code == 507, refused.text
        assert "disk for uploads is nearly full: 4.0 MiB can be spared, and this upload needs 4.8 MiB" in refused.text
        assert httpx.post(url, files={"files": ("b.png", b"x" * 100_000, "image/png")}, timeout=30).status_code == 200
        monkeypatch.setattr(uploads.shutil, "disk_usage", real)  # room again: taken at once
        again = httpx.post(url, files={"files": ("c.png", b"x" * 5_000_000, "image/png")}, timeout=30)
        assert again.status_code == 200, again.text
    finally:
        server.stop()


def test_a_body_other_than_an_upload_is_at_most_a_mib(tmp_path):
    """A queue call carrying 200 MiB of JSON was read whole, kept in memory and written to the log."""
    import httpx

    from app import build_app
    from tests.liveserver import LiveServer

    server = LiveServer(build_app()).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            big = {"data": ["x" * (2 * 2**20), "resnet18.a1_in1k"]}
            r = http.post("/gradio_api/call/classify", json=big)  # declared: refused before it is read
            assert r.status_code == 413 and "at most 1,024 KiB for anything but a file upload" in r.json()["detail"]
            assert "this one is 2.0 MiB" in r.json()["detail"]

            def chunks():  # no length declared: cut when it passes the limit
                for _ in range(64):
                    yield b"x" * 65536

            r = http.post("/gradio_api/call/classify", content=chunks(),
                          headers={"content-type": "application/json"})
            assert r.status_code == 413 and "at most 1,024 KiB" in r.json()["detail"]
            small = http.post("/gradio_api/call/classify", json={"data": [None, "resnet18.a1_in1k"]})
            assert small.status_code == 200  # a call of ordinary size goes through
            files = {"files": ("a.png", b"\x89PNG" + bytes(2 * 2**20), "image/png")}
            assert http.post("/gradio_api/upload", files=files).status_code == 200  # uploads have their own limits
    finally:
        server.stop()


def test_an_api_call_cannot_name_a_server_file_it_never_uploaded(small_limits, tmp_path):
    """`gr.mount_gradio_app` never marks its Blocks launched, and Gradio checks that an input file was uploaded
    only once they are: an API call could name any file on the server and have it copied and read."""
    import zipfile

    from PIL import Image

    from zoo.ui import refusals

    server, _ = small_limits
    secret = tmp_path / "secret.png"
    Image.new("RGB", (40, 30), (1, 2, 3)).save(secret)
    with zipfile.ZipFile(tmp_path / "secret.zip", "w") as z:
        z.writestr("a/0.png", secret.read_bytes())
        z.writestr("b/0.png", secret.read_bytes())
    source = "My zip of class folders"

    def call(api: str, data: list) -> str:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            event = http.post(f"/gradio_api/call/{api}", json={"data": data}).json()["event_id"]
            return http.get(f"/gradio_api/call/{api}/{event}").text

    def file(path) -> dict:
        return {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    for api, data in (("classify", [file(secret), "resnet18.a1_in1k"]),
                      ("train", [source, file(tmp_path / "secret.zip"), ["resnet18.a1_in1k"], ["linear"], 1, 32])):
        body = call(api, data)
        assert "event: error" in body and "not uploaded by a user" in body, body[-500:]
    assert list(refusals.upload_folder().rglob("secret.*")) == []  # nor copied into Gradio's cache

    # the same file uploaded first is read: the handler answers (here: no weights, in its status line)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        path = http.post("/gradio_api/upload", files={"files": ("cat.png", secret.read_bytes(), "image/png")}).json()[0]
    body = call("classify", [{"path": path, "orig_name": "cat.png", "meta": {"_type": "gradio.FileData"}},
                             "resnet18.a1_in1k"])
    assert "event: complete" in body and "not uploaded by a user" not in body, body[-500:]
