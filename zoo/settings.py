"""Frozen runtime settings, read once from the environment.

How settings travel (one way, everywhere): a service that depends on them takes a last parameter
`settings: Settings | None = None`, starts with `settings = settings or get_settings()`, and hands that same
object to every service it calls. None means "the process's settings" (`get_settings()`, cached), which is what
the UI, the CLI and the HTTP routes use; `app.build_app(settings)`, the engine and tests pass an explicit object
to run against another weights folder or other limits. Only torchrun's variables (`transfer.distributed`) are
read from the environment outside this module.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEVICES = ("auto", "cpu", "cuda")
CPU_BACKENDS = ("auto", "onnx", "eager")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a running zoo (see the README's Settings table)."""

    weights_dir: Path = REPO_ROOT / "weights"  # ZOO_WEIGHTS_DIR: the local weight store
    device: str = "auto"  # ZOO_DEVICE: auto picks CUDA when present, else CPU
    model_memory_mb: int = 4096  # ZOO_MODEL_MEMORY_MB: budget of the ready-model cache
    host: str = "127.0.0.1"  # ZOO_HOST: interface the server binds (0.0.0.0 on a Space)
    port: int = 7860  # ZOO_PORT: the server's port
    hf_offline: bool = False  # HF_HUB_OFFLINE: never contact the Hub
    hf_endpoint: str = "https://huggingface.co"  # HF_ENDPOINT: the Hub, or a mirror
    hf_home: Path | None = None  # HF_HOME: Hugging Face cache root (None: huggingface_hub's default)
    max_image_pixels: int = 40_000_000  # ZOO_MAX_IMAGE_PIXELS: larger images are refused before decoding
    max_image_mb: int = 25  # ZOO_MAX_IMAGE_MB: larger image files are refused unread
    cpu_backend: str = "auto"  # ZOO_CPU_BACKEND: auto (ONNX Runtime once exported), onnx (wait for it), eager
    compile: bool = False  # ZOO_COMPILE: torch.compile models on CUDA (slow first call, faster after)
    max_batch: int = 16  # ZOO_MAX_BATCH: most images one forward pass takes when requests are batched
    batch_wait_ms: float = 0.0  # ZOO_BATCH_WAIT_MS: extra wait for company; 0 batches what queued meanwhile
    queue_size: int = 64  # ZOO_QUEUE_SIZE: UI requests waiting at once; more are turned away, not queued
    max_upload_mb: int = 1024  # ZOO_MAX_UPLOAD_MB: largest file the UI accepts (labelled zips included)
    max_dataset_mb: int = 2048  # ZOO_MAX_DATASET_MB: most bytes a dataset's image files take (a zip: unpacked)
    runs_max_mb: int = 2048  # ZOO_RUNS_MAX_MB: disk the stored transfer runs may take; new runs are refused past it
    feature_cache_mb: int = 1024  # ZOO_FEATURE_CACHE_MB: disk the transfer lab's backbone-feature cache may take (LRU)
    train_memory_mb: int = 4096  # ZOO_TRAIN_MEMORY_MB: memory a whole-network fine-tune may hold for its images
    uploads_max_mb: int = 4096  # ZOO_UPLOADS_MAX_MB: disk the UI's uploads may take together (stored and arriving)
    upload_ttl_s: int = 600  # ZOO_UPLOAD_TTL_S: UI uploads older than this are deleted (checked as often)
    max_sessions: int = 64  # ZOO_MAX_SESSIONS: browser sessions whose UI state is kept (~0.25 MB each); oldest go first
    max_downloads: int = 32  # ZOO_MAX_DOWNLOADS: file bodies sent at once; more are answered 429 with Retry-After
    busy_download_mbps: float = 25.0  # ZOO_BUSY_DOWNLOAD_MBPS: all downloads' pace while classifications run (0: none)
    shutdown_s: float = 10.0  # ZOO_SHUTDOWN_S: how long requests in flight get after SIGTERM before connections close

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default: `os.environ`).

        Raises:
            ConfigError: a variable has a value that cannot be used; the message names it.
        """
        env = os.environ if environ is None else environ
        device = env.get("ZOO_DEVICE", cls.device).strip().lower()
        if device not in DEVICES:
            raise ConfigError(f"ZOO_DEVICE={device!r} is not one of {', '.join(DEVICES)}.")
        cpu_backend = env.get("ZOO_CPU_BACKEND", cls.cpu_backend).strip().lower()
        busy_mbps = _float(env, "ZOO_BUSY_DOWNLOAD_MBPS", cls.busy_download_mbps, low=0.0, high=100000.0)
        if 0 < busy_mbps < 1:
            raise ConfigError(f"ZOO_BUSY_DOWNLOAD_MBPS={busy_mbps} must be 0 (never paced) or at least 1.")
        if cpu_backend not in CPU_BACKENDS:
            raise ConfigError(f"ZOO_CPU_BACKEND={cpu_backend!r} is not one of {', '.join(CPU_BACKENDS)}.")
        on_space = bool(env.get("SPACE_ID"))  # Hugging Face Spaces route traffic to 0.0.0.0:7860
        weights_dir = Path(env.get("ZOO_WEIGHTS_DIR") or cls.weights_dir).expanduser()
        return cls(
            weights_dir=weights_dir if weights_dir.is_absolute() else Path.cwd() / weights_dir,
            device=device,
            model_memory_mb=_int(env, "ZOO_MODEL_MEMORY_MB", cls.model_memory_mb, low=1),
            host=env.get("ZOO_HOST") or ("0.0.0.0" if on_space else cls.host),
            port=_int(env, "ZOO_PORT", cls.port, low=1, high=65535),
            hf_offline=_bool(env, "HF_HUB_OFFLINE"),
            hf_endpoint=(env.get("HF_ENDPOINT") or cls.hf_endpoint).rstrip("/"),
            hf_home=Path(env["HF_HOME"]).expanduser() if env.get("HF_HOME") else None,
            max_image_pixels=_int(env, "ZOO_MAX_IMAGE_PIXELS", cls.max_image_pixels, low=1),
            max_image_mb=_int(env, "ZOO_MAX_IMAGE_MB", cls.max_image_mb, low=1),
            cpu_backend=cpu_backend,
            compile=_bool(env, "ZOO_COMPILE"),
            max_batch=_int(env, "ZOO_MAX_BATCH", cls.max_batch, low=1, high=1024),
            batch_wait_ms=_float(env, "ZOO_BATCH_WAIT_MS", cls.batch_wait_ms, low=0.0, high=1000.0),
            queue_size=_int(env, "ZOO_QUEUE_SIZE", cls.queue_size, low=1),
            max_upload_mb=_int(env, "ZOO_MAX_UPLOAD_MB", cls.max_upload_mb, low=1),
            max_dataset_mb=_int(env, "ZOO_MAX_DATASET_MB", cls.max_dataset_mb, low=1),
            runs_max_mb=_int(env, "ZOO_RUNS_MAX_MB", cls.runs_max_mb, low=1),
            feature_cache_mb=_int(env, "ZOO_FEATURE_CACHE_MB", cls.feature_cache_mb, low=0),
            train_memory_mb=_int(env, "ZOO_TRAIN_MEMORY_MB", cls.train_memory_mb, low=1),
            uploads_max_mb=_int(env, "ZOO_UPLOADS_MAX_MB", cls.uploads_max_mb, low=1),
            upload_ttl_s=_int(env, "ZOO_UPLOAD_TTL_S", cls.upload_ttl_s, low=10),
            max_sessions=_int(env, "ZOO_MAX_SESSIONS", cls.max_sessions, low=1),
            max_downloads=_int(env, "ZOO_MAX_DOWNLOADS", cls.max_downloads, low=1),
            busy_download_mbps=busy_mbps,
            shutdown_s=_float(env, "ZOO_SHUTDOWN_S", cls.shutdown_s, low=0.0, high=3600.0),
        )


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int | None = None) -> int:
    return _number(env, name, default, int, "a whole number", low, high)


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    return _number(env, name, default, float, "a number", low, high)


def _number(env: Mapping[str, str], name: str, default, cast, kind: str, low, high):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {kind}.") from None
    if not low <= value or (high is not None and not value <= high):  # NaN fails both
        upper = f" and at most {high}" if high is not None else ""
        raise ConfigError(f"{name}={value} must be at least {low}{upper}.")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value (use 1 or 0).")


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()
