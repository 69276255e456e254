"""How a ready model runs: eager PyTorch (AMP + channels_last on CUDA) or ONNX Runtime on the CPU.

On the CPU, ONNX Runtime is the fastest correct path measured on our machines (about 1.6-2x eager
fp32 for ResNet-50 at batch 1, see bench/bench_inference.py). The exported graph is cached on disk
under the weights store, keyed by the weights' SHA-256, the input size and the exporter versions, so
the export (3-8 s) is paid once per file, not once per start. Before a runner is trusted its logits
are checked against eager on a probe batch (within 1e-4); a mismatch keeps the eager path.
bf16 autocast is never used on a CPU: fp32 is exact, and without native bf16 it is ~47x slower.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from filelock import FileLock, Timeout
from torch import nn

from zoo.errors import FastPathError as FastPathError

log = logging.getLogger(__name__)

ONNX_OPSET = 20
TOLERANCE = 1e-4  # largest |logit difference| a fast path may have against eager fp32


class Runner(Protocol):
    """Maps a normalised float32 batch (N, 3, H, W) on the CPU to float32 logits on the CPU."""

    name: str

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


class EagerRunner:
    """PyTorch eager. CUDA: channels_last, autocast (bf16 where supported, else fp16), cudnn.benchmark,
    optionally torch.compile. CPU: fp32 in the layout that is faster for the block type."""

    def __init__(self, model: nn.Module, *, channels_last: bool, compile: bool = False):
        self.device = next(model.parameters()).device
        self.cuda = self.device.type == "cuda"
        self.memory_format = torch.channels_last if channels_last or self.cuda else torch.contiguous_format
        model.to(memory_format=self.memory_format)
        self.amp_dtype = None
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # fixed input sizes per tag: autotuned kernels pay off
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.model = torch.compile(model) if compile and self.cuda else model
        self.name = "eager-" + ("cuda-" + str(self.amp_dtype).removeprefix("torch.") if self.cuda else "cpu-fp32")
        if compile and self.cuda:
            self.name += "-compiled"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        amp = torch.autocast("cuda", dtype=self.amp_dtype) if self.cuda else contextlib.nullcontext()
        with torch.inference_mode(), amp:
            out = self.model(x)
        return out.float().cpu()


class OnnxRunner:
    """An ONNX Runtime CPU session over an exported graph."""

    name = "onnxruntime-cpu-fp32"

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # no busy-waiting after a run: spinning workers would steal the cores preprocessing needs next
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().cpu().float().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_path(cache_dir: Path, name: str, sha256: str, size: int) -> Path:
    """Where the exported graph of one weights file at one input size lives."""
    import onnxruntime

    versions = f"torch{torch.__version__.split('+')[0]}-ort{onnxruntime.__version__}-opset{ONNX_OPSET}"
    return cache_dir / f"{name}-{sha256[:16]}-{size}px-{versions}.onnx"


EXPORT_LOCK = Path(tempfile.gettempdir()) / "zoo-onnx-export.lock"  # one export at a time on this machine
# The child's first lines, before torch is imported: the kernel kills it when this process dies
# (PR_SET_PDEATHSIG); if this process died before that took effect, it leaves at once. Then it says so on
# stdout (ARMED), and only from then on may the parent pause it: a child stopped before it armed the signal
# would be left stopped, with parent 1, when the server dies.
ARMED = b"armed\n"
_CHILD = """import ctypes, ctypes.util, os, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl(1, signal.SIGKILL)
if os.getppid() != int(os.environ["ZOO_EXPORT_PARENT"]):
    sys.exit(1)
os.write(1, b"armed\\n")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
from zoo.backends import main
main(sys.argv[1:])
"""
EXPORT_NICE = 10  # the export child's niceness: serving keeps the cores it needs
_children: set[subprocess.Popen] = set()  # export children still running, ended at exit
_children_lock = threading.Lock()


def export_in_subprocess(name: str, path: Path, size: int, weights_dir: Path, timeout_s: float = 600, *,
                         pause: Callable[[], bool] | None = None, stop: threading.Event | None = None) -> Path:
    """Export the stored weights of tag `name` to `path` in a child process.

    The dynamo exporter hooks frame evaluation for the whole interpreter, so it must not run beside
    threads that are serving requests; a child process also keeps the export's memory (about 1 GB for
    the larger models) and its Python-bound work out of the server. At most one export runs on a
    machine at a time (a file lock across processes); the child runs at low priority, is stopped
    (SIGSTOP) while `pause()` says requests are waiting, and never outlives this process: it is killed
    when `stop` is set, at exit, and by the kernel if this process dies (PR_SET_PDEATHSIG).

    Raises:
        FastPathError: the child failed, timed out or was stopped (its last error line is in the message).
    """
    if path.exists():
        return path
    from zoo.settings import REPO_ROOT

    stop = stop or threading.Event()
    lock = FileLock(str(EXPORT_LOCK))
    while not stop.is_set():
        try:
            lock.acquire(timeout=0.5)
            break
        except Timeout:
            continue
    else:
        raise FastPathError(f"ONNX export of {name} was cancelled; serving with eager PyTorch.")
    try:
        if path.exists():  # another process exported it while this one waited
            return path
        env = {**os.environ, "ZOO_WEIGHTS_DIR": str(weights_dir), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
               "ZOO_EXPORT_PARENT": str(os.getpid()),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        cmd = [sys.executable, "-c", _CHILD, name, str(path), str(size)]
        with tempfile.TemporaryFile("w+") as err:
            child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err)
            with _children_lock:
                _children.add(child)
            try:
                code = _supervise(child, name, timeout_s, pause or (lambda: False), stop)
            finally:
                with _children_lock:
                    _children.discard(child)
            err.seek(0)
            lines = [ln for ln in err.read().strip().splitlines() if ln.strip()]
    finally:
        lock.release()
    if code != 0 or not path.exists():
        raise FastPathError(f"ONNX export of {name} failed ({_child_error(lines, code)}); serving with eager PyTorch.")
    return path


def _child_error(lines: list[str], code: int) -> str:
    """Why an export child failed, from the last line of its stderr, without what the parent says again (the
    child's own FastPathError gave "...serving with eager PyTorch instead.); serving with eager PyTorch.")."""
    if not lines:
        return f"exit status {code}"
    why = lines[-1].removeprefix(f"{FastPathError.__module__}.FastPathError: ")
    if why.startswith("ONNX export failed (") and why.endswith("); serving with eager PyTorch instead."):
        why = why.removeprefix("ONNX export failed (").removesuffix("); serving with eager PyTorch instead.")
    return why[:200]


def _supervise(child: subprocess.Popen, name: str, timeout_s: float, pause: Callable[[], bool],
               stop: threading.Event) -> int:
    """Wait for an export child, stopping it while `pause()` holds (once it has said ARMED); kill it on `stop` or
    after `timeout_s` of work."""
    worked, paused, armed = 0.0, False, b""
    try:
        while True:
            try:
                return child.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
            if stop.is_set():
                raise FastPathError(f"ONNX export of {name} was cancelled; serving with eager PyTorch.")
            if armed != ARMED:
                armed += _read_ready(child.stdout, len(ARMED) - len(armed))
            elif pause() != paused:
                paused = not paused
                child.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)
            worked += 0 if paused else 0.1
            if worked > timeout_s:
                raise FastPathError(f"ONNX export of {name} took over {timeout_s:.0f} s; serving with eager PyTorch.")
    finally:
        if child.poll() is None:
            child.kill()  # SIGKILL works on a stopped process too
            child.wait()
        child.stdout.close()


def _read_ready(pipe, most: int) -> bytes:
    """Up to `most` bytes that `pipe` holds now, without waiting."""
    ready, _, _ = select.select([pipe], [], [], 0)
    return os.read(pipe.fileno(), most) if ready else b""


def end_exports() -> None:
    """Kill every export child still running (at exit: none may write into the store afterwards)."""
    with _children_lock:
        children = list(_children)
    for child in children:
        if child.poll() is None:
            child.kill()


atexit.register(end_exports)


def export_onnx(model: nn.Module, path: Path, size: int) -> Path:
    """Export `model` (CPU, eval) for inputs (N, 3, size, size) with a dynamic batch, atomically.

    Call it only where no other thread runs Python code (the child of `export_in_subprocess` does).
    Concurrent processes wait on a file lock and reuse the first one's file.

    Raises:
        FastPathError: the exporter failed (the message says why; eager keeps working).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            return path
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            probe = torch.zeros(1, 3, size, size)
            batch = torch.export.Dim("batch", min=1, max=1024)
            with _quiet_exporter():
                program = torch.onnx.export(model, (probe,), dynamo=True, dynamic_shapes=({0: batch},),
                                            opset_version=ONNX_OPSET, optimize=True, verbose=False)
                program.save(str(tmp))
            os.replace(tmp, path)
        except Exception as exc:
            raise FastPathError(f"ONNX export failed ({type(exc).__name__}: {str(exc)[:200]}); "
                                "serving with eager PyTorch instead.") from exc
        finally:
            tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter logs its progress at WARNING level and prints to stdout; keep both quiet."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def check_against_eager(fast: Runner, model: nn.Module, size: int) -> float:
    """Largest |logit difference| between `fast` and the eager fp32 model on a seeded probe batch.

    Raises:
        FastPathError: the difference is above TOLERANCE.
    """
    probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = model(probe).float()
    worst = float((fast(probe) - reference).abs().max())
    if not worst <= TOLERANCE:
        raise FastPathError(f"{fast.name} differs from eager by {worst:.2e} (> {TOLERANCE:g}); using eager.")
    return worst


def prefers_channels_last(family: str) -> bool:
    """CPU eager layout: channels_last helps plain ResNets but slows grouped convs (ResNeXt) at batch 1."""
    return family != "resnext"


def main(argv: list[str] | None = None) -> None:
    """Child-process entry point: `python -m zoo.backends TAG OUT.onnx SIZE`."""
    parser = argparse.ArgumentParser(prog="python -m zoo.backends", description=main.__doc__)
    parser.add_argument("name")
    parser.add_argument("path", type=Path)
    parser.add_argument("size", type=int)
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):
        os.nice(EXPORT_NICE)  # low priority: serving keeps the cores it needs
    from zoo import models

    model = models.create_model(args.name, device="cpu")
    export_onnx(model, args.path, args.size)


if __name__ == "__main__":
    main()
