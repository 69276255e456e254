"""A server that begins to shut down ends its long jobs at once, with a sentence their page can show."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.liveserver import free_port
from zoo import lifecycle
from zoo.errors import Cancelled, ServerStopping
from zoo.settings import REPO_ROOT
from zoo.ui import relay


def test_a_job_s_handler_ends_with_the_sentence_wherever_the_job_is():
    release, finished, seen = threading.Event(), threading.Event(), {}

    def job(emit, cancel):
        emit("report", 1)
        release.wait(10)  # like reading a dataset: a step that does not look at `cancel`
        seen["cancelled"] = cancel.is_set()
        finished.set()
        return "trained"

    events = relay.relay(job, "test-job")
    assert next(events) == ("report", 1)
    lifecycle.begin_shutdown(grace_s=2.0)  # the job may take 1 s of it to clean up; one second stays for the answer
    try:
        start = time.monotonic()
        with pytest.raises(ServerStopping, match="The server is shutting down, so this training was stopped"):
            next(events)
        assert 0.9 < time.monotonic() - start < 1 + 2 * relay.WATCH_S + 0.5
    finally:
        lifecycle.serve_again()
        release.set()
    assert finished.wait(10) and seen["cancelled"]  # the job itself stops at its next step


def test_a_job_that_stops_at_cancel_has_cleaned_up_before_the_page_is_told():
    cleaned = threading.Event()

    def job(emit, cancel):
        try:
            while not cancel.wait(0.05):  # training steps
                emit("report", None)
            raise Cancelled("The run was cancelled; nothing was kept.")  # as `transfer.fit` does
        finally:
            time.sleep(0.3)  # removing its job folder
            cleaned.set()

    events = relay.relay(job, "test-job")
    next(events)
    lifecycle.begin_shutdown(grace_s=10.0)
    try:
        with pytest.raises(ServerStopping):
            for _ in events:
                pass
        assert cleaned.is_set()
    finally:
        lifecycle.serve_again()


def test_a_job_that_finishes_while_the_server_stops_is_answered_whole():
    def job(emit, cancel):
        emit("report", 1)
        cancel.wait(10)  # the last step, which does not look at `cancel` again: saving the run
        time.sleep(0.2)
        return "saved"

    events = relay.relay(job, "test-job")
    assert next(events) == ("report", 1)
    lifecycle.begin_shutdown(grace_s=10.0)
    try:
        assert list(events) == [("done", "saved")]  # not "nothing of it was kept" for a run that was stored
    finally:
        lifecycle.serve_again()


def test_a_job_whose_turn_comes_while_the_server_stops_is_not_started():
    started = threading.Event()
    lifecycle.begin_shutdown(grace_s=10.0)
    try:
        with pytest.raises(ServerStopping):
            next(relay.relay(lambda emit, cancel: started.set(), "test-job"))
    finally:
        lifecycle.serve_again()
    assert not started.is_set()  # no job folder made, no dataset unpacked


@pytest.mark.slow
def test_an_evaluation_of_a_big_zip_ends_with_its_own_sentence_when_the_server_stops(tmp_path, resnet18_file,
                                                                                     monkeypatch):
    from zoo import weights
    from zoo.ui import compare_tab

    weights.import_file(resnet18_file, "resnet18.a1_in1k")
    path = _big_zip(tmp_path)
    answer = {}
    tags = ["resnet18.a1_in1k"]
    worker = threading.Thread(target=lambda: answer.update(out=list(compare_tab.evaluate_zip(str(path), tags))[-1]))
    worker.start()
    time.sleep(4)
    assert worker.is_alive()  # still evaluating
    lifecycle.begin_shutdown(grace_s=3.0)
    try:
        start = time.monotonic()
        worker.join(10)
        assert time.monotonic() - start < 3.5
    finally:
        lifecycle.serve_again()
    status = answer["out"][-1]
    assert not [t for t in threading.enumerate() if t.name == "zoo-evaluate"]  # it stopped at its next batch
    assert "The server is shutting down, so this evaluation was stopped before it finished." in status
    assert "nothing of it was kept" not in status


def test_a_quiet_job_gives_its_handler_a_tick_and_stops_when_the_handler_is_closed(monkeypatch):
    monkeypatch.setattr(relay, "TICK_S", 0.3)
    stopped = threading.Event()

    def job(emit, cancel):  # a long step that emits nothing
        cancel.wait(30)
        stopped.set()

    events = relay.relay(job, "test-job")
    start = time.monotonic()
    assert next(events) == ("tick", None)
    assert 0.25 < time.monotonic() - start < 1.0
    events.close()  # what Gradio does once it sees the client has left
    assert stopped.wait(2)


def _big_zip(tmp_path) -> Path:
    """3,000 small PNGs of one class: a minute or more of evaluation on this machine."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 90, 60)).save(buf, "PNG")
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(3000):
            z.writestr(f"tabby/{i}.png", buf.getvalue())
    return path


@pytest.mark.slow
def test_an_api_client_that_drops_its_stream_stops_its_evaluation(tmp_path, live_zoo):
    """Gradio notices a client that left only when the handler yields: the evaluation ran on for minutes (1.8
    cores) after an API client dropped `/gradio_api/call/evaluate`'s stream; now it stops within seconds."""
    import httpx

    with open(_big_zip(tmp_path), "rb") as f:
        path = httpx.post(f"{live_zoo.url}/gradio_api/upload", files={"files": ("big.zip", f)}, timeout=60).json()[0]
    data = [{"path": path, "orig_name": "big.zip", "meta": {"_type": "gradio.FileData"}}, ["resnet18.a1_in1k"]]
    event = httpx.post(f"{live_zoo.url}/gradio_api/call/evaluate", json={"data": data}, timeout=30).json()["event_id"]
    host, port = live_zoo.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as stream:
        stream.sendall(f"GET /gradio_api/call/evaluate/{event} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        deadline = time.monotonic() + 30
        while not _evaluating() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _evaluating()
        time.sleep(1)
        assert stream.recv(65536).startswith(b"HTTP/1.1 200")  # the stream is open, then dropped
    # the connection is closed: the evaluation stops at its next batch
    deadline = time.monotonic() + 30
    while _evaluating() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _evaluating(), "the evaluation ran on after its client left"


def _evaluating() -> bool:
    return any(t.name == "zoo-evaluate" for t in threading.enumerate())


def test_a_job_that_finishes_is_unaffected_by_a_server_that_serves():
    assert not lifecycle.stopping()
    assert list(relay.relay(lambda emit, cancel: (emit("report", 2), "trained")[1], "test-job")) == [
        ("report", 2),
        ("done", "trained"),
    ]


@pytest.mark.slow
def test_sigterm_during_training_tells_the_page_why_and_the_server_exits_without_waiting_out_the_grace():
    import httpx

    from zoo.ui.degradation_tab import DATA_DIGITS

    port = free_port()
    env = {**os.environ, "ZOO_PORT": str(port), "ZOO_SHUTDOWN_S": "60", "PYTHONPATH": str(REPO_ROOT)}
    server = subprocess.Popen([sys.executable, str(REPO_ROOT / "app.py")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the app did not start"
            time.sleep(0.3)
        with httpx.Client(base_url=url, timeout=60) as http:
            data = [DATA_DIGITS, None, [56], "A", 30, 8, True]  # minutes of training
            event = http.post("/gradio_api/call/degradation", json={"data": data}).json()["event_id"]
            updates = []
            with http.stream("GET", f"/gradio_api/call/degradation/{event}") as stream:
                lines = stream.iter_lines()
                for line in lines:
                    if line.startswith("data:") and "Epoch 1 of 30" in line:
                        break  # training has started
                start = time.monotonic()
                server.send_signal(signal.SIGTERM)
                kind = None
                for line in lines:
                    if line.startswith("event:"):
                        kind = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        updates.append((kind, line[5:].strip()))
            server.wait(timeout=30)
        took = time.monotonic() - start
    finally:
        if server.poll() is None:
            server.kill()
    last_kind, last = updates[-1]
    assert last_kind == "complete", updates[-3:]
    assert "The server is shutting down, so this training was stopped" in json.loads(last)[0]
    assert "cancel scope" not in server.stderr.read()
    assert took < 15, took  # not ZOO_SHUTDOWN_S=60: the stream ended as soon as the job did


def test_a_server_that_shut_down_leaves_the_process_stopping_until_a_server_starts_again():
    from starlette.applications import Starlette

    from tests.liveserver import LiveServer

    first = LiveServer(Starlette()).start()
    assert not lifecycle.stopping()
    first.stop()
    assert lifecycle.stopping()  # a job whose handler runs on after its connection closed still sees it
    second = LiveServer(Starlette()).start()
    assert not lifecycle.stopping()
    second.stop()
