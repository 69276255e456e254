"""Awkward images made in memory: every mode, EXIF orientations, animations, bombs, non-images."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def scene(w: int = 96, h: int = 64) -> Image.Image:
    """A deterministic, asymmetric RGB picture (so rotations and flips are detectable)."""
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + 2 * y) % 97) * 2], -1)
    a[: h // 3, : w // 4] = (250, 20, 20)  # a red block in the top-left corner
    return Image.fromarray(a.astype(np.uint8), "RGB")


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def as_stored(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores for an upright scene when it writes EXIF `orientation` (3, 6 or 8)."""
    return upright.transpose({3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
                              8: Image.Transpose.ROTATE_270}[orientation])


def exif_jpeg(upright: Image.Image, orientation: int) -> bytes:
    """A JPEG whose stored pixels are rotated, with the EXIF tag that tells viewers to rotate them back."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(as_stored(upright, orientation), "JPEG", quality=95, exif=exif.tobytes())


def png_bomb(side: int) -> bytes:
    """A valid greyscale PNG of side x side zero pixels that compresses to a few hundred KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    body = b"".join(comp.compress(row * 256) for _ in range(side // 256)) + comp.compress(row * (side % 256))
    body += comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def animated_gif() -> bytes:
    frames = [scene(), scene().transpose(Image.Transpose.FLIP_LEFT_RIGHT), Image.new("RGB", (96, 64), "blue")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def psd_header() -> bytes:
    """The start of a Photoshop file: Pillow could read it, but PSD is not on the allow-list."""
    return b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 64, 96, 8, 3) + b"\x00" * 64


def eps() -> bytes:
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 96 64\nshowpage\n"


def valid_corpus() -> dict[str, bytes]:
    """Every accepted kind of awkward image, by name."""
    base = scene()
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.repeat(np.linspace(0, 255, 64).astype(np.uint8)[:, None], 96, 1)))
    p_trans = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    p_trans.info["transparency"] = 0
    grey16 = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
    blue = Image.new("RGB", base.size, "blue")
    return {
        "rgb.png": encode(base, "PNG"),
        "rgb.jpg": encode(base, "JPEG", quality=95),
        "rgb.webp": encode(base, "WEBP", lossless=True),
        "rgb.bmp": encode(base, "BMP"),
        "rgb.tiff": encode(base, "TIFF"),
        "rgba.png": encode(rgba, "PNG"),
        "la.png": encode(rgba.convert("LA"), "PNG"),
        "p-transparent.png": encode(p_trans, "PNG"),
        "p-transparent.gif": encode(p_trans, "GIF"),
        "grey16.png": encode(grey16, "PNG"),
        "grey16.tiff": encode(grey16, "TIFF"),
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG", quality=95),
        "cmyk.tiff": encode(base.convert("CMYK"), "TIFF"),
        "bilevel.png": encode(base.convert("1"), "PNG"),
        "grey.jpg": encode(base.convert("L"), "JPEG"),
        "animated.gif": animated_gif(),
        "animated.webp": encode(base, "WEBP", lossless=True, save_all=True, append_images=[blue]),
        "exif3.jpg": exif_jpeg(base, 3),
        "exif6.jpg": exif_jpeg(base, 6),
        "exif8.jpg": exif_jpeg(base, 8),
        "tiny-1x1.png": encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
        "thin-10000x50.png": encode(scene(10000, 50), "PNG"),
    }


def invalid_corpus() -> dict[str, bytes]:
    """Bytes that must be refused with InvalidImageError, by name."""
    jpeg = encode(scene(), "JPEG", quality=95)
    png = encode(scene(), "PNG")
    return {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) * 2 // 3],
        "text-named.jpg": b"this is not an image, whatever its name says\n" * 10,
        "empty.png": b"",
        "photoshop.psd": psd_header(),
        "vector.eps": eps(),
        "html.png": b"<!doctype html><html><body>hello</body></html>",
    }
