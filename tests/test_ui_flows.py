"""The app as people meet it, in Chromium at a laptop's 1440x900 and a phone's 390x844: the first view, every
error as one sentence in the tab's status line (no server path, no Gradio internals, nothing left broken),
the architecture diagram, the compare table, the Transfer lab's progress and Cancel, the API tab."""

from __future__ import annotations

import struct
import time
import zlib

import pytest

from tests.conftest import LIVE_TAGS
from tests.test_ui_browser import SHOTS, page  # noqa: F401 (the chromium page fixture)
from zoo.settings import REPO_ROOT
from zoo.ui import views
from zoo.ui.views import arch_title

pytestmark = pytest.mark.slow
SIZES = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}
LEAKS = ("/tmp/", "Could not preprocess", "Traceback", "python -m zoo", "UnidentifiedImageError", "gradio_api/file")
TABS = ["Classify", "Why residual?", "Compare", "Architecture", "Model zoo", "Transfer lab", "API"]


def _shot(pg, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _open(pg, url: str, size: str, tab: str | None = None) -> None:
    pg.set_viewport_size(SIZES[size])
    pg.goto(url)
    pg.get_by_role("tab", name="Classify").wait_for()
    pg.locator("#classify-run").wait_for()
    pg.wait_for_load_state("networkidle")  # the page's load events (catalog, pickers, API guide) answered
    if tab:
        pg.get_by_role("tab", name=tab).click()


def _no_bare_errors(pg) -> None:
    """Gradio's red "Error" badge (an event that raised) never shows; neither does any leak in the page."""
    text = pg.locator("body").inner_text()
    assert not any(leak in text for leak in LEAKS), [leak for leak in LEAKS if leak in text]
    assert pg.locator(".error:visible, .toast-body.error:visible").count() == 0


def _in_view(pg, selector: str) -> bool:
    box = pg.locator(selector).first.bounding_box()
    view = pg.viewport_size
    return (
        box is not None
        and box["y"] >= 0
        and box["y"] + min(box["height"], 40) <= view["height"]
        and box["x"] + box["width"] <= view["width"] + 1
    )


def _status(pg, elem_id: str, expected: str) -> str:
    """Wait for the status line `elem_id` to contain `expected`; its text."""
    pg.locator(f"#{elem_id}").get_by_text(expected, exact=False).first.wait_for()
    return pg.locator(f"#{elem_id}").inner_text()


def _upload(pg, elem_id: str, path) -> None:
    """Put `path` in the file box `elem_id`, clearing what it held."""
    clear = pg.locator(f"#{elem_id} button[aria-label=Clear]")
    if clear.count():
        clear.first.click()
    pg.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))


def _pick(pg, elem_id: str, tag: str) -> None:
    """Choose `tag` in the dropdown `elem_id` by typing it."""
    arch, _, pretrained = tag.partition(".")
    picker = pg.locator(f"#{elem_id} input")
    picker.click()
    picker.fill(pretrained)  # the list filters on labels: "ResNet-18 · a1_in1k ★ · 73.2%"
    pg.get_by_role("option", name=f"{arch_title(arch)} · {pretrained}", exact=False).first.click()


def _idle(pg) -> None:
    """Wait until no event is running (no progress or pending overlay on the page)."""
    pg.wait_for_function("() => document.querySelectorAll('.eta-bar, .progress-text, .wrap.pending').length === 0")


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG header claiming `width` x `height` pixels with almost no data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", SIZES)
def test_first_view_is_usable_and_every_tab_is_in_reach(live_zoo, page, size):  # noqa: F811
    _open(page, live_zoo.url, size)
    page.screenshot(path=str(SHOTS / f"first-view-{size}.png"))  # what fits the screen, before scrolling
    for selector in ("#classify-image", "#classify-model", "#classify-run"):
        assert _in_view(page, selector), f"{selector} is not in the first view at {size}"
    examples = page.locator("#classify-examples img").first  # thumbnails of the example photos
    examples.wait_for()
    assert examples.bounding_box()["y"] + 20 < SIZES[size]["height"], "the examples are below the first view"
    assert not page.locator("#explain-row").is_visible()  # no large empty Grad-CAM box before a result
    box = page.locator("#classify-image")  # drop, click, paste or webcam: all offered in the image box
    for source in ("Upload file", "Paste from clipboard", "Capture from camera"):
        assert box.get_by_role("button", name=source, exact=True).count() == 1, f"no {source!r} in the image box"
    for tab in TABS:  # no tab hides behind an unlabelled "..."
        assert page.get_by_role("tab", name=tab).is_visible(), f"tab {tab} is hidden at {size}"
    _no_bare_errors(page)


@pytest.mark.parametrize("size", SIZES)
def test_bad_uploads_are_refused_by_the_zoos_decoder_with_one_sentence(live_zoo, page, tmp_path, size):  # noqa: F811
    files = {
        "notes.jpg": (b"these are my notes, not a picture\n" * 10, "not an image in an accepted format"),
        "empty.png": (b"", "empty"),
        "bomb.png": (_png_header(60_000, 60_000), "pixels"),
        "layers.psd": (b"8BPS\x00\x01" + b"\x00" * 64, "not an image in an accepted format"),
    }
    _open(page, live_zoo.url, size)
    _pick(page, "classify-model", LIVE_TAGS[0])  # weights here: the file is what fails
    page.locator("#classify-examples img").first.click()  # an example first: later uploads still skip Gradio's
    page.locator("#classify-image img").wait_for()  # Pillow (gr.Examples' update would have brought it back)
    for name, (data, expected) in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        _upload(page, "classify-image", path)
        text = _status(page, "classify-status", expected)
        assert name in text and "/tmp" not in text, text
        page.locator("#classify-run").click()
        page.wait_for_timeout(300)
        _idle(page)
        text = _status(page, "classify-status", expected)
        assert name in text, text
        _no_bare_errors(page)
    _shot(page, f"classify-bad-upload-{size}")
    _upload(page, "classify-image", REPO_ROOT / "examples" / "chelsea.jpg")
    page.locator("#classify-image img").wait_for()  # the browser's preview
    page.wait_for_function("() => !document.querySelector('#classify-status').innerText.trim()")


@pytest.mark.parametrize("size", SIZES)
def test_classify_with_a_missing_model_says_what_to_do_and_pickers_mark_it(live_zoo, page, size):  # noqa: F811
    _open(page, live_zoo.url, size)
    picker = page.locator("#classify-model input")
    picker.click()
    page.get_by_role("option", name="not downloaded").first.wait_for()
    assert page.get_by_role("option", name=LIVE_TAGS[0].split(".")[1]).first.inner_text().count("not downloaded") == 0
    picker.press("Escape")
    _upload(page, "classify-image", REPO_ROOT / "examples" / "coffee.jpg")
    page.locator("#classify-run").click()  # resnet50, not on this machine, the Hub unreachable
    _idle(page)
    text = _status(page, "classify-status", "cannot be reached")
    assert "resnet50" in text
    _no_bare_errors(page)
    _shot(page, f"classify-missing-{size}")


@pytest.mark.parametrize("size", SIZES)
def test_zoo_typo_and_failed_fetch_leave_the_table_and_say_why(live_zoo, page, size):  # noqa: F811
    _open(page, live_zoo.url, size, "Model zoo")
    page.locator("#zoo-table").get_by_text("resnet50.a1_in1k").first.wait_for()
    box = page.locator("#zoo-picked textarea, #zoo-picked input").first
    box.fill("resnt50")
    box.press("Enter")
    assert "Did you mean resnet50" in _status(page, "zoo-status", "no model called")
    box.fill("resnet101.a1h_in1k")
    box.press("Enter")
    page.locator("#zoo-fetch").click()
    text = _status(page, "zoo-status", "cannot be reached")
    assert "resnet101.a1h_in1k" in text
    page.locator("#zoo-table").get_by_text("resnet50.a1_in1k").first.wait_for()  # the table is intact
    _shot(page, f"zoo-failed-fetch-{size}")
    assert page.locator("#zoo-table").get_by_text("resnet34.tv_in1k").count() >= 1  # rows, not an error box
    _no_bare_errors(page)
    best = views.zoo_table(sort="published top-1, best first")["model"].iloc[0]
    page.locator("#zoo-sort input").click()  # one tap re-sorts the table (no header menu to find)
    page.get_by_role("option", name="published top-1, best first").click()
    cell = page.locator("#zoo-table").get_by_text(best.removesuffix(" ★")).filter(visible=True).first
    cell.wait_for()
    head = page.locator("#zoo-table thead").filter(visible=True).first.bounding_box()
    assert cell.bounding_box()["y"] < head["y"] + head["height"] + 40, "the best top-1 is not the first row"


@pytest.mark.parametrize("size", SIZES)
def test_architecture_draws_in_the_order_chosen_and_an_empty_choice_is_a_message(live_zoo, page, size):  # noqa: F811
    _open(page, live_zoo.url, size, "Architecture")
    networks = page.locator("#arch-networks")
    page.locator("#arch-diagram svg.network").first.wait_for()
    networks.get_by_label("ResNet-18").uncheck()
    networks.get_by_label("ResNet-50").uncheck()
    _status(page, "arch-status", "Tick at least one network")
    assert page.locator("#arch-diagram svg.network").count() >= 1  # the last drawing stays
    _no_bare_errors(page)
    networks.get_by_label("ResNeXt-50 32x4d").check()
    networks.get_by_label("ResNet-34").check()
    page.wait_for_function("() => document.querySelectorAll('#arch-diagram svg.network').length === 2")
    labels = page.locator("#arch-diagram svg.network").evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")
    assert labels[0].startswith("ResNeXt-50") and labels[1].startswith("ResNet-34"), labels
    page.locator("#arch-plain input").check()
    page.wait_for_function("() => document.querySelectorAll('#arch-diagram svg.network').length === 4")
    assert page.locator("#arch-diagram svg path[stroke-dasharray]").count() >= 1  # projection shortcuts dashed
    page.wait_for_function("() => !document.querySelector('#arch-status').innerText.trim()")
    table = page.locator("#stage-table")
    table.get_by_text("first block").first.wait_for()
    # every header reads whole: a header wraps only between its words, never inside one ("blo/cks")
    broken = table.locator("thead th span.header").evaluate_all(
        "spans => spans.filter(s => s.offsetWidth > 0).filter(s => {"
        "  const lh = parseFloat(getComputedStyle(s).lineHeight) || 1.5 * parseFloat(getComputedStyle(s).fontSize);"
        "  return Math.round(s.offsetHeight / lh) > s.innerText.trim().split(/\\s+/).length;"
        "}).map(s => s.innerText)")
    assert broken == [], broken
    _shot(page, f"architecture-{size}")


@pytest.mark.parametrize("size", SIZES)
def test_compare_table_headers_and_numbers_show_without_scrolling(live_zoo, page, size):  # noqa: F811
    _open(page, live_zoo.url, size, "Compare")
    table = page.locator("#compare-table")
    table.get_by_text("published top-1").first.wait_for()  # real headers on the empty table, never "1 2 3"
    head = table.locator("thead").inner_text()
    assert "params (M)" in head and "GMACs" in head
    while page.locator("#compare-models .token-remove").count():  # start from an empty choice
        page.locator("#compare-models .token-remove").first.click()
    _upload(page, "compare-image", REPO_ROOT / "examples" / "chelsea.jpg")
    for tag in LIVE_TAGS:
        _pick(page, "compare-models", tag)
    page.keyboard.press("Escape")  # a multiselect list stays open
    page.locator("#compare-run").click()
    page.locator("#compare-status .progress-text, #compare-status .eta-bar").first.wait_for()  # one bar, there
    page.locator("#compare-models").get_by_text("Agreement", exact=False).count()
    page.get_by_text("Classes in every model's top-5").wait_for()
    _idle(page)
    assert LIVE_TAGS[1] in table.inner_text()
    if size == "desktop":
        for header in ("params (M)", "GMACs", "published top-1"):
            box = table.locator("th", has_text=header).first.bounding_box()
            assert box["x"] + box["width"] <= 1440, header
    _no_bare_errors(page)
    _shot(page, f"compare-{size}")


def test_transfer_lab_hides_the_zip_box_shows_progress_apart_and_cancels_within_2s(live_zoo, page):  # noqa: F811
    _open(page, live_zoo.url, "desktop", "Transfer lab")
    assert not page.locator("#lab-zip").is_visible()
    page.get_by_label("My zip of class folders").check()
    page.locator("#lab-zip").wait_for(state="visible")
    page.get_by_label("Built-in handwritten digits", exact=False).check()
    page.locator("#lab-zip").wait_for(state="hidden")
    page.locator("#lab-models input").click()  # resnet18.a1_in1k is chosen already: its weights are here
    page.keyboard.press("Escape")
    page.locator("#lab-train").click()
    page.locator("#lab-status").get_by_text("Working:").first.wait_for()  # progress in words, in the status line
    page.locator("#lab-status").get_by_text("epoch 2 of", exact=False).wait_for(timeout=120_000)
    page.wait_for_function("() => document.querySelector('#lab-curves svg polyline') !== null")  # live curve
    assert page.locator("#lab-curves .progress-text, #lab-curves .eta-bar").count() == 0  # nothing covers it
    _shot(page, "transfer-live-desktop")
    page.locator("#lab-cancel").click()
    start = time.monotonic()
    page.locator("#lab-status").get_by_text("Cancelled", exact=False).wait_for(timeout=2_000)
    page.wait_for_function("() => document.querySelectorAll('.eta-bar, .progress-text').length === 0", timeout=2_000)
    assert time.monotonic() - start < 2.5
    _no_bare_errors(page)
    page.set_viewport_size(SIZES["phone"])
    _shot(page, "transfer-cancelled-phone")


@pytest.mark.parametrize("size", SIZES)
def test_api_tab_is_compact_with_links_and_no_gradio_defaults(live_zoo, page, size):  # noqa: F811
    _open(page, live_zoo.url, size, "API")
    doc = page.locator("#api-doc")
    doc.get_by_text("client.predict", exact=False).first.wait_for()
    text = doc.inner_text()
    assert "Hello!!" not in text and "value_" not in text
    assert doc.locator("a[href$='/docs']").count() == 1 and doc.locator("a[href$='/openapi.json']").count() == 1
    height = doc.bounding_box()["height"]
    assert height < 3_000, height
    wide = doc.locator("pre").evaluate_all("ps => ps.filter(p => p.scrollWidth > p.clientWidth + 1).length")
    assert wide == 0  # curl and Python lines wrap
    _shot(page, f"api-{size}")
