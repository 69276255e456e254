"""Gradio's queue loops wait for work instead of polling (zoo.ui.queuewake), and still start every event at once."""

from __future__ import annotations

import threading
import time
from collections import Counter

import gradio as gr
import httpx
import pytest
from fastapi import FastAPI
from gradio import queueing

from tests.liveserver import LiveServer
from zoo.ui import queuewake


def _served(wake: bool):
    """A two-event demo on a live server: `echo` (no limit) and `slow` (one at a time, 0.3 s each)."""

    def slow(x: str) -> str:
        time.sleep(0.3)
        return x

    with gr.Blocks() as demo:
        box, out = gr.Textbox(), gr.Textbox()
        box.submit(lambda x: x, box, out, api_name="echo")
        box.change(slow, box, out, api_name="slow", concurrency_limit=1)
    demo.queue()
    app = gr.mount_gradio_app(FastAPI(), demo, path="/")
    gradio_app = app.routes[-1].app
    if wake:
        queuewake.install(gradio_app)
    return LiveServer(app).start(), gradio_app.get_blocks()._queue


def _call(url: str, api: str, value: str) -> str:
    with httpx.Client(base_url=url, timeout=60) as http:
        r = http.post(f"/gradio_api/call/{api}", json={"data": [value]})
        r.raise_for_status()
        with http.stream("GET", f"/gradio_api/call/{api}/{r.json()['event_id']}") as s:
            body = b"".join(s.iter_bytes()).decode()
    assert "event: complete" in body, body
    return body


@pytest.fixture
def checks(monkeypatch):
    """How many times each Gradio queue (by id) has looked at its length (once per turn of its processing loop);
    other tests' servers may still be running theirs."""
    seen: Counter[int] = Counter()
    length = queueing.Queue.__len__

    def counted(self):
        seen[id(self)] += 1
        return length(self)

    monkeypatch.setattr(queueing.Queue, "__len__", counted)
    return seen


@pytest.mark.parametrize("wake", [False, True], ids=["gradio's own loop", "woken"])
def test_an_idle_queue_looks_for_work_only_when_woken(checks, wake):
    server, queue = _served(wake)
    try:
        _call(server.url, "echo", "warm")  # the queue's loops are running
        time.sleep(0.2)
        before = checks[id(queue)]
        time.sleep(1.0)
        idle = checks[id(queue)] - before
    finally:
        server.stop()
    if wake:  # the fallback wake-up alone: every FALLBACK_S = 0.25 s
        assert idle <= 10
    else:  # Gradio's loop turns every 1 ms (the load this module removes)
        assert idle >= 100


def test_a_woken_queue_starts_each_event_when_it_joins_or_its_place_frees(monkeypatch):
    monkeypatch.setattr(queuewake, "FALLBACK_S", 60.0)  # a missed wake-up would wait a minute
    server, queue = _served(True)
    try:
        started = time.monotonic()
        assert "warm" in _call(server.url, "echo", "warm")
        assert time.monotonic() - started < 5
        # three at once on a concurrency limit of 1: each waits for the one before it to end, then starts
        answers: list[str] = []
        calls = [threading.Thread(target=lambda v=v: answers.append(_call(server.url, "slow", v))) for v in "abc"]
        started = time.monotonic()
        for call in calls:
            call.start()
        for call in calls:
            call.join(30)
        took = time.monotonic() - started
    finally:
        server.stop()
    assert sorted(a.split("data: ")[-1].strip() for a in answers) == ['["a"]', '["b"]', '["c"]']
    assert 0.9 <= took < 5  # three turns of 0.3 s one after another, not a minute
    assert isinstance(queue.sleep_when_free, queuewake.IdleDelay)


def test_install_twice_keeps_one_wake_and_an_unknown_queue_is_refused(monkeypatch):
    with gr.Blocks() as demo:
        gr.Textbox()
    demo.queue()
    gradio_app = gr.mount_gradio_app(FastAPI(), demo, path="/").routes[-1].app
    wake = queuewake.install(gradio_app)
    assert queuewake.install(gradio_app) is wake
    monkeypatch.setattr(queueing.Queue, "start_processing", lambda self: None)  # not Gradio's loop any more
    with pytest.raises(RuntimeError, match="queuewake needs updating"):
        queuewake.install(gr.mount_gradio_app(FastAPI(), gr.Blocks().queue(), path="/").routes[-1].app)
