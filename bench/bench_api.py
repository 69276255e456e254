"""Download throughput of a ~100 MB weight from the zoo's REST API against nginx serving the same file.

Both run as one process each on 127.0.0.1 (`python app.py` with one uvicorn worker; Debian's nginx
with `worker_processes 1`, sendfile on), started here. curl downloads the file from each in turn,
ROUNDS times; the medians are compared. Target: the zoo at least 0.5x nginx.
Weights are random (a resnet50 state dict, 102 MB); throughput does not depend on their values.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import Target, free_port

ROUNDS = 25  # a download takes ~0.1 s; many rounds steady the medians (nginx alone varies 2x run to run)
TAG = "resnet50.a1_in1k"
NGINX_CONF = """
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
    }}
}}
"""


def _wait(url: str, proc: subprocess.Popen, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + 60
    while subprocess.run(["curl", "-sf", "-o", "/dev/null", url]).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            detail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} did not start at {url}. {detail}")
        time.sleep(0.2)


def _speed(url: str, size: int) -> float:
    """MB/s of one curl download of `url` (checks the byte count)."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
                         capture_output=True, text=True, check=True).stdout.split()
    if int(out[0]) != size:
        raise RuntimeError(f"{url} sent {out[0]} bytes, not {size}")
    return size / float(out[1]) / 1e6


def _nginx() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def missing() -> str | None:
    """Why this benchmark cannot run here (a tool or package it needs), or None."""
    tools = [name for name, found in (("nginx", _nginx()), ("curl", shutil.which("curl"))) if not found]
    if tools:
        return f"{' and '.join(tools)} not installed (apt-get install nginx-light curl)"
    packages = [m for m in ("fastapi", "uvicorn", "gradio") if importlib.util.find_spec(m) is None]
    if packages:
        return f"{', '.join(packages)} not installed (pip install -r requirements.txt)"
    return None


def run() -> list[Target]:
    why = missing()
    if why:
        print(f"SKIP api_download_vs_nginx: {why}", flush=True)
        return []
    nginx = _nginx()
    import timm
    import torch
    from safetensors.torch import save_file

    root = Path(tempfile.mkdtemp(prefix="bench-api-"))
    root.chmod(0o755)  # nginx workers may run as another user
    torch.manual_seed(0)
    src = root / "src.safetensors"
    save_file(timm.create_model("resnet50").state_dict(), str(src))
    src.chmod(0o644)  # readable by nginx workers
    env = {**os.environ, "ZOO_WEIGHTS_DIR": str(root / "weights"), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    subprocess.run([sys.executable, "-m", "zoo", "import", str(src), "--name", TAG], env=env, check=True,
                   capture_output=True)
    (root / "www").mkdir(mode=0o755)
    os.link(src, root / "www" / "model.safetensors")
    size = src.stat().st_size

    zoo_port, nginx_port = free_port(), free_port()
    (root / "nginx.conf").write_text(NGINX_CONF.format(root=root, port=nginx_port))
    procs = [
        subprocess.Popen([sys.executable, "app.py"], cwd=Path(__file__).resolve().parent.parent,
                         env={**env, "ZOO_PORT": str(zoo_port)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([nginx, "-p", str(root), "-c", str(root / "nginx.conf"), "-g", "daemon off;"]),
    ]
    try:
        zoo_url = f"http://127.0.0.1:{zoo_port}/api/models/{TAG}/weights"
        nginx_url = f"http://127.0.0.1:{nginx_port}/model.safetensors"
        _wait(f"http://127.0.0.1:{zoo_port}/healthz", procs[0], "the zoo")
        _wait(nginx_url, procs[1], "nginx", root / "nginx-error.log")
        speeds: dict[str, list[float]] = {"zoo": [], "nginx": []}
        for _ in range(2):  # warm: page cache, connections, first-request costs
            _speed(zoo_url, size), _speed(nginx_url, size)
        for _ in range(ROUNDS):
            speeds["zoo"].append(_speed(zoo_url, size))
            speeds["nginx"].append(_speed(nginx_url, size))
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    zoo, ngx = statistics.median(speeds["zoo"]), statistics.median(speeds["nginx"])
    print(f"{size / 1e6:.1f} MB over loopback, median of {ROUNDS}: zoo {zoo:,.0f} MB/s, nginx {ngx:,.0f} MB/s "
          f"(zoo runs {min(speeds['zoo']):,.0f}-{max(speeds['zoo']):,.0f}, "
          f"nginx {min(speeds['nginx']):,.0f}-{max(speeds['nginx']):,.0f})")
    return [Target("api_download_vs_nginx", zoo / ngx, ">=", 0.5)]
