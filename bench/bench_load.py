"""The whole app under load and hostile input stays within its limits (loopback only, about 5 minutes).

`python app.py` runs as a child process on 127.0.0.1 with a fresh weight store of seeded random weights
(the Hub is out of reach; speed and memory do not depend on the values), eager PyTorch and a model
memory budget of B = BUDGET_MB. Its memory is read from /proc (VmRSS, and VmHWM reset through
clear_refs before each peak). In order:
- idle: classify one image at a time, as a browser does (upload, queue call, server-sent events), IDLE_N times
  before the load and IDLE_N times after it. The idle p50 is the median of both sets (the median of one set of
  30 moved by 75-150 ms between server starts); each set's own median is printed too: a server slower after
  the load than before it has kept something it should not have;
- load: 8 such classify clients (each request a new Gradio session) and 4 loops downloading a weight
  file (SHA-256 checked) for LOAD_S seconds. Errors other than deliberate 429/503 answers fail it.
  Classify p99 must stay within 8x the idle p50, over the requests of the steady load: those started after the
  warm-up and SETTLE_S past the clients' resumption after the RSS reading. The issue's load is 8 clients that
  keep going; the bench's own start and restart, every client at once on an empty queue, are bursts it never
  has (the p99 over every request is printed beside it). RSS growth after a warm-up within 20 MB per 1,000
  requests (both RSS readings taken with no request in flight, after a pause longer than the heap trimmer's
  period). Clients start, and resume after that pause, a random fraction of a second apart, as people do;
- a 94-byte 4000x1 PNG: peak RSS growth within 100 MB;
- the six default tags round robin, twice: peak RSS within baseline + B + 300 MB.
"""

from __future__ import annotations

import gc
import hashlib
import io
import itertools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import StealMonitor, Target, free_port

# RSS read with nothing in flight still moves by up to 16 MB from one pause to the next, with no trend (which of
# the heap's pages the last requests left in use): the slope needs ~2,000 requests to resolve 20 MB per 1,000
LOAD_S = float(os.environ.get("ZOO_BENCH_LOAD_S", "180"))
WARMUP_S = 20.0  # RSS growth is measured from here on (batches of every size have come by then)
# the pause before each RSS reading that counts: no request in flight, and the server's heap trimmer (which runs
# at most every residency.TRIM_EVERY_S = 5 s) has had its turn; at 2 s, readings differed by up to 100 MB
QUIET_S = 6.5
SETTLE_S = 5.0  # after the clients resume: the queue refills from empty and the batches find their sizes again
STAGGER_S = 1.0  # clients start and resume spread over this long
IDLE_N = 30
BURST = 0.10  # a sampling interval in which the hypervisor took more than this share of the CPU is a steal burst
BUDGET_MB = 400
CLASSIFY_CLIENTS, DOWNLOAD_LOOPS = 8, 4
TAG = "resnet18.a1_in1k"


def _rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of `pid` in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def _store(tmp: Path, tags: list[str]) -> None:
    import timm
    import torch
    from safetensors.torch import save_file

    from zoo import registry, weights

    for tag in tags:
        torch.manual_seed(0)
        path = tmp / f"{tag}.safetensors"
        save_file(timm.create_model(registry.get(tag).arch).state_dict(), str(path))
        weights.import_file(path, tag)
        path.unlink()


def _start(env: dict[str, str], port: int) -> subprocess.Popen:
    import httpx

    from zoo.settings import REPO_ROOT

    server = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "app.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the app did not start: {server.stderr.read()[-500:] if server.stderr else ''}")
        time.sleep(0.3)


class Browser:
    """What the page does for one classification: upload, queue call, read the server-sent events."""

    def __init__(self, url: str):
        import httpx

        self.http = httpx.Client(base_url=url, timeout=120)

    def classify(self, image: bytes, tag: str) -> int:
        """The HTTP status: 200 for a complete answer (else RuntimeError), or the refusal's status."""
        r = self.http.post("/gradio_api/upload", files={"files": ("image.png", image, "image/png")})
        if r.status_code != 200:
            return r.status_code
        data = [{"path": r.json()[0], "orig_name": "image.png", "meta": {"_type": "gradio.FileData"}}, tag]
        r = self.http.post("/gradio_api/call/classify", json={"data": data})
        if r.status_code != 200:
            return r.status_code
        with self.http.stream("GET", f"/gradio_api/call/classify/{r.json()['event_id']}") as s:
            body = b"".join(s.iter_bytes())
        if b"event: complete" in body:
            return 200
        if b"Queue is full" in body or b"queue is full" in body.lower():
            return 503
        raise RuntimeError(f"classify failed: {body[-300:]!r}")


def _image() -> bytes:
    from zoo.settings import REPO_ROOT

    return (REPO_ROOT / "examples" / "chelsea.jpg").read_bytes()


def _load(url: str, pid: int, sha256: str) -> dict:
    import httpx

    image, stop, lock = _image(), threading.Event(), threading.Lock()
    paused, warm = threading.Event(), threading.Event()
    stats = {"latencies": [], "errors": [], "refused": 0, "downloads": 0, "after_warmup": 0}

    def gate() -> None:
        if paused.is_set():
            while paused.is_set() and not stop.is_set():
                time.sleep(0.02)
            time.sleep(random.uniform(0, STAGGER_S))

    def classify_loop():
        browser = Browser(url)
        time.sleep(random.uniform(0, STAGGER_S))
        while not stop.is_set():
            gate()
            t = time.perf_counter()
            try:
                status = browser.classify(image, TAG)
            except Exception as exc:  # counted, never raised: the figure is the error count
                with lock:
                    stats["errors"].append(f"{type(exc).__name__}: {str(exc)[:120]}")
                continue
            with lock:
                if status == 200:
                    stats["latencies"].append((t, (time.perf_counter() - t) * 1000))
                    stats["after_warmup"] += warm.is_set()
                elif status in (429, 503):
                    stats["refused"] += 1
                else:
                    stats["errors"].append(f"HTTP {status}")

    def download_loop():
        with httpx.Client(base_url=url, timeout=120) as http:
            while not stop.is_set():
                gate()
                digest = hashlib.sha256()
                try:
                    with http.stream("GET", f"/api/models/{TAG}/weights") as r:
                        for chunk in r.iter_bytes(1 << 20):
                            digest.update(chunk)
                    ok = r.status_code == 200 and digest.hexdigest() == sha256
                except httpx.HTTPError as exc:
                    ok, r = False, type(exc).__name__
                with lock:
                    stats["downloads"] += ok
                    if not ok:
                        stats["errors"].append(f"download: {getattr(r, 'status_code', r)}")

    threads = [threading.Thread(target=classify_loop, daemon=True) for _ in range(CLASSIFY_CLIENTS)]
    threads += [threading.Thread(target=download_loop, daemon=True) for _ in range(DOWNLOAD_LOOPS)]
    for t in threads:
        t.start()
    time.sleep(WARMUP_S)
    paused.set()  # RSS is read with nothing in flight (buffers and batches come and go by 100 MB and more)
    time.sleep(QUIET_S)
    stats["rss_warm"] = _rss(pid)["VmRSS"]
    warm.set()
    paused.clear()
    stats["steady_from"] = time.perf_counter() + SETTLE_S
    end = time.monotonic() + LOAD_S - WARMUP_S
    samples, counts = [], []
    while time.monotonic() < end:
        time.sleep(min(5, max(0.0, end - time.monotonic())))
        samples.append(round(_rss(pid)["VmRSS"]))
        counts.append(stats["after_warmup"])
    slope = statistics.linear_regression(counts, samples).slope * 1000 if len(set(counts)) > 1 else float("nan")
    print(f"RSS every 5 s after warm-up, requests in flight (MB): {samples}; their trend: {slope:+.1f} MB per "
          "1,000 requests", flush=True)
    stop.set()
    for t in threads:
        t.join(120)
    time.sleep(QUIET_S)
    stats["rss_end"] = _rss(pid)["VmRSS"]
    return stats


def _idle(browser: Browser, image: bytes) -> list[float]:
    """Latencies (ms) of IDLE_N classifications one at a time."""
    idle = []
    for _ in range(IDLE_N):
        t = time.perf_counter()
        if browser.classify(image, TAG) != 200:
            raise RuntimeError("an idle classification was refused")
        idle.append((time.perf_counter() - t) * 1000)
    return idle


def _print_steal(steal: StealMonitor, marks: list[float], stats: dict, lat: list[float], idle_p50: float) -> None:
    """How much CPU the hypervisor took in each phase, and the steady load's p99 without its steal bursts.

    Information only: the target is judged on every steady request. A run whose load met a burst that its idle
    sets did not (or the other way round) measured the machine as well as the server; this line says so.
    """
    shares = [steal.share(a, b) for a, b in itertools.pairwise(marks)]
    bursts = steal.bursts(BURST)
    clear = [ms for t, ms in stats["latencies"]
             if t >= stats["steady_from"] and not any(t < b and t + ms / 1000 > a for a, b in bursts)]
    print(
        f"CPU steal (the hypervisor's share of this machine's CPU time): {shares[0]:.1%} in the idle set before "
        f"the load, {shares[1]:.1%} during the load, {shares[2]:.1%} in the idle set after; "
        f"{sum(b - a for a, b in bursts):.1f} s of bursts over {BURST:.0%}, during which "
        f"{len(lat) - len(clear)} of the {len(lat)} steady requests ran; the p99 of the other {len(clear)}: "
        f"{_p(clear, 99):.0f} ms, {_p(clear, 99) / idle_p50:.1f}x idle p50 (information only)",
        flush=True,
    )


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values or [float("nan")])[0]


def run() -> list[Target]:
    if not sys.platform.startswith("linux"):
        print("SKIP load_*: reads the server's memory from /proc (Linux only)", flush=True)
        return []
    from zoo import compare, residency, settings, weights

    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    port = free_port()
    env = {
        **os.environ,
        "ZOO_WEIGHTS_DIR": str(tmp / "weights"),
        "HF_HUB_OFFLINE": "1",
        "ZOO_CPU_BACKEND": "eager",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "ZOO_PORT": str(port),
        "ZOO_HOST": "127.0.0.1",
        "ZOO_MODEL_MEMORY_MB": str(BUDGET_MB),
    }
    os.environ["ZOO_WEIGHTS_DIR"] = env["ZOO_WEIGHTS_DIR"]
    settings.get_settings.cache_clear()
    six = compare.default_tags()
    _store(tmp, [TAG, *six])
    sha256 = weights.store().record(TAG).sha256
    server = _start(env, port)
    url = f"http://127.0.0.1:{port}"
    # this process holds torch and timm too: a full collection here (~300 ms, every client thread stopped) would
    residency.freeze_startup_objects()  # land in the latencies measured; the server does the same (app.serve)
    try:
        with StealMonitor() as steal:
            return _measure(server.pid, url, sha256, six, steal)
    finally:
        gc.unfreeze()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def _measure(pid: int, url: str, sha256: str, six: list[str], steal: StealMonitor) -> list[Target]:
    browser, image = Browser(url), _image()
    for _ in range(3):
        browser.classify(image, TAG)
    marks = [time.perf_counter()]
    idle = _idle(browser, image)
    marks.append(time.perf_counter())
    stats = _load(url, pid, sha256)
    marks.append(time.perf_counter())
    idle += _idle(browser, image)
    marks.append(time.perf_counter())
    idle_p50 = statistics.median(idle)
    every = [ms for _, ms in stats["latencies"]]
    lat = [ms for t, ms in stats["latencies"] if t >= stats["steady_from"]]
    p50, p99 = statistics.median(lat), _p(lat, 99)
    growth = (stats["rss_end"] - stats["rss_warm"]) / max(stats["after_warmup"], 1) * 1000
    print(
        f"idle classify p50 {idle_p50:.0f} ms ({statistics.median(idle[:IDLE_N]):.0f} before the load, "
        f"{statistics.median(idle[IDLE_N:]):.0f} after); under {CLASSIFY_CLIENTS} classify clients + "
        f"{DOWNLOAD_LOOPS} download loops for {LOAD_S:.0f} s: {len(lat)} classifications in the steady load "
        f"(p50 {p50:.0f} ms, p99 {p99:.0f} ms, {p99 / idle_p50:.1f}x idle p50; over all {len(every)} with the "
        f"start and restart: p99 {_p(every, 99):.0f} ms, {_p(every, 99) / idle_p50:.1f}x), "
        f"{stats['downloads']} downloads with the right SHA-256, "
        f"{stats['refused']} deliberate 429/503, {len(stats['errors'])} errors {stats['errors'][:3]}",
        flush=True,
    )
    _print_steal(steal, marks, stats, lat, idle_p50)
    print(
        f"RSS {stats['rss_warm']:.0f} MB after warm-up, {stats['rss_end']:.0f} MB at the end over "
        f"{stats['after_warmup']} requests: {growth:.1f} MB per 1,000",
        flush=True,
    )

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4000, 1), (200, 30, 30)).save(buf, "PNG", optimize=True)
    time.sleep(1)
    _reset_peak(pid)
    before = _rss(pid)["VmRSS"]
    status = browser.classify(buf.getvalue(), TAG)
    wide = _rss(pid)["VmHWM"] - before
    print(f"a {len(buf.getvalue())}-byte 4000x1 PNG: HTTP {status}, peak RSS {wide:+.0f} MB", flush=True)

    baseline = _rss(pid)["VmRSS"]
    _reset_peak(pid)
    for _ in range(2):
        for tag in six:
            if browser.classify(image, tag) != 200:
                raise RuntimeError(f"classify with {tag} was refused")
    peak = _rss(pid)["VmHWM"]
    print(
        f"six-model round robin ({', '.join(six)}) with ZOO_MODEL_MEMORY_MB={BUDGET_MB}: baseline "
        f"{baseline:.0f} MB, peak {peak:.0f} MB (+{peak - baseline:.0f} MB; target <= B + 300 = "
        f"{BUDGET_MB + 300} MB)",
        flush=True,
    )
    return [
        Target("load_errors", float(len(stats["errors"])), "<=", 0.0),
        Target("load_classify_p99_over_idle_p50", p99 / idle_p50, "<=", 8.0),
        Target("load_rss_mb_per_1000_requests", growth, "<=", 20.0),
        Target("load_wide_image_peak_mb", wide, "<=", 100.0),
        Target("load_round_robin_peak_over_budget_mb", peak - baseline - BUDGET_MB, "<=", 300.0),
    ]
