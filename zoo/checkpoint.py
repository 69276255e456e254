"""Safetensors files: a strict header check, tensors checked against a model, atomic saves, hashes.

The header is parsed here before `safetensors` touches the file, so a malformed or hostile file
(truncated, header length past the end, duplicate keys, overlapping offsets, a pickle renamed to
.safetensors) is refused with a message that names the problem, and no tensor from it is used.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file as _load_file
from safetensors.torch import save

from zoo import durable
from zoo.errors import WeightsIntegrityError, WeightsMismatchError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit safetensors itself enforces
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
    "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
}  # fmt: skip
OPTIONAL_KEYS = ("num_batches_tracked",)  # BatchNorm counters: absent from many published files
HASH_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # safetensors name, e.g. F32
    shape: tuple[int, ...]
    begin: int  # byte offsets within the data section
    end: int


@dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    header_size: int  # bytes of JSON after the 8-byte length
    file_size: int


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise WeightsIntegrityError(f"duplicate key {key!r} in the header")
        out[key] = value
    return out


def read_header(path: Path) -> Header:
    """Parse and validate a safetensors header without reading the tensors.

    Raises:
        WeightsIntegrityError: the file is not a well-formed safetensors file; the message says why.
    """
    path = Path(path)
    try:
        return _read_header(path)
    except WeightsIntegrityError as exc:
        raise WeightsIntegrityError(f"{path.name} is not a valid safetensors file: {exc}") from None


def _read_header(path: Path) -> Header:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightsIntegrityError(f"only {len(head)} bytes, too short for a header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or n + 8 > size:
            pickle = " (it looks like a pickle: convert it with `python -m zoo import FILE --name TAG`)"
            hint = pickle if head[:1] == b"\x80" or head[:2] == b"PK" else ""
            raise WeightsIntegrityError(f"header length {n} goes past the end of the {size}-byte file{hint}")
        raw = f.read(n)
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsIntegrityError(f"the header is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise WeightsIntegrityError("the header is not a JSON object")
    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightsIntegrityError("__metadata__ must map strings to strings")
    tensors = {name: _tensor_info(name, spec) for name, spec in doc.items()}
    data_size = size - 8 - n
    cursor = 0
    for name, info in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if info.begin != cursor:
            what = "overlaps the previous tensor" if info.begin < cursor else "leaves a gap before it"
            raise WeightsIntegrityError(f"tensor {name!r} at offset {info.begin} {what} (expected {cursor})")
        cursor = info.end
    if cursor != data_size:
        raise WeightsIntegrityError(
            f"the tensors need {cursor} bytes of data but the file has {data_size} (truncated or padded)"
        )
    return Header(tensors, dict(metadata), n, size)


def _tensor_info(name: str, spec: object) -> TensorInfo:
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise WeightsIntegrityError(f"tensor {name!r} needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if dtype not in DTYPES:
        raise WeightsIntegrityError(f"tensor {name!r} has unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise WeightsIntegrityError(f"tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise WeightsIntegrityError(f"tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end or end - begin != math.prod(shape) * DTYPES[dtype][1]:
        raise WeightsIntegrityError(f"tensor {name!r}: offsets {offsets} do not hold a {dtype} {shape}")
    return TensorInfo(dtype, tuple(shape), begin, end)


def expected_tensors(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor in `model`'s state dict (works on the meta device)."""
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def check_fits(header: Header, expected: Mapping[str, tuple[tuple[int, ...], torch.dtype]], what: str) -> None:
    """Compare a file's tensors with a model's, before any tensor is loaded.

    Raises:
        WeightsMismatchError: names the first missing, unexpected, wrong-shape and wrong-dtype tensors.
    """
    present = header.tensors
    missing = [k for k in expected if k not in present and not k.endswith(OPTIONAL_KEYS)]
    unexpected = [k for k in present if k not in expected]
    shapes = [
        f"{k} (file {list(present[k].shape)}, model {list(s)})"
        for k, (s, _) in expected.items()
        if k in present and present[k].shape != s
    ]
    dtypes = [
        f"{k} (file {present[k].dtype}, model {_st_name(d)})"
        for k, (_, d) in expected.items()
        if k in present and DTYPES[present[k].dtype][0] != d
    ]
    problems = [
        f"{len(items)} {label}: {', '.join(items[:5])}{', ...' if len(items) > 5 else ''}"
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("with the wrong shape", shapes),
            ("with the wrong dtype", dtypes),
        )
        if items
    ]
    if problems:
        raise WeightsMismatchError(f"{what} does not fit the architecture: " + "; ".join(problems) + ".")


def _st_name(dtype: torch.dtype) -> str:
    return next(name for name, (d, _) in DTYPES.items() if d == dtype)


def read_tensors(path: Path | str) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, read into memory the process owns (`pread`), none mapped from the file.

    safetensors' default maps the file, and a tensor then reads the file's pages for as long as it lives: a byte
    written into the file afterwards changes a served model's weights with no check seeing it, a file truncated
    under the server kills the whole process with SIGBUS, and the mapping (every page the NaN check read) stays
    resident as long as any one tensor of the file does. The engine converts a CPU model's 4-D weights to
    channels_last, so the mapped copy stayed beside the converted one: resnet101 held 2x its 170 MB.
    """
    return _load_file(str(path), device="cpu", backend="pread")


def load_checked(path: Path, expected: Mapping[str, tuple[tuple[int, ...], torch.dtype]], what: str):
    """Validate the header, check it fits `expected`, load the tensors and reject NaN/Inf.

    Returns:
        (tensors, header): the state dict on the CPU and the parsed header.

    Raises:
        WeightsIntegrityError: malformed file or non-finite values.
        WeightsMismatchError: the tensors do not fit.
    """
    header = read_header(path)
    check_fits(header, expected, what)
    try:
        tensors = read_tensors(path)
    except Exception as exc:  # safetensors' own checks, should ours have missed something
        raise WeightsIntegrityError(f"{what}: safetensors refused {Path(path).name}: {exc}") from None
    bad = first_non_finite(tensors)
    if bad is not None:
        raise WeightsIntegrityError(f"{what}: tensor {bad!r} contains NaN or Inf values; the file was not used.")
    return tensors, header


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the first floating tensor holding NaN or Inf, else None.

    A sum is NaN or Inf whenever any element is, so one reduction per tensor screens them all (9x
    cheaper than `isfinite(t).all()` on resnet50); only a suspicious sum, which a huge but finite
    tensor can also produce by overflowing, is confirmed element by element.
    """
    floats = [(k, t) for k, t in tensors.items() if t.is_floating_point() and t.numel()]
    if not floats:
        return None
    sums = torch.stack([t.sum().float() for _, t in floats])
    if bool(torch.isfinite(sums).all()):
        return None
    return next((k for k, t in floats if not bool(torch.isfinite(t).all())), None)


def save_atomic(tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write a safetensors file (0644) via a locked temp file in the same folder, fsync and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with durable.TempFile(path.parent, path.stem) as tmp:
        write_to(tmp, plain, metadata)
        durable.fault("safetensors-written")
        tmp.commit(path)


def write_to(tmp: durable.TempFile, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None) -> None:
    """Serialise into a locked temp file through its own descriptor (safetensors' `save_file` would replace
    the file, and with it the lock that tells sweepers its writer is alive)."""
    data = _metadata_sorted(save(dict(tensors), metadata=dict(metadata or {})))
    with open(tmp.fd, "wb", closefd=False) as f:
        f.write(data)


def _metadata_sorted(data: bytes) -> bytes:
    """`data` (a serialised safetensors file) with its metadata's keys in sorted order, so the same tensors and
    metadata always give the same bytes: safetensors writes them in a random order per process, and converting
    one `.pth` twice gave two SHA-256s (ETags). The header keeps its length (its padding takes up any slack)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n], object_pairs_hook=dict)
    if not isinstance(header.get("__metadata__"), dict):
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # not safetensors' own compact form: leave it as it is
        return data
    return data[:8] + text.ljust(n) + data[8 + n:]


def file_hashes(path: Path, *, git_sha1: bool = False) -> tuple[str, str | None]:
    """(SHA-256, git's blob sha1 or None) of a file in one read of 4 MiB chunks.

    Git's object id is what the Hub reports as the ETag of a file not stored in LFS.
    """
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(f"blob {Path(path).stat().st_size}\0".encode()) if git_sha1 else None
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            sha256.update(chunk)
            if sha1 is not None:
                sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest() if sha1 else None


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return file_hashes(path)[0]
