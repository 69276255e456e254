"""Safe decoding of untrusted images and the per-tag preprocessing."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from tests import imagecorpus as corpus
from zoo import images, registry
from zoo.errors import InvalidImageError

VALID = corpus.valid_corpus()
INVALID = corpus.invalid_corpus()


def diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_accepted_kind_decodes_to_8bit_rgb(name):
    im = images.decode(VALID[name])
    assert im.mode == "RGB"
    assert im.size[0] >= 1 and im.size[1] >= 1
    # bytes, a path and a file object give the same pixels
    assert np.array_equal(np.asarray(im), np.asarray(images.decode(io.BytesIO(VALID[name]))))


def test_paths_are_read_too(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(VALID["rgb.png"])
    assert np.array_equal(np.asarray(images.decode(path)), np.asarray(corpus.scene()))
    assert np.array_equal(np.asarray(images.decode(str(path))), np.asarray(corpus.scene()))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(orientation):
    upright = images.decode(corpus.encode(corpus.scene(), "JPEG", quality=95))
    im = images.decode(VALID[f"exif{orientation}.jpg"])
    assert im.size == (96, 64)
    assert diff(im, upright) < 3  # the same picture, up to JPEG re-encoding of rotated blocks
    assert diff(im, upright.transpose(Image.Transpose.ROTATE_180)) > 30  # and not merely similar colours


def test_transparency_is_composited_on_white():
    rgba = np.asarray(images.decode(VALID["rgba.png"]))
    assert (rgba[0] == 255).all()  # alpha 0 on the top row -> white, not black
    assert diff(Image.fromarray(rgba[-1:]), corpus.scene().crop((0, 63, 96, 64))) < 3  # opaque bottom row kept
    la = np.asarray(images.decode(VALID["la.png"]))
    assert (la[0] == 255).all() and (la[..., 0] == la[..., 2]).all()
    for name in ("p-transparent.png", "p-transparent.gif"):
        src = Image.open(io.BytesIO(VALID[name]))
        index = np.asarray(src)
        out = np.asarray(images.decode(VALID[name]))
        assert (index == 0).any() and (out[index == 0] == 255).all(), name


def test_16bit_grey_is_scaled_not_clipped():
    grey8 = np.asarray(corpus.scene().convert("L"))
    for name in ("grey16.png", "grey16.tiff"):
        out = np.asarray(images.decode(VALID[name]))
        assert np.array_equal(out[..., 0], grey8), name
        assert np.array_equal(out[..., 0], out[..., 2])


def test_32bit_and_float_images_are_stretched():
    wide = Image.fromarray(np.array([[-70000, 0, 70000]], np.int32))
    assert images.to_rgb(wide).getpixel((0, 0)) == (0, 0, 0) and images.to_rgb(wide).getpixel((2, 0))[0] == 255
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert [images.to_rgb(unit).getpixel((i, 0))[0] for i in range(3)] == [0, 128, 255]


def test_cmyk_bilevel_and_animations():
    base = corpus.scene()
    assert diff(images.decode(VALID["cmyk.tiff"]), base) < 1
    assert diff(images.decode(VALID["cmyk.jpg"]), base) < 4
    assert set(np.unique(np.asarray(images.decode(VALID["bilevel.png"])))) <= {0, 255}
    assert diff(images.decode(VALID["animated.gif"]), base) < 12  # frame 1 (palette-quantised), not blue frame 3
    assert diff(images.decode(VALID["animated.webp"]), base) < 1


@pytest.mark.parametrize("name", sorted(INVALID))
def test_bad_bytes_are_refused_with_what_is_accepted(name):
    with pytest.raises(InvalidImageError) as info:
        images.decode(INVALID[name])
    text = str(info.value)
    assert "JPEG, PNG, WebP, GIF, BMP or TIFF" in text
    if name.startswith("truncated"):
        assert "truncated" in text


def test_formats_outside_the_allow_list_are_never_parsed():
    # Pillow itself reads PSD and EPS (the latter by running Ghostscript); we refuse both unread.
    assert Image.open(io.BytesIO(corpus.psd_header())).format == "PSD"
    for data in (corpus.psd_header(), corpus.eps()):
        with pytest.raises(InvalidImageError, match="accepted format"):
            images.decode(data)


def test_truncated_files_are_refused_even_if_pillow_is_told_to_allow_them(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(InvalidImageError, match="LOAD_TRUNCATED_IMAGES"):
        images.decode(INVALID["truncated.jpg"])


def test_pixel_and_byte_limits_come_from_settings(monkeypatch):
    from zoo.settings import get_settings

    monkeypatch.setenv("ZOO_MAX_IMAGE_PIXELS", str(96 * 64 - 1))
    get_settings.cache_clear()
    with pytest.raises(InvalidImageError, match=r"96x64 = 6,144 pixels.*ZOO_MAX_IMAGE_PIXELS"):
        images.decode(VALID["rgb.png"])
    with pytest.raises(InvalidImageError, match="ZOO_MAX_IMAGE_PIXELS"):
        images.decode(corpus.scene())  # PIL images from a caller are held to the same limit
    assert images.decode(VALID["rgb.png"], max_pixels=96 * 64).size == (96, 64)
    with pytest.raises(InvalidImageError, match="ZOO_MAX_IMAGE_MB"):
        images.decode(b"\xff" * (2 * 1024 * 1024), max_bytes=1024 * 1024)


def test_a_decompression_bomb_is_refused_before_its_pixels_are_allocated():
    # 12000 x 12000 greyscale = 144 MB once decoded, ~140 KB on disk. A fresh process measures peak memory.
    code = textwrap.dedent("""
        import resource, sys
        from tests.imagecorpus import png_bomb
        from zoo import images
        from zoo.errors import InvalidImageError
        data = png_bomb(12000)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            images.decode(data)
        except InvalidImageError as exc:
            grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
            print(len(data), grew, exc)
        else:
            sys.exit("decoded a bomb")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    size, grew_kb, message = out.stdout.split(" ", 2)
    assert int(size) < 1_000_000
    assert int(grew_kb) < 20_000, f"decoding grew the peak RSS by {grew_kb} KiB"
    assert "12000x12000 = 144,000,000 pixels" in message


def test_draft_mode_shrinks_big_jpegs_without_changing_what_the_model_sees():
    big = corpus.scene(4000, 3000)
    data = corpus.encode(big, "JPEG", quality=95)
    pre = images.preprocessing(registry.get("resnet50.a1_in1k"))
    side = images.draft_side([pre])
    drafted = images.decode(data, min_side=side)
    full = images.decode(data)
    assert full.size == (4000, 3000) and drafted.size == (1000, 750)  # 1/4 scale: both sides still >= 606
    assert min(drafted.size) >= side
    a, b = images.preprocess(pre, drafted), images.preprocess(pre, full)
    assert (a - b).abs().mean() < 0.02  # in normalised units (1/255 is ~0.017)
    # a small JPEG is never drafted
    assert images.decode(VALID["rgb.jpg"], min_side=side).size == (96, 64)


def test_big_images_of_every_format_are_reduced_like_drafted_jpegs_without_changing_what_the_model_sees():
    big = corpus.scene(4000, 3000)
    pre = images.preprocessing(registry.get("resnet50.a1_in1k"))
    side = images.draft_side([pre])
    for fmt in ("PNG", "WEBP", "TIFF"):
        data = corpus.encode(big, fmt)
        reduced, full = images.decode(data, min_side=side, max_bytes=2**30), images.decode(data, max_bytes=2**30)
        assert full.size == (4000, 3000) and reduced.size == (1000, 750), fmt  # as the JPEG's draft above
        a, b = images.preprocess(pre, reduced), images.preprocess(pre, full)
        assert (a - b).abs().mean() < 0.02, fmt
    # high bit depths and alpha are reduced before they are converted, and match the converted full image
    grey16 = Image.fromarray((np.asarray(big.convert("L"), np.uint16) * 257).astype(np.uint16))
    rgba = big.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 4000, dtype=np.uint8), (3000, 1))))
    for im in (grey16, rgba):
        data = corpus.encode(im, "PNG")
        a = images.preprocess(pre, images.decode(data, min_side=side, max_bytes=2**30))
        b = images.preprocess(pre, images.decode(data, max_bytes=2**30))
        assert (a - b).abs().mean() < 0.02, im.mode


def test_converting_a_16bit_image_takes_strips_not_float64_copies_of_the_whole():
    import tracemalloc

    a = np.random.default_rng(0).integers(0, 65536, (2000, 2000), dtype=np.uint16)  # 4 Mpx: float64 is 32 MB
    tracemalloc.start()
    try:
        out = images.to_rgb(Image.fromarray(a))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the array Pillow hands out (16 MiB), a float64 strip (8), the result (4); whole-image float64 copies: over 100
    assert peak < 40 * 2**20, f"{peak / 2**20:.0f} MiB"
    assert np.array_equal(np.asarray(out)[..., 0], np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8))


def test_large_images_are_decoded_a_few_at_a_time_and_small_ones_never_wait(monkeypatch):
    import threading
    import time

    running, most, lock = [0], [0], threading.Lock()
    real_load = Image.Image.load

    def load(self):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        try:
            return real_load(self)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(Image.Image, "load", load)
    big = corpus.encode(Image.new("RGB", (600, 400), (9, 99, 199)), "PNG")  # 720,000 bytes decoded
    small = corpus.encode(Image.new("RGB", (60, 40), (9, 99, 199)), "PNG")

    def decode_all(data: bytes, n: int = 8) -> None:
        threads = [threading.Thread(target=images.decode, args=(data,)) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    monkeypatch.setattr(images, "LARGE_BYTES", 500_000)
    decode_all(big)
    assert most[0] == images.DECODE_SLOTS
    most[0] = 0
    decode_all(small)
    assert most[0] > images.DECODE_SLOTS  # under LARGE_BYTES: no waiting


def _distinct_preprocessings() -> list[registry.ModelEntry]:
    seen, out = set(), []
    for e in registry.list_models():
        key = images.preprocessing(e)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


@pytest.mark.parametrize("entry", _distinct_preprocessings(), ids=lambda e: e.name)
def test_preprocessing_equals_timms_eval_transform_at_test_size(entry):
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(entry.name).to_dict()
    reference = create_transform(**resolve_data_config(pretrained_cfg=cfg, use_test_size=True), is_training=False)
    image = corpus.scene(500, 375)
    ours = images.preprocess(entry, image)
    assert ours.shape == (3, entry.eval_size, entry.eval_size) and ours.dtype == torch.float32
    assert torch.equal(ours, reference(image))


def test_train_and_test_sizes_differ_where_timm_says_so():
    entry = registry.get("resnet50.a1_in1k")
    pre = images.preprocessing(entry)
    assert (entry.input_size[-1], pre.size, pre.crop_pct) == (224, 288, 1.0)
    assert "centre-crop 288 px" in pre.describe()


def _seg(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _scan_bomb(side: int, scans: int) -> bytes:
    """A progressive greyscale JPEG: one DC scan, then `scans` identical AC scans that code every block as part of
    an end-of-band run (a few dozen bytes each; libjpeg walks every block in every scan)."""
    blocks = ((side + 7) // 8) ** 2
    head = b"\xff\xd8" + _seg(0xDB, b"\x00" + bytes([1] * 64))
    head += _seg(0xC2, struct.pack(">BHHB", 8, side, side, 1) + b"\x01\x11\x00")
    head += _seg(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")  # DC: category 0 coded '0'
    head += _seg(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\xe0")  # AC: an EOB run of 14 extra bits coded '0'
    dc = _seg(0xDA, b"\x01\x01\x00\x00\x00\x00") + bytes((blocks + 7) // 8)
    bits = "".join("0" + "1" * 14 for _ in range(-(-blocks // 32767)))
    bits += "1" * (-len(bits) % 8)
    ac = _seg(0xDA, b"\x01\x01\x00\x01\x3f\x00") + int(bits, 2).to_bytes(len(bits) // 8, "big").replace(
        b"\xff", b"\xff\x00")
    return head + dc + ac * scans + b"\xff\xd9"


def test_a_jpeg_of_thousands_of_scans_is_refused_before_it_is_decoded():
    from zoo.images import MAX_JPEG_SCANS

    assert images.decode(_scan_bomb(64, 20)).size == (64, 64)  # a few scans more than usual still decode
    bomb = _scan_bomb(2048, 5000)  # 0.2 MB; decoding it took minutes
    start = time.monotonic()
    with pytest.raises(InvalidImageError, match=rf"more than {MAX_JPEG_SCANS} scans, .*about 10"):
        images.decode(bomb)
    assert time.monotonic() - start < 1
    buf = io.BytesIO()  # a real progressive JPEG with an ICC profile of random bytes (FF DA inside) still decodes
    Image.effect_noise((640, 480), 64).convert("RGB").save(buf, "JPEG", progressive=True,
                                                          icc_profile=np.random.default_rng(0).bytes(2**20))
    assert images.decode(buf.getvalue()).size == (640, 480)


def _strip_bomb(strips: int) -> bytes:
    """A 1x2 greyscale TIFF whose directory lists `strips` StripOffsets."""
    def tag(code, typ, count, value):
        return struct.pack("<HHIHH", code, typ, count, value, 0) if count == 1 else struct.pack(
            "<HHII", code, typ, count, value)

    offsets_at = 8 + 2 + 9 * 12 + 4
    entries = [tag(256, 3, 1, 1), tag(257, 3, 1, 2), tag(258, 3, 1, 8), tag(259, 3, 1, 1), tag(262, 3, 1, 1),
               tag(273, 3, strips, offsets_at), tag(277, 3, 1, 1), tag(278, 3, 1, 1), tag(279, 3, 1, 1)]
    ifd = struct.pack("<H", 9) + b"".join(entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(2 * strips) + bytes(64)


def test_a_tiff_of_millions_of_strips_is_refused_before_pillow_opens_it():
    from zoo.images import MAX_TIFF_PARTS

    with pytest.raises(InvalidImageError, match=rf"split into 1,000,000 strips or tiles.*at most {MAX_TIFF_PARTS:,}"):
        images.decode(_strip_bomb(1_000_000))  # 2 MB; Pillow's open alone took 8.6 s and 266 MiB
    buf = io.BytesIO()
    Image.effect_noise((300, 200), 64).save(buf, "TIFF")  # an ordinary TIFF, one strip per few rows
    assert images.decode(buf.getvalue()).size == (300, 200)
    buf = io.BytesIO()
    Image.effect_noise((300, 200), 64).save(buf, "TIFF", big_tiff=True)
    assert images.decode(buf.getvalue()).size == (300, 200)


def _rle_bmp(width: int, height: int, bits: int, run: int) -> bytes:
    """A BMP coded RLE4 or RLE8: runs of `run` pixels, each row ended, then the end of the bitmap."""
    rows = bytearray()
    for y in range(height):
        for x in range(0, width, run):
            rows += bytes([min(run, width - x), (x + y) % 256])
        rows += b"\x00\x00"
    rows += b"\x00\x01"
    colours = 2**bits
    palette = b"".join(bytes([i * 255 // (colours - 1), 0, 0, 0]) for i in range(colours))
    offset = 14 + 40 + len(palette)
    head = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, {4: 2, 8: 1}[bits], len(rows), 2835, 2835,
                       colours, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + head + palette + bytes(rows)


def test_a_large_run_length_coded_bmp_is_refused_before_pillow_decodes_it_in_python():
    from zoo.images import MAX_RLE_BMP

    assert images.decode(_rle_bmp(300, 200, 4, 7)).size == (300, 200)  # small ones decode
    assert images.decode(_rle_bmp(300, 200, 8, 1)).size == (300, 200)
    t0 = time.perf_counter()
    with pytest.raises(InvalidImageError, match=rf"run-length coded \(RLE\).*up to {MAX_RLE_BMP:,} pixels.*"
                                                r"6,324x6,324 in 0\.\d MiB\. Save it again as PNG"):
        images.decode(_rle_bmp(6324, 6324, 4, 255))  # 0.3 MiB: 4 s of Pillow's Python decoder
    with pytest.raises(InvalidImageError, match=r"1,000x1,100 in 1\.1 MiB"):
        images.decode(_rle_bmp(1000, 1100, 8, 2))  # under the pixels, over the bytes: a run at a time
    assert time.perf_counter() - t0 < 1.0


def test_a_png_with_too_much_text_is_refused_in_one_sentence():
    import zlib

    from PIL import PngImagePlugin

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    png = buf.getvalue()
    text = chunk(b"zTXt", b"note\x00\x00" + zlib.compress(b"a" * (PngImagePlugin.MAX_TEXT_CHUNK - 10)))
    bomb = png[:33] + text * 70 + png[33:]  # 70 chunks of nearly 1 MiB each, 70 KiB on disk
    with pytest.raises(InvalidImageError, match=r"^This PNG carries more text \(metadata chunks\) than this server "
                                                r"reads: at most 1 MiB a chunk and 64 MiB in all"):
        images.decode(bomb)


def test_a_gif_with_megabytes_of_comments_is_refused_before_pillow_joins_them():
    """Pillow joins a GIF's comment 255 bytes at a time: 2 MiB of comment on a 1x1 image took 4 s, 24 MiB minutes."""
    from zoo.images import MAX_GIF_COMMENTS

    buf = io.BytesIO()
    Image.new("P", (1, 1)).save(buf, "GIF", comment=b"made here")
    gif = buf.getvalue()
    assert images.decode(gif).size == (1, 1)  # a short comment is fine
    start = gif.index(b"\x2c")  # the image descriptor: comments go before it
    comment = b"\x21\xfe" + (b"\xff" + b"c" * 255) * (2 * 2**20 // 255) + b"\x00"
    t0 = time.perf_counter()
    with pytest.raises(InvalidImageError, match=rf"GIF carries more .* {MAX_GIF_COMMENTS // 1024} KiB of comments"):
        images.decode(gif[:start] + comment + gif[start:])
    many = b"\x21\xfe\x01c\x00" * 5000  # many small comments, joined one by one
    with pytest.raises(InvalidImageError, match="at most 1,000 blocks"):
        images.decode(gif[:start] + many + gif[start:])
    assert time.perf_counter() - t0 < 1.0
    frames = [Image.new("P", (4, 4), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], comment=b"x" * 1000, loop=0)
    assert images.decode(buf.getvalue()).size == (4, 4)  # an animation with a comment: its first frame


def test_a_png_of_millions_of_chunks_is_refused_before_pillow_reads_them():
    import zlib

    from zoo.images import MAX_PNG_CHUNKS

    def chunk(kind: bytes, body: bytes = b"") -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    png = buf.getvalue()
    t0 = time.perf_counter()
    with pytest.raises(InvalidImageError, match=rf"more than {MAX_PNG_CHUNKS:,} chunks"):
        images.decode(png[:33] + chunk(b"zzZz") * 200_000 + png[33:])  # 2.4 MB; Pillow: 5.5 us a chunk
    assert time.perf_counter() - t0 < 1.0
    assert images.decode(png[:33] + chunk(b"tEXt", b"k\x00v") * 100 + png[33:]).size == (8, 8)


def _exif_bomb(entries: int, region: int, orientation: int | None = None) -> bytes:
    """Raw EXIF (a TIFF header and one directory) whose `entries` entries all point at the same `region` bytes."""
    n = entries + (orientation is not None)
    start = 8 + 2 + n * 12 + 4
    table = [struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)] if orientation is not None else []
    table += [struct.pack("<HHII", 40000 + i, 7, region, start) for i in range(entries)]
    return b"II*\x00" + struct.pack("<IH", 8, n) + b"".join(table) + b"\0\0\0\0" + bytes(region)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_read_in_every_format_as_pillow_reads_it(fmt, orientation):
    src = Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    src.save(buf, fmt, exif=exif.tobytes(), **({"quality": 100} if fmt == "JPEG" else {}))
    from PIL import ImageOps

    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue())))
    assert np.array_equal(np.asarray(images.decode(buf.getvalue())), np.asarray(expected.convert("RGB")))


def test_exif_whose_entries_all_point_at_the_same_megabytes_is_not_copied_per_entry():
    """Only the orientation is read: Pillow's getexif copied each of 200 entries' 4 MB (817 MB from a 4 MB PNG)."""
    import tracemalloc

    buf = io.BytesIO()
    Image.new("RGB", (2, 1), (10, 20, 30)).save(buf, "PNG", exif=_exif_bomb(50, 1 << 20, orientation=6))
    tracemalloc.start()
    try:
        im = images.decode(buf.getvalue())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert im.size == (1, 2)  # turned as its orientation says
    assert peak < 12 << 20, peak  # the file's own 1 MB and its copy, not 50 MB of entries


def test_a_tiff_whose_entries_point_at_gigabytes_of_metadata_is_refused_before_pillow_opens_it():
    from zoo.images import MAX_TIFF_METADATA

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "TIFF")
    data = buf.getvalue()
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    extra = [struct.pack("<HHII", 40000 + i, 7, 4 << 20, 8) for i in range(200)]  # 200 x 4 MiB at one place
    head = data[:ifd] + struct.pack("<H", count + 200) + data[ifd + 2:ifd + 2 + count * 12] + b"".join(extra)
    bomb = head + data[ifd + 2 + count * 12:] + bytes(4 << 20)
    limit = MAX_TIFF_METADATA >> 20
    with pytest.raises(InvalidImageError, match=rf"point at 800 MiB of metadata.*at most {limit} MiB"):
        images.decode(bomb)
    assert images.decode(data).size == (8, 8)  # an ordinary TIFF still decodes


def test_a_jpeg_of_millions_of_empty_markers_is_refused_before_pillow_reads_them():
    from zoo.images import MAX_JPEG_SEGMENTS

    ordinary = corpus.encode(corpus.scene(), "JPEG", quality=90)
    bomb = ordinary[:2] + b"\xff\xe5\x00\x02" * (MAX_JPEG_SEGMENTS + 10) + ordinary[2:]
    with pytest.raises(InvalidImageError, match=rf"more than {MAX_JPEG_SEGMENTS:,} segments"):
        images.decode(bomb)
    assert images.decode(b"".join([ordinary[:2], b"\xff\xe5\x00\x02" * 100, ordinary[2:]])).size == (96, 64)


def test_a_palette_image_with_transparency_is_converted_in_pieces():
    from zoo.images import STRIP_PIXELS

    assert all((r - left) * (b - t) <= STRIP_PIXELS for left, t, r, b in images._strips((STRIP_PIXELS * 5 // 2, 1)))
    src = Image.fromarray((np.arange(60000 * 40, dtype=np.uint32) % 7).astype(np.uint8).reshape(40, 60000), "L")
    src = src.convert("P")
    src.putpalette([v for i in range(256) for v in (i * 30 % 256, i * 60 % 256, 90)])
    buf = io.BytesIO()
    src.save(buf, "PNG", transparency=3)
    out = np.asarray(images.decode(buf.getvalue()))
    rgba = Image.open(io.BytesIO(buf.getvalue())).convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    assert np.array_equal(out, np.asarray(Image.alpha_composite(white, rgba).convert("RGB")))
    assert (out[np.asarray(src) == 3] == 255).all()


@pytest.mark.parametrize("size", [(40_000_000, 1), (1, 40_000_000), (65536, 2)])
def test_a_side_longer_than_jpeg_allows_is_refused_before_its_pixels_are_decoded(size):
    """A 1x40,000,000 PNG (within the pixel limit) took 916 MB to decode: Pillow keeps a pointer and more a row."""
    from zoo.images import MAX_SIDE

    buf = io.BytesIO()
    Image.new("1", size).save(buf, "PNG")  # a few KB
    with pytest.raises(InvalidImageError, match=rf"{size[0]:,}x{size[1]:,} pixels.*sides of at most {MAX_SIDE:,}"):
        images.decode(buf.getvalue(), max_pixels=50_000_000)
    assert images.decode(corpus.encode(Image.new("RGB", (MAX_SIDE, 1)), "PNG")).size == (MAX_SIDE, 1)
