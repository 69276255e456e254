"""The UI in a real browser: Debian's chromium driven by Playwright, against a live zoo on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from urllib.parse import urlsplit

import pytest

from tests.conftest import IN_CI, LIVE_TAGS
from zoo import inference
from zoo.settings import REPO_ROOT

SHOTS = REPO_ROOT / "screenshots"  # git-ignored
# Chromium's own background traffic off; any host but 127.0.0.1 fails to resolve.
FLAGS = ["--no-sandbox", "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
         "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--metrics-recording-only",
         "--no-pings", "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]

pytestmark = pytest.mark.slow


@pytest.fixture
def page():
    """A headless chromium page that may only talk to 127.0.0.1 (anything else is aborted and recorded)."""
    path = shutil.which("chromium")
    if path is None:
        if IN_CI:
            pytest.fail("chromium is not installed; .ci/run installs it with apt-get (Debian package chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=FLAGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.outside = []

        def guard(route):
            if urlsplit(route.request.url).hostname == "127.0.0.1" or route.request.url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                pg.outside.append(route.request.url)
                route.abort()

        pg.route("**/*", guard)
        pg.set_default_timeout(int(os.environ.get("ZOO_BROWSER_TIMEOUT_MS", "60000")))
        yield pg
        browser.close()


def test_classify_in_a_browser_and_every_tab_renders(live_zoo, page):
    SHOTS.mkdir(exist_ok=True)
    image = REPO_ROOT / "examples" / "chelsea.jpg"
    expected = [s.label.name for s in inference.classify([str(image)], LIVE_TAGS[0])[0][0].top]

    page.goto(live_zoo.url)
    page.get_by_role("tab", name="Classify").wait_for()
    page.locator("#classify-image input[type=file]").set_input_files(str(image))
    picker = page.locator("#classify-model input")
    picker.click()
    picker.fill(LIVE_TAGS[0])
    page.get_by_role("option", name=LIVE_TAGS[0].split(".")[1], exact=False).first.click()
    page.locator("#classify-run").click()
    top5 = page.locator("#classify-top5")
    for name in expected:  # the five classes the service gives, shown with their bars
        top5.get_by_text(name, exact=True).first.wait_for()
    shown = top5.inner_text()
    assert all(name in shown for name in expected)
    page.get_by_text("Grad-CAM for").wait_for()  # the chained explanation ran too, and its images load
    page.wait_for_function("() => [...document.querySelectorAll('#gradcam img')].some(i => i.naturalWidth > 0)")
    page.screenshot(path=str(SHOTS / "classify.png"), full_page=True)

    checks = {
        "Compare": ("#compare-run", "Compare"),
        "Architecture": ("#stage-table", "conv5_x"),
        "Model zoo": ("#zoo-table", "resnet50.a1_in1k"),
        "Transfer lab": ("#lab-train", "Train and compare"),
        "API": ("#api-doc", "client.predict"),
    }
    for tab, (selector, text) in checks.items():
        page.get_by_role("tab", name=tab).click()
        element = page.locator(selector).first
        element.wait_for(state="visible")
        page.wait_for_function("([sel, t]) => document.querySelector('body').innerText.includes(t)",
                               arg=[selector, text])
        page.screenshot(path=str(SHOTS / f"{tab.lower().replace(' ', '-')}.png"), full_page=True)
    assert page.outside == [], f"the page tried to reach other hosts: {page.outside}"


def test_why_residual_draws_live_curves_then_the_results_on_desktop_and_phone(live_zoo, page):
    SHOTS.mkdir(exist_ok=True)
    page.goto(live_zoo.url)
    page.get_by_role("tab", name="Why residual?").click()
    page.locator("#deg-train").wait_for(state="visible")
    page.get_by_label("56 layers (n=9)").uncheck()  # plain-20 and ResNet-20 only: seconds, not minutes
    epochs = page.locator("#deg-epochs input[type=number]")
    epochs.fill("3")
    epochs.press("Enter")
    page.locator("#deg-train").click()
    page.locator("#deg-status").get_by_text("Epoch", exact=False).first.wait_for()  # live progress, in words
    page.wait_for_function("() => document.querySelector('#deg-curves svg polyline') !== null")
    page.screenshot(path=str(SHOTS / "why-residual-live.png"), full_page=True)
    page.locator("#deg-status").get_by_text("ResNet-20 ends with", exact=False).wait_for()
    table = page.locator("#deg-table").inner_text()
    assert "plain-20" in table and "ResNet-20" in table
    assert page.locator("#deg-curves svg polyline[stroke-dasharray]").count() == 1  # plain drawn dashed
    page.screenshot(path=str(SHOTS / "why-residual.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(SHOTS / "why-residual-phone.png"), full_page=True)
    assert page.outside == [], f"the page tried to reach other hosts: {page.outside}"


def test_docs_and_redoc_render_with_no_network_beyond_this_server(live_zoo, page):
    SHOTS.mkdir(exist_ok=True)
    page.goto(f"{live_zoo.url}/docs")
    page.locator(".opblock").first.wait_for()  # Swagger UI drew the operations from /openapi.json
    assert page.get_by_text("/api/models/{org}/{repo}/revision/{revision}").count() >= 1
    page.screenshot(path=str(SHOTS / "docs.png"))
    page.goto(f"{live_zoo.url}/redoc")
    page.get_by_text("ResNet Zoo", exact=False).first.wait_for()
    page.locator("[data-section-id]").first.wait_for()  # ReDoc drew its sections
    page.screenshot(path=str(SHOTS / "redoc.png"))
    assert page.outside == [], f"the docs tried to reach other hosts: {page.outside}"
