"""Safe image decoding (format allow-list, size limits, EXIF orientation, every mode) and per-tag preprocessing."""

from __future__ import annotations

import contextlib
import functools
import io
import math
import struct
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageFile, PngImagePlugin, UnidentifiedImageError

from zoo import residency
from zoo.errors import InvalidImageError
from zoo.registry import ModelEntry
from zoo.settings import get_settings

# Pillow plugins tried when opening; anything else (PSD, EPS, PDF, ICO, SVG...) is refused unread.
# JPEG includes MPO (what phones write for multi-picture JPEGs); animated GIF/WebP and multi-page TIFF give frame 1.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
ACCEPTED_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
ACCEPTED_TEXT = "JPEG, PNG, WebP, GIF, BMP or TIFF"
WHITE = (255, 255, 255)
MAX_ASPECT = 4  # images longer than this many times their width are centre-cropped before resizing
MAX_SIDE = 65535  # pixels: Pillow keeps a pointer and more for every row (a 1x40,000,000 PNG took 916 MB to decode)
# Decoding memory. An image whose pixels take more than LARGE_BYTES in its own mode is decoded while holding one of
# DECODE_SLOTS places (decoding is CPU-bound: two cores gain nothing from more at once), so that N requests with
# 40-megapixel files hold at most DECODE_SLOTS of them, not N (ten 16-bit PNGs of 6324x6324, 300 KB each, took
# 9 GB at once before). Conversions to 8-bit RGB run STRIP_PIXELS at a time, so that they add an 8-bit copy and
# not the float64 and RGBA copies of the whole image (16-bit: 1.1 GB for one such file before, RGBA 600 MB).
DECODE_SLOTS = 2
LARGE_BYTES = 64 * 2**20
STRIP_PIXELS = 2**20
_decoding = threading.BoundedSemaphore(DECODE_SLOTS)
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "RGBa", "La", "CMYK", "YCbCr", "I", "F"}  # modes Image.reduce takes

Source = bytes | str | Path | BinaryIO | Image.Image


def decode(
    source: Source,
    *,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    min_side: int | None = None,
) -> Image.Image:
    """An 8-bit RGB image from untrusted bytes, a path, a file object or a PIL image.

    Checks come before the pixels are decoded: the file size (ZOO_MAX_IMAGE_MB), the format (the
    allow-list above, so no other Pillow plugin ever parses the data) and the pixel count
    (ZOO_MAX_IMAGE_PIXELS, against decompression bombs). EXIF orientation is applied. Transparent
    images are composited on white; 16-bit and float images are scaled, not clipped.

    Args:
        min_side: the smallest width and height the caller will use (e.g. twice the resize target).
            A large image is then decoded (JPEG, Pillow's draft mode) or reduced (other formats, box
            averages) at 1/2, 1/4 or 1/8 scale as long as both sides stay at least this large.

    Raises:
        InvalidImageError: what is wrong, and what is accepted.
    """
    settings = get_settings()
    max_pixels = max_pixels or settings.max_image_pixels
    max_bytes = max_bytes or settings.max_image_mb * 1024 * 1024
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels)
        return to_rgb(_upright(source))
    data = _read(source, max_bytes)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise InvalidImageError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set in this process; truncated files "
                                "would be silently accepted. Unset it to classify images.")
    _check_structure(data)
    with _decode_errors(max_pixels):
        im = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        _check_pixels(im.size, max_pixels)
        _check_slow_decoder(im, len(data))
    # what decoding holds: the decoded mode, or the RGBA a palette or 1-bit image becomes (4 bytes a pixel)
    large = im.width * im.height * max(_bytes_per_pixel(im.mode), 4) > LARGE_BYTES
    with _one_of_few() if large else contextlib.nullcontext():
        with _decode_errors(max_pixels):
            if min_side and im.format in ("JPEG", "MPO"):
                _draft(im, min_side)
            im.load()
            im = _upright(im)
        return to_rgb(_reduce(im, min_side) if min_side else im)


# EXIF orientation (1-8) -> the transpose that makes the image upright (as Pillow's ImageOps.exif_transpose)
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
ORIENTATION = 0x0112


def _upright(im: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says. Only that one entry is read: Pillow's `getexif` copies every
    entry's data, and a 4 MB eXIf chunk whose 200 entries all point at the same bytes cost 817 MB that way."""
    tags = getattr(im, "tag_v2", None)  # a TIFF's own first directory (already read when it was opened)
    orientation = tags.get(ORIENTATION) if tags is not None else _exif_orientation(im.info.get("exif"))
    method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return im.transpose(method) if method is not None else im.copy()  # an Image, not the file's (as Pillow's)


def _exif_orientation(exif: object) -> int | None:
    """The Orientation entry of raw EXIF bytes (a TIFF header and its first directory), or None."""
    if not isinstance(exif, bytes):
        return None
    data = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(data[:4])
    if order is None:
        return None
    try:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        for i in range(min(count, 4096)):
            tag, kind, n = struct.unpack_from(order + "HHI", data, ifd + 2 + i * 12)
            if tag == ORIENTATION:
                return struct.unpack_from(order + "H", data, ifd + 10 + i * 12)[0] if kind == 3 and n == 1 else None
    except struct.error:
        return None
    return None


MAX_JPEG_SCANS = 100  # libjpeg writes 6-10 scans for a progressive JPEG; each costs a pass over every block
MAX_JPEG_SEGMENTS = 4096  # markers of any kind: Pillow reads each in Python (6 million empty ones: 7.5 s, 835 MB)
MAX_TIFF_METADATA = 16 * 2**20  # bytes the entries of a TIFF's first directory point at (Pillow copies each)
MAX_TIFF_PARTS = 65536  # strips or tiles in a TIFF's first image: Pillow makes an object for each when it opens it


def _check_structure(data: bytes) -> None:
    """Files small on disk whose structure costs minutes or gigabytes before a pixel is decoded: a progressive
    JPEG of thousands of scans (each one a pass over the whole image: 1 MiB of them took 76 s of CPU), or a TIFF
    that lists millions of strips (24 MiB of strip offsets took 4 GB and 124 s in Pillow's open)."""
    scans = _jpeg_scans(data, MAX_JPEG_SCANS) if data[:2] == b"\xff\xd8" else 0
    if scans < 0:
        raise InvalidImageError(f"This JPEG is made of more than {MAX_JPEG_SEGMENTS:,} segments (markers), more than "
                                f"this server reads (at most {MAX_JPEG_SEGMENTS:,}). Save it again without its "
                                "metadata.")
    if scans > MAX_JPEG_SCANS:
        raise InvalidImageError(f"This JPEG is coded in more than {MAX_JPEG_SCANS} scans, more than this server "
                                "decodes; an ordinary progressive JPEG has about 10. Save it again as a baseline "
                                "JPEG or as PNG.")
    parts, metadata = _tiff_parts(data) if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+") else (0, 0)
    if metadata > MAX_TIFF_METADATA:
        raise InvalidImageError(f"The entries of this TIFF point at {metadata / 2**20:,.0f} MiB of metadata, more than "
                                f"this server reads (at most {MAX_TIFF_METADATA // 2**20} MiB). Save it again without "
                                "its metadata, or as PNG.")
    if parts > MAX_TIFF_PARTS:
        raise InvalidImageError(f"This TIFF is split into {parts:,} strips or tiles, more than this server reads "
                                f"(at most {MAX_TIFF_PARTS:,}). Save it again with larger strips, or as PNG.")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and _png_chunks(data, MAX_PNG_CHUNKS) > MAX_PNG_CHUNKS:
        raise InvalidImageError(f"This PNG is made of more than {MAX_PNG_CHUNKS:,} chunks, more than this server "
                                "reads (an ordinary PNG has a few dozen). Save it again, or as JPEG.")
    if data[:6] in (b"GIF87a", b"GIF89a"):
        blocks, comments = _gif_extensions(data)
        if blocks > MAX_GIF_EXTENSIONS or comments > MAX_GIF_COMMENTS:
            raise InvalidImageError(
                f"This GIF carries more extension blocks or comments before its image than this server reads (at "
                f"most {MAX_GIF_EXTENSIONS:,} blocks and {MAX_GIF_COMMENTS // 1024} KiB of comments). Save it "
                "again without its comments, or as PNG.")


MAX_RLE_BMP = 2**20  # pixels, and bytes, of a run-length coded BMP: Pillow decodes those in Python (0.2-0.4 s each)


def _check_slow_decoder(im: Image.Image, size: int) -> None:
    """Pillow decodes run-length coded BMPs (RLE4, RLE8) a pixel or a run at a time in Python, holding the
    interpreter: a 330 KB RLE4 file of 6324x6324 took 4 s, and 8 MB of one-pixel RLE8 runs 3 s."""
    if im.format == "BMP" and im.tile and im.tile[0][0] == "bmp_rle" \
            and (im.width * im.height > MAX_RLE_BMP or size > MAX_RLE_BMP):
        raise InvalidImageError(f"This BMP is run-length coded (RLE), which this server decodes only up to "
                                f"{MAX_RLE_BMP:,} pixels and {MAX_RLE_BMP // 2**20} MiB; this one is "
                                f"{im.width:,}x{im.height:,} in {size / 2**20:,.1f} MiB. Save it again as PNG or "
                                "as an uncompressed BMP.")


def _jpeg_scans(data: bytes, most: int) -> int:
    """The scans (SOS segments) of a JPEG, counted by walking its segments and skipping each scan's coded data;
    stops past `most`, and answers -1 past MAX_JPEG_SEGMENTS segments of any kind. A file whose structure breaks
    off is left for Pillow to judge."""
    pos, n, size, segments = 2, 0, len(data), 0
    while pos + 4 <= size and n <= most:
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            return -1
        if data[pos] != 0xFF:
            return n
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # end of image
            return n
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker != 0xDA:
            continue
        n += 1
        while True:  # the coded data runs to the next marker that is not a stuffed zero or a restart
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= size:
                return n
            follower = data[pos + 1]
            if follower == 0 or 0xD0 <= follower <= 0xD7:
                pos += 2
            elif follower == 0xFF:
                pos += 1
            else:
                break
    return n


MAX_PNG_CHUNKS = 65536  # Pillow reads each chunk's header in Python: 2 million empty chunks took 12 s
MAX_GIF_EXTENSIONS = 1000  # extension blocks before a GIF's first image (Pillow reads each in Python)
MAX_GIF_COMMENTS = 65536  # comment bytes before it: Pillow joins them a 255-byte block at a time (2 MiB took 4 s)


def _png_chunks(data: bytes, most: int) -> int:
    """How many chunks a PNG has, counted up to IEND or until past `most`."""
    pos, n, size = 8, 0, len(data)
    while pos + 8 <= size and n <= most:
        n += 1
        if data[pos + 4:pos + 8] == b"IEND":
            break
        pos += 12 + int.from_bytes(data[pos:pos + 4], "big")
    return n


def _gif_extensions(data: bytes) -> tuple[int, int]:
    """(extension blocks, comment bytes) before a GIF's first image, counted until past the limits."""
    if len(data) < 13:
        return 0, 0
    flags, size = data[10], len(data)
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global colour table
    blocks = comments = 0
    while pos + 1 < size and data[pos] == 0x21 and blocks <= MAX_GIF_EXTENSIONS and comments <= MAX_GIF_COMMENTS:
        blocks, comment, pos = blocks + 1, data[pos + 1] == 0xFE, pos + 2
        comments += comment  # Pillow puts a line break between comments
        while pos < size and data[pos] and comments <= MAX_GIF_COMMENTS:  # sub-blocks, up to an empty one
            comments += data[pos] if comment else 0
            pos += 1 + data[pos]
        pos += 1
    return blocks, comments


_TIFF_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8,
                    18: 8}  # bytes a value of each entry type takes


def _tiff_parts(data: bytes) -> tuple[int, int]:
    """(the most StripOffsets or TileOffsets entries, the bytes all other entries point at) in a TIFF's first
    directory (classic and BigTIFF). Entries pointing at the same bytes count once each: Pillow copies each."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        if data[2:4] in (b"*\x00", b"\x00*"):
            (ifd,) = struct.unpack_from(order + "I", data, 4)
            (count,) = struct.unpack_from(order + "H", data, ifd)
            entry, first, field = 12, ifd + 2, order + "HHI"
        else:
            (ifd,) = struct.unpack_from(order + "Q", data, 8)
            (count,) = struct.unpack_from(order + "Q", data, ifd)
            entry, first, field = 20, ifd + 8, order + "HHQ"
        most = metadata = 0
        for i in range(min(count, 4096)):
            tag, kind, values = struct.unpack_from(field, data, first + i * entry)
            if tag in (273, 279, 324, 325):  # strip and tile offsets and byte counts
                most = max(most, values)
            else:
                metadata += values * _TIFF_TYPE_BYTES.get(kind, 1)
        return most, metadata
    except struct.error:  # a directory outside the file: Pillow says so
        return 0, 0


@contextlib.contextmanager
def _one_of_few() -> Iterator[None]:
    """One of the DECODE_SLOTS places for a large decode; the heap's freed pages go back to the system after it
    (the server's heap keeps freed blocks for the next forward pass, `residency.tune_heap`)."""
    with _decoding, residency.trimmed_after():
        yield


@contextlib.contextmanager
def _decode_errors(max_pixels: int) -> Iterator[None]:
    """Pillow's errors while opening and decoding, as one InvalidImageError sentence each."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            yield
    except InvalidImageError:
        raise
    except UnidentifiedImageError:
        raise InvalidImageError(f"This file is not an image in an accepted format ({ACCEPTED_TEXT}).") from None
    except Image.DecompressionBombError:  # Pillow's hard stop, for images far beyond any sane limit
        raise InvalidImageError(f"The image is larger than this server decodes (at most {max_pixels:,} pixels).") \
            from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        if "text chunk" in str(exc).lower() or "MAX_TEXT_CHUNK" in str(exc):
            raise InvalidImageError(
                f"This PNG carries more text (metadata chunks) than this server reads: at most "
                f"{PngImagePlugin.MAX_TEXT_CHUNK // 2**20} MiB a chunk and {PngImagePlugin.MAX_TEXT_MEMORY // 2**20} "
                "MiB in all, unpacked. Save it again without its metadata.") from None
        raise InvalidImageError(f"The image could not be decoded ({_reason(exc)}); it may be truncated or damaged. "
                                f"Accepted: complete {ACCEPTED_TEXT} files.") from None


def _bytes_per_pixel(mode: str) -> int:
    if mode.startswith("I;16"):
        return 2
    if mode in ("I", "F") or mode.startswith(("I;32", "F;")):
        return 4
    try:
        return Image.getmodebands(mode)
    except (KeyError, ValueError):
        return 4


def _reduce(im: Image.Image, min_side: int) -> Image.Image:
    """A large image (other than a JPEG that draft mode already shrank) reduced by 2, 4 or 8 (box averages, as
    libjpeg's reduced decoding does) while both sides stay at least `min_side`."""
    scale = _scale(im.size, min_side)
    if scale == 1:
        return im
    return (im if im.mode in _REDUCIBLE else to_rgb(im)).reduce(scale)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().rstrip(".") or type(exc).__name__
    return text[:160]


def read_limited(path: str | Path, max_bytes: int) -> bytes:
    """A file's bytes, refused unread when it is larger than `max_bytes` (InvalidImageError)."""
    return _read(Path(path), max_bytes)


def _read(source: bytes | str | Path | BinaryIO, max_bytes: int) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | Path):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InvalidImageError(f"Cannot read {path}: {exc.strerror or exc}.") from None
        if size > max_bytes:
            raise InvalidImageError(_too_big(size, max_bytes))
        data = path.read_bytes()
    else:
        data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InvalidImageError(_too_big(len(data), max_bytes))
    if not data:
        raise InvalidImageError(f"The file is empty. Accepted: {ACCEPTED_TEXT}.")
    return data


def _too_big(size: int, limit: int) -> str:
    return (f"The file is {size / 2**20:.1f} MiB; this server takes images up to {limit / 2**20:.0f} MiB "
            "(ZOO_MAX_IMAGE_MB).")


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise InvalidImageError(f"The image has no pixels ({w}x{h}).")
    if w * h > max_pixels:
        raise InvalidImageError(f"The image is {w}x{h} = {w * h:,} pixels; this server decodes at most "
                                f"{max_pixels:,} (ZOO_MAX_IMAGE_PIXELS). Downscale it first.")
    if max(w, h) > MAX_SIDE:
        raise InvalidImageError(f"The image is {w:,}x{h:,} pixels; this server decodes sides of at most "
                                f"{MAX_SIDE:,} pixels (as JPEG and WebP allow). Crop or downscale it first.")


def _scale(size: tuple[int, int], min_side: int) -> int:
    """1, 2, 4 or 8: the most an image of `size` may shrink while both sides stay at least `min_side`."""
    scale = 1
    while scale < 8 and min(size) // (scale * 2) >= min_side:
        scale *= 2
    return scale


def _draft(im: Image.Image, min_side: int) -> None:
    """Let libjpeg decode at a reduced scale while both sides stay at least `min_side`."""
    scale = _scale(im.size, min_side)
    if scale > 1:
        w, h = im.size
        im.draft(im.mode, (math.ceil(w / scale), math.ceil(h / scale)))


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode: alpha composited on white, high bit depths scaled to 0..255."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P" and "transparency" not in im.info:
        return im.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La", "P"):  # a palette with a transparent entry: piece by piece too
        out = Image.new("RGB", im.size)
        for box in _strips(im.size):
            rgba = im.crop(box).convert("RGBA")
            white = Image.new("RGBA", rgba.size, (*WHITE, 255))
            out.paste(Image.alpha_composite(white, rgba).convert("RGB"), box[:2])
        return out
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scale_to_8bit(np.asarray(im), mode)).convert("RGB")
    return im.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV, RGBX


def _strips(size: tuple[int, int]) -> Iterator[tuple[int, int, int, int]]:
    """Boxes (left, top, right, bottom) of about STRIP_PIXELS each covering an image of `size`: whole rows, or
    pieces of one row where a row is longer (a 40,000,000x1 palette PNG took 954 MB converted as one strip)."""
    w, h = size
    rows, cols = max(1, STRIP_PIXELS // max(1, w)), min(w, STRIP_PIXELS)
    for top in range(0, h, rows):
        for left in range(0, w, cols):
            yield left, top, min(w, left + cols), min(h, top + rows)


def _scale_to_8bit(a: np.ndarray, mode: str) -> np.ndarray:
    """16-bit integers map 0..65535 onto 0..255; floats in [0, 1] scale by 255; other ranges stretch to fit.
    Computed in float64 a strip of rows at a time (never a float64 copy of the whole image)."""
    strips = [slice(top, bottom) for _, top, _, bottom in _strips((a.shape[1] if a.ndim > 1 else 1, a.shape[0]))]
    lo, hi = math.inf, -math.inf
    for s in strips:  # the range: integers read as they are, floats without their NaN and inf
        part = a[s] if a.dtype.kind in "biu" else np.nan_to_num(a[s].astype(np.float64), copy=False)
        lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    out = np.empty(a.shape, np.uint8)
    for s in strips:
        part = np.nan_to_num(a[s].astype(np.float64), copy=False)
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            part *= 255.0
        elif mode != "F" and lo >= 0 and hi <= 65535:
            part /= 257.0
        else:  # floats outside [0, 1], 32-bit integers outside the 16-bit range: stretch what is there
            part -= lo
            part *= 255.0 / (hi - lo) if hi > lo else 0.0
        out[s] = np.clip(np.rint(part, out=part), 0, 255, out=part)
    return out


@dataclass(frozen=True)
class Preprocessing:
    """How one tag's pretrained weights expect their input at evaluation.

    Policy: inference always uses the tag's *test* settings (`test_input_size`, `test_crop_pct`,
    falling back to the train ones where a tag sets none), exactly as timm's
    `resolve_data_config(..., use_test_size=True)` + `create_transform(is_training=False)` does.
    Published top-1 figures are measured at these settings.
    """

    size: int  # square input side the model sees
    crop_pct: float  # fraction of the resized image kept by the centre crop
    crop_mode: str  # center, squash or border (timm's meanings)
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def resize(self) -> int:
        """Side the image is resized to before the crop (timm: floor(size / crop_pct))."""
        return math.floor(self.size / self.crop_pct)

    def describe(self) -> str:
        how = {"center": "shorter side to", "squash": "squash to", "border": "longer side to"}[self.crop_mode]
        return (f"resize ({self.interpolation}) {how} {self.resize} px, centre-crop {self.size} px "
                f"(crop_pct {self.crop_pct:g}), normalise mean {self.mean} std {self.std}")


def preprocessing(entry: ModelEntry) -> Preprocessing:
    """The eval preprocessing of a registry entry (see `Preprocessing` for the train/test policy)."""
    return Preprocessing(size=entry.eval_size, crop_pct=entry.test_crop_pct, crop_mode=entry.crop_mode,
                         interpolation=entry.interpolation, mean=entry.mean, std=entry.std)


@functools.lru_cache(maxsize=64)
def transform(pre: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """The eval pipeline for `pre`: timm's own resize and crop (Pillow), then to-tensor and normalise in NumPy.

    The arithmetic is timm's (x / 255, then (x - mean) / std in float32) and gives bit-identical
    tensors, but runs on one thread: torch's parallel kernels on a 224x224 image cost more in thread
    wake-ups beside a running model than they save.
    """
    from timm.data.transforms_factory import transforms_imagenet_eval
    from torchvision import transforms as T

    steps = transforms_imagenet_eval(img_size=pre.size, crop_pct=pre.crop_pct, crop_mode=pre.crop_mode,
                                     interpolation=pre.interpolation, mean=pre.mean, std=pre.std).transforms
    # timm >= 1.0.9 ends with its MaybeToTensor (a ToTensor subclass), earlier 1.0.x with ToTensor itself
    if not (isinstance(steps[-2], T.ToTensor) and isinstance(steps[-1], T.Normalize)):
        raise RuntimeError(f"timm's eval transform changed shape: {steps}")  # caught by the equality test
    geometry = T.Compose(steps[:-2])
    mean = np.asarray(pre.mean, np.float32)[:, None, None]
    std = np.asarray(pre.std, np.float32)[:, None, None]

    def apply(image: Image.Image) -> torch.Tensor:
        if pre.crop_mode == "center":  # the resize then keeps at most a square's worth of the long side
            image = trim_aspect(image, pre.size / pre.resize)
        a = np.asarray(geometry(image), dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
        return torch.from_numpy(np.ascontiguousarray((a - mean) / std))

    return apply


def trim_aspect(image: Image.Image, keep: float = 1.0) -> Image.Image:
    """Centre-crop the long side of an extreme image to what a short-side resize and centre crop can use.

    A short-side resize of a 4000x1 image to 288 px would make a 1,152,000x288 image (1.3 GB) only to
    crop 288x288 from it; cropping first bounds that memory by the output size. Only images longer than
    MAX_ASPECT:1 are cropped, with a margin for the resampling filter, so ordinary photos are resized
    exactly as timm does.

    Args:
        keep: the fraction of the short side that the centre crop keeps of the long side (size / resize).
    """
    w, h = image.size
    short, long = min(w, h), max(w, h)
    if long <= MAX_ASPECT * short:
        return image
    side = min(long, math.ceil(short * keep) + 2 * max(4, math.ceil(short / 32)))
    start = (long - side) // 2
    box = (start, 0, start + side, h) if w > h else (0, start, w, start + side)
    return image.crop(box)


def preprocess(entry: ModelEntry | Preprocessing, image: Image.Image) -> torch.Tensor:
    """A normalised float32 tensor (3, size, size) for one decoded RGB image."""
    pre = entry if isinstance(entry, Preprocessing) else preprocessing(entry)
    return transform(pre)(image)


def draft_side(pres: list[Preprocessing]) -> int:
    """The `min_side` for `decode` that keeps draft mode from changing what these tags see.

    Twice the largest resize target: the decoded image is still downsampled by at least 2x, so the
    antialiased resize, not libjpeg's DCT scaling, determines the pixels the model gets.
    """
    return 2 * max(p.resize for p in pres)
