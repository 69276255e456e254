"""Conditional requests per RFC 9110 §13 on every file route (the zoo's and the Hub mirror's): If-Match and
If-Unmodified-Since (412), If-None-Match and If-Modified-Since (304), their precedence, and 416 as JSON."""

from __future__ import annotations

import email.utils
import hashlib

import pytest
from fastapi.testclient import TestClient
from starlette.datastructures import Headers

from app import build_app
from tests.conftest import LIVE_TAGS
from zoo import httpfiles, mirror, weights

TAG = LIVE_TAGS[0]
ROUTES = [f"/api/models/{TAG}/weights", f"/timm/{TAG}/resolve/main/model.safetensors",
          f"/timm/{TAG}/resolve/main/config.json"]


@pytest.fixture
def client(resnet18_file):
    weights.import_file(resnet18_file, TAG)
    with TestClient(build_app()) as c:
        yield c


def _date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


async def _stay() -> dict:
    """An ASGI `receive` for a client that stays connected."""
    import asyncio

    await asyncio.Event().wait()
    return {}


@pytest.mark.parametrize("url", ROUTES)
def test_conditional_requests_follow_rfc_9110(client, url):
    full = client.get(url)
    tag, modified = full.headers["etag"], email.utils.parsedate_to_datetime(full.headers["last-modified"]).timestamp()
    assert full.status_code == 200 and full.headers["x-checksum-sha256"] == hashlib.sha256(full.content).hexdigest()
    cases = [
        ({"If-Match": tag}, 200), ({"If-Match": "*"}, 200), ({"If-Match": f'"x", {tag}'}, 200),
        ({"If-Match": '"other"'}, 412), ({"If-Match": f"W/{tag}"}, 412),  # If-Match compares strongly
        ({"If-Unmodified-Since": _date(modified)}, 200), ({"If-Unmodified-Since": _date(modified - 60)}, 412),
        ({"If-Match": tag, "If-Unmodified-Since": _date(modified - 60)}, 200),  # If-Match wins
        ({"If-Unmodified-Since": "not a date"}, 200),  # an invalid date is ignored
        ({"If-None-Match": tag}, 304), ({"If-None-Match": f"W/{tag}"}, 304), ({"If-None-Match": '"old"'}, 200),
        ({"If-Modified-Since": _date(modified)}, 304), ({"If-Modified-Since": _date(modified + 60)}, 304),
        ({"If-Modified-Since": _date(modified - 60)}, 200),
        ({"If-None-Match": '"old"', "If-Modified-Since": _date(modified + 60)}, 200),  # If-None-Match wins
        ({"If-Match": '"other"', "If-None-Match": tag}, 412),  # If-Match is evaluated first
    ]
    for headers, status in cases:
        for method in ("GET", "HEAD"):
            r = client.request(method, url, headers=headers)
            assert r.status_code == status, (method, headers, r.status_code)
            assert r.headers["etag"] == tag
            if status == 412:
                assert r.json()["error"]["code"] == "precondition_failed" if method == "GET" else r.content == b""
            if status == 304:
                assert r.content == b""


@pytest.mark.parametrize("url", ROUTES)
def test_an_unsatisfiable_range_is_a_json_416_with_the_size(client, url):
    size = len(client.get(url).content)
    for method in ("GET", "HEAD"):
        r = client.request(method, url, headers={"Range": f"bytes={size}-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
    body = client.get(url, headers={"Range": f"bytes={size + 10}-{size + 20}"}).json()["error"]
    assert body["status"] == 416 and body["code"] == "range_not_satisfiable" and str(size) in body["message"]
    stale = client.get(url, headers={"Range": f"bytes={size}-", "If-Range": '"an-old-version"'})
    assert stale.status_code == 200 and len(stale.content) == size  # If-Range no longer holds: the whole file
    whole = client.get(url).content  # a set with one satisfiable range is served (RFC 9110 §14.1.2), not 416
    part = client.get(url, headers={"Range": f"bytes=0-9,{size + 999999}-"})
    assert part.status_code == 206 and part.content == whole[:10] and part.headers["content-range"] == \
        f"bytes 0-9/{size}"
    two = client.get(url, headers={"Range": f"bytes={size}-,-5,0-1"})
    assert two.status_code == 206 and two.headers["content-type"].startswith("multipart/byteranges")
    assert whole[:2] in two.content and whole[-5:] in two.content


def test_small_files_have_the_hubs_etag_the_git_blob_id(client):
    repo = mirror.repo(f"timm/{TAG}")
    config = repo.file("config.json")
    r = client.head(f"/timm/{TAG}/resolve/main/config.json")
    assert r.headers["etag"] == f'"{config.blob_id}"' and "x-linked-etag" not in r.headers
    assert r.headers["content-type"].startswith("application/json") and r.headers["x-repo-commit"] == repo.commit


def test_precondition_evaluation_order():
    tag = '"abc"'
    h = Headers
    assert httpfiles.precondition(h({}), tag, 1000.0) is None
    assert httpfiles.precondition(h({"if-match": '"abc"'}), tag, 1000.0) is None
    assert httpfiles.precondition(h({"if-none-match": "*"}), tag, 1000.0) == 304
    assert httpfiles.precondition(h({"if-modified-since": _date(999)}), tag, 1000.9) is None
    assert httpfiles.precondition(h({"if-modified-since": _date(1000)}), tag, 1000.9) == 304  # 1 s resolution


def test_downloads_are_paced_only_while_classifications_run(client, monkeypatch):
    from zoo import inference

    waits: list[float] = []
    clock = [1000.0]

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(httpfiles, "_pause", sleep)
    monkeypatch.setattr(httpfiles, "_clock", lambda: clock[0])
    monkeypatch.setattr(httpfiles, "_PACE", httpfiles._SharedPace())
    url = f"/api/models/{TAG}/weights"
    size = int(client.get(url).headers["content-length"])
    assert waits == []  # an idle server sends at full speed
    monkeypatch.setattr(inference, "busy", lambda: True)
    body = client.get(url).content
    assert hashlib.sha256(body).hexdigest() == weights.store().record(TAG).sha256
    chunks = -(-size // httpfiles.CHUNK) - 1  # every chunk but the last, which waits for the digest
    pieces = chunks * (httpfiles.CHUNK // httpfiles.PACED_PIECE)
    step = httpfiles.PACED_PIECE / 25e6  # ZOO_BUSY_DOWNLOAD_MBPS=25 by default
    assert len(waits) == pieces and waits[-1] == pytest.approx(step) and max(waits) <= step * 1.001
    assert sum(waits) == pytest.approx(pieces * step - httpfiles._SharedPace.SLACK_S)  # the pace, less the slack


def test_paced_downloads_share_one_budget_and_save_little_credit(monkeypatch):
    now = [50.0]
    monkeypatch.setattr(httpfiles, "_clock", lambda: now[0])
    pace, piece, mbps = httpfiles._SharedPace(), httpfiles.PACED_PIECE, 25.0
    step = piece / (mbps * 1e6)
    slack = httpfiles._SharedPace.SLACK_S
    # the first piece after a quiet spell may use the slack (what timer overshoot costs a download)
    assert pace.wait_after(piece, mbps) == pytest.approx(max(0.0, step - slack))
    now[0] = pace.free_at  # caught up
    # one download alone: each piece's wait is its own time at the pace
    assert pace.wait_after(piece, mbps) == pytest.approx(step)
    now[0] += step
    # four downloads sending a piece each at the same moment: together they keep to the pace
    waits = [pace.wait_after(piece, mbps) for _ in range(4)]
    assert waits == [pytest.approx(step * k) for k in (1, 2, 3, 4)]
    # a quiet minute saves up no more than the slack: a burst after it is paced again within SLACK_S
    now[0] += 60
    burst = [pace.wait_after(piece, mbps) for _ in range(int(slack / step) + 3)]
    assert burst[-1] > 0 and sum(step for _ in burst) - burst[-1] <= slack + step
    # very many downloads at once: nobody waits longer than MAX_WAIT_S between pieces, and the flood leaves
    # no debt behind (before, a download after it crawled at 64 KiB/s while the reservations ran seconds ahead)
    waits = [pace.wait_after(piece, mbps) for _ in range(1000)]
    assert max(waits) == pytest.approx(httpfiles._SharedPace.MAX_WAIT_S)
    now[0] += httpfiles._SharedPace.MAX_WAIT_S
    assert pace.wait_after(piece, mbps) == pytest.approx(step)


def test_concurrent_downloads_draw_on_one_budget(tmp_path, monkeypatch):
    """Two whole-file downloads at once on the server's event loop while classifications run: with the clock
    held still, the last paced chunk waits for every paced chunk of both (before: each download had a budget of
    its own, so its waits never grew and two downloads took twice ZOO_BUSY_DOWNLOAD_MBPS)."""
    import asyncio
    import os

    from zoo import inference

    path = tmp_path / "w.bin"
    path.write_bytes(b"\x03" * (6 * httpfiles.CHUNK))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(httpfiles, "_clock", lambda: 1000.0)
    monkeypatch.setattr(httpfiles, "_PACE", httpfiles._SharedPace())
    monkeypatch.setattr(inference, "busy", lambda: True)
    waits: list[float] = []

    async def pause(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)  # the other download's turn

    monkeypatch.setattr(httpfiles, "_pause", pause)

    async def download() -> bytes:
        sent: list[bytes] = []


        async def send(message: dict) -> None:
            sent.append(message.get("body", b""))

        response = httpfiles.WeightFileResponse(path, stat_result=os.stat(path), sha256=sha, busy_mbps=25.0)
        await response({"type": "http", "method": "GET", "headers": []}, _stay, send)
        return b"".join(sent)

    async def both() -> list[bytes]:
        return list(await asyncio.gather(download(), download()))

    bodies = asyncio.run(both())
    assert [hashlib.sha256(b).hexdigest() for b in bodies] == [sha, sha]
    paced = 2 * 5 * (httpfiles.CHUNK // httpfiles.PACED_PIECE)  # pieces of every chunk but each one's last
    assert len(waits) == paced
    assert max(waits) == pytest.approx(paced * httpfiles.PACED_PIECE / 25e6 - httpfiles._SharedPace.SLACK_S)


def test_a_paced_download_reads_one_chunk_ahead(tmp_path, monkeypatch):
    """Paced downloads last long: each holds one chunk read ahead, not AHEAD (100 paced downloads held 4 MiB each
    before: RSS 1,084 -> 1,720 MB)."""
    import asyncio
    import os
    from concurrent.futures import ThreadPoolExecutor

    from zoo import inference

    submits = [0]

    class Counting(ThreadPoolExecutor):
        def submit(self, *args, **kwargs):
            submits[0] += 1
            return super().submit(*args, **kwargs)

    monkeypatch.setattr(httpfiles, "_LANES", [Counting(max_workers=1)])
    monkeypatch.setattr(httpfiles, "_LANE_LOAD", [0])
    monkeypatch.setattr(httpfiles, "_PACE", httpfiles._SharedPace())
    monkeypatch.setattr(inference, "busy", lambda: True)
    path = tmp_path / "w.bin"
    path.write_bytes(b"\x04" * (8 * httpfiles.CHUNK))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    sent, seen = [0], []

    async def pause(seconds: float) -> None:
        seen.append((sent[0], submits[0]))
        await asyncio.sleep(0)

    monkeypatch.setattr(httpfiles, "_pause", pause)

    async def go() -> None:

        async def send(message: dict) -> None:
            sent[0] += len(message.get("body", b""))

        response = httpfiles.WeightFileResponse(path, stat_result=os.stat(path), sha256=sha, busy_mbps=25.0)
        await response({"type": "http", "method": "GET", "headers": []}, _stay, send)

    asyncio.run(go())
    httpfiles._LANES[0].shutdown()
    assert sent[0] == 8 * httpfiles.CHUNK
    later = [(n, reads) for n, reads in seen if n > httpfiles.CHUNK]  # after the reads queued at the start
    assert later and all(reads <= -(-n // httpfiles.CHUNK) + 1 for n, reads in later)


def _serve(path, sha256: str, leave_after: int | None = None) -> tuple[list[dict], list[str]]:
    """Run a WeightFileResponse for `path` as an ASGI server would; the client leaves after `leave_after` body
    messages. Returns the messages sent and the hashes condemned."""
    import asyncio
    import os

    sent, condemned = [], []

    async def go() -> None:
        left = asyncio.Event()

        async def receive() -> dict:
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)
            if leave_after is not None and sum(m["type"] == "http.response.body" for m in sent) >= leave_after:
                left.set()
                await asyncio.sleep(0.05)  # the server hears of it, as over a socket

        response = httpfiles.WeightFileResponse(path, stat_result=os.stat(path), sha256=sha256,
                                                condemn=condemned.append)
        await response({"type": "http", "method": "GET", "headers": []}, receive, send)

    asyncio.run(go())
    return sent, condemned


def test_a_client_that_leaves_stops_the_reading_and_condemns_nothing(tmp_path, monkeypatch):
    """Before: a client gone after 3 MB still cost a read and hash of the whole file."""
    path = tmp_path / "w.bin"
    path.write_bytes(b"\x01" * (20 * httpfiles.CHUNK + 7))
    monkeypatch.setattr(httpfiles, "AHEAD", 2)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    sent, condemned = _serve(path, sha, leave_after=3)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert 3 <= len(bodies) <= 4 and all(m["more_body"] for m in bodies)  # stopped, never "complete"
    assert condemned == [] and [0] * len(httpfiles._LANES) == httpfiles._LANE_LOAD  # its lane is free again
    sent, condemned = _serve(path, sha)  # the same file to a client that stays: whole and complete
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert hashlib.sha256(body).hexdigest() == sha and sent[-1]["more_body"] is False and condemned == []


@pytest.mark.parametrize("ahead", [1, 3])
def test_a_file_that_grew_after_hashing_is_broken_off_and_condemned(tmp_path, monkeypatch, ahead):
    path = tmp_path / "w.bin"
    data = b"\x02" * (3 * httpfiles.CHUNK)
    path.write_bytes(data + b"more")  # the record's hash is of `data`; the stat taken says 3 chunks
    monkeypatch.setattr(httpfiles, "AHEAD", ahead)
    monkeypatch.setattr(httpfiles.os, "fstat", lambda fd: type("S", (), {"st_size": len(data)})())
    with pytest.raises(httpfiles.DigestMismatch):
        _serve(path, hashlib.sha256(data).hexdigest())


def test_past_max_downloads_a_download_is_refused_with_429_and_retry_after(tmp_path, monkeypatch, caplog):
    """Each body in flight holds chunks read ahead: past ZOO_MAX_DOWNLOADS one more is answered 429 with
    Retry-After (which huggingface_hub waits out), HEAD and a 416 are never refused, a freed place serves again,
    and a flood of refusals logs a line every REFUSALS_LOGGED_EVERY_S, not one per request."""
    import asyncio
    import json
    import os

    monkeypatch.setattr(httpfiles, "_SENDING", [0])
    monkeypatch.setattr(httpfiles, "_REFUSED", {"count": 0, "logged_at": float("-inf")})
    now = [1000.0]
    monkeypatch.setattr(httpfiles, "_clock", lambda: now[0])
    path = tmp_path / "w.bin"
    path.write_bytes(b"\x05" * (3 * httpfiles.CHUNK + 11))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()

    def digest(sent: list[dict]) -> str:
        return hashlib.sha256(b"".join(m.get("body", b"") for m in sent[1:])).hexdigest()

    async def go() -> None:
        hold = asyncio.Event()


        async def request(method: str = "GET", held: bool = False, headers: list | None = None) -> list[dict]:
            sent: list[dict] = []

            async def send(message: dict) -> None:
                sent.append(message)
                if held:
                    await hold.wait()  # a slow client: the body stays in flight

            response = httpfiles.WeightFileResponse(path, stat_result=os.stat(path), sha256=sha, max_sending=2)
            await response({"type": "http", "method": method, "headers": headers or []}, _stay, send)
            return sent

        slow = [asyncio.create_task(request(held=True)) for _ in range(2)]
        while httpfiles._SENDING[0] < 2:
            await asyncio.sleep(0)
        refused = await request()
        start = refused[0]
        assert start["status"] == 429 and (b"retry-after", b"5") in start["headers"]
        body = json.loads(refused[1]["body"])["error"]
        assert body["code"] == "too_many_downloads" and "ZOO_MAX_DOWNLOADS=2" in body["message"]
        head = await request("HEAD")
        assert head[0]["status"] == 200 and (b"content-length", str(path.stat().st_size).encode()) in head[0]["headers"]
        beyond = await request(headers=[(b"range", b"bytes=999999999-")])  # no body to send: the 416, not a 429
        assert beyond[0]["status"] == 416
        await request()
        now[0] += httpfiles.REFUSALS_LOGGED_EVERY_S
        await request()
        hold.set()
        for done in await asyncio.gather(*slow):
            assert done[0]["status"] == 200 and digest(done) == sha
        assert httpfiles._SENDING[0] == 0
        again = await request()
        assert again[0]["status"] == 200 and digest(again) == sha

    with caplog.at_level("WARNING", logger="zoo.httpfiles"):
        asyncio.run(go())
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and said[0].startswith("1 download(s) refused") and said[1].startswith("2 download(s)")
    assert "ZOO_MAX_DOWNLOADS=2" in said[1]


def test_a_client_that_takes_nothing_is_dropped_and_frees_its_place(tmp_path, monkeypatch, caplog):
    """Clients that send a GET and read nothing held every place for ever (a new download still got 429 after
    150 s); one that takes nothing for STALL_S is dropped now."""
    import asyncio
    import os

    monkeypatch.setattr(httpfiles, "_SENDING", [0])
    monkeypatch.setattr(httpfiles, "STALL_S", 0.2)
    path = tmp_path / "w.bin"
    path.write_bytes(b"\x07" * (3 * httpfiles.CHUNK))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    sent: list[dict] = []

    async def go() -> None:

        async def send(message: dict) -> None:
            sent.append(message)
            if message["type"] == "http.response.body":
                await asyncio.Event().wait()  # the socket's buffers are full and the client reads nothing

        response = httpfiles.WeightFileResponse(path, stat_result=os.stat(path), sha256=sha, max_sending=1,
                                                filename="m.safetensors")
        await asyncio.wait_for(response({"type": "http", "method": "GET", "headers": []}, _stay, send), 30)

    with caplog.at_level("WARNING", logger="zoo.httpfiles"):
        asyncio.run(go())
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]  # never completed
    assert [r.getMessage() for r in caplog.records] == ["download of m.safetensors dropped: the client did not "
                                                        "take a chunk within 0.2 s"]
    assert httpfiles._SENDING == [0]


def test_a_download_cut_off_by_shutdown_logs_one_line_not_a_traceback(tmp_path, monkeypatch, caplog):
    """uvicorn cancels requests still running when ZOO_SHUTDOWN_S runs out; each download then said so with a
    full CancelledError traceback (49 of them for 50 downloads)."""
    import asyncio
    import os

    monkeypatch.setattr(httpfiles, "_SENDING", [0])
    path = tmp_path / "w.bin"
    path.write_bytes(b"\x06" * (3 * httpfiles.CHUNK))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()

    async def go() -> None:
        started = asyncio.Event()


        async def send(message: dict) -> None:
            started.set()
            await asyncio.Event().wait()  # a slow client

        response = httpfiles.WeightFileResponse(path, stat_result=os.stat(path), sha256=sha, filename="m.safetensors")
        task = asyncio.create_task(response({"type": "http", "method": "GET", "headers": []}, _stay, send))
        await started.wait()
        task.cancel("Task cancelled, timeout graceful shutdown exceeded")
        await task  # returns: uvicorn then closes the connection

    with caplog.at_level("WARNING", logger="zoo.httpfiles"):
        asyncio.run(go())
    said = [r.getMessage() for r in caplog.records]
    assert said == ["download of m.safetensors cut off: the server is shutting down"]
    assert httpfiles._SENDING == [0]


def test_retry_after_estimates_when_a_place_frees(tmp_path, monkeypatch):
    """Retry-After is the time until the first body in flight should end at its rate so far, or be dropped for
    stalling, within 1..RETRY_AFTER_MAX_S; RETRY_AFTER_S while no body has moved for ESTIMATE_AFTER_S. Before,
    always 5 s: huggingface_hub gave up after five retries (30 s) while slow downloads held every place."""
    import asyncio
    import os

    monkeypatch.setattr(httpfiles, "_SENDING", [0])
    monkeypatch.setattr(httpfiles, "_IN_FLIGHT", {})
    now = [1000.0]
    monkeypatch.setattr(httpfiles, "_clock", lambda: now[0])
    path = tmp_path / "w.bin"
    path.write_bytes(b"\x05" * (3 * httpfiles.CHUNK))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()

    async def go() -> list[str]:
        hold, seen = asyncio.Event(), []

        async def request(hold_after: int | None = None) -> list[dict]:
            sent: list[dict] = []

            async def send(message: dict) -> None:
                sent.append(message)
                if hold_after is not None and len(sent) > hold_after:
                    await hold.wait()  # takes the headers and `hold_after - 1` chunks, then nothing

            response = httpfiles.WeightFileResponse(path, stat_result=os.stat(path), sha256=sha, max_sending=2)
            await response({"type": "http", "method": "GET", "headers": []}, _stay, send)
            return sent

        slow = [asyncio.create_task(request(hold_after=2)) for _ in range(2)]  # one chunk of three sent each
        while sum(p[2] for p in httpfiles._IN_FLIGHT.values()) < 2 * httpfiles.CHUNK:
            await asyncio.sleep(0)
        for t in (1001.0, 1010.0, 1040.0, 1100.0):
            now[0] = t
            refused = await request()
            assert refused[0]["status"] == 429
            seen.append(dict(refused[0]["headers"])[b"retry-after"].decode())
        hold.set()
        await asyncio.gather(*slow)
        assert httpfiles._IN_FLIGHT == {} and httpfiles._SENDING == [0]
        return seen

    # 1 s in: too soon to tell (5); at 10 s, one chunk of three in 10 s: 20 s to go; at 40 s: the rate says 80 s
    # more, but a body that has not moved for 40 s is dropped at 60 s: 20 s; at 100 s: dropped any moment (1)
    assert asyncio.run(go()) == ["5", "20", "20", "1"]
