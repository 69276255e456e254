"""The block diagram draws what the real timm models contain, as the paper's Figures 3 and 5 do."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import IN_CI
from zoo import blockdiagram
from zoo.architecture import describe
from zoo.blockdiagram import SVG_NS
from zoo.registry import ARCHITECTURES
from zoo.settings import REPO_ROOT

NS = {"s": SVG_NS}


def _figure(names: list[str], **kwargs) -> ET.Element:
    return ET.fromstring(blockdiagram.figure([describe(n) for n in names], **kwargs))


def _columns(root: ET.Element) -> list[ET.Element]:
    return root.findall("s:svg[@class='network']", NS)


def _title(col: ET.Element) -> str:
    return col.find(".//s:text[@class='title']", NS).text


def _blocks(col: ET.Element) -> list[tuple[str, int, str, list[str]]]:
    """(stage, repeat, shortcut, layer labels) of every drawn run of blocks, top to bottom."""
    return [(g.get("data-stage"), int(g.get("data-repeat")), g.get("data-shortcut"),
             [t.text for t in g.findall("s:text[@class='layer']", NS)])
            for g in col.findall(".//s:g[@class='block']", NS)]  # fmt: skip


def _arcs(col: ET.Element, kind: str) -> list[int]:
    """How many blocks each drawn shortcut arc of `kind` stands for."""
    return [int(p.get("data-blocks")) for p in col.findall(f".//s:path[@class='shortcut {kind}']", NS)]


def test_each_block_type_is_drawn_as_its_layers_with_channels_groups_and_strides():
    r34, r50, x50 = _columns(_figure(["resnet34", "resnet50", "resnext50_32x4d"]))
    assert _blocks(r34)[:3] == [  # basic: 3x3 -> 3x3; the first block of conv3_x halves the size
        ("conv2_x", 3, "identity", ["3x3, 64", "3x3, 64"]),
        ("conv3_x", 1, "projection", ["3x3, 128, /2", "3x3, 128"]),
        ("conv3_x", 3, "identity", ["3x3, 128", "3x3, 128"]),
    ]
    assert _blocks(r50)[:3] == [  # bottleneck: 1x1 reduce -> 3x3 -> 1x1 expand by 4 (stride on the 3x3: v1.5)
        ("conv2_x", 1, "projection", ["1x1, 64", "3x3, 64", "1x1, 256"]),
        ("conv2_x", 2, "identity", ["1x1, 64", "3x3, 64", "1x1, 256"]),
        ("conv3_x", 1, "projection", ["1x1, 128", "3x3, 128, /2", "1x1, 512"]),
    ]
    assert _blocks(x50)[-2:] == [  # ResNeXt-50 32x4d: the same skeleton, twice as wide, 3x3 in 32 groups
        ("conv5_x", 1, "projection", ["1x1, 1024", "3x3, 1024, g=32, /2", "1x1, 2048"]),
        ("conv5_x", 2, "identity", ["1x1, 1024", "3x3, 1024, g=32", "1x1, 2048"]),
    ]
    # visibly different: two boxes a block, three (the 1x1s thinner, the reduced ones narrower), three + stacked
    shapes = []
    for col in (r34, r50, x50):
        g = col.find(".//s:g[@class='block']", NS)
        shapes.append(sorted((r.get("width"), r.get("height")) for r in g.findall("s:rect", NS)))
    assert [len(s) for s in shapes] == [2, 3, 5] and len({tuple(s) for s in shapes}) == 3
    assert {h for _, h in shapes[1]} == {"20", "26"} and len({w for w, _ in shapes[1]}) == 2


@pytest.mark.parametrize("arch", [*ARCHITECTURES, "test_resnet"])
def test_solid_and_dashed_arcs_match_the_models_shortcuts(arch: str):
    a = describe(arch)
    (col,) = _columns(_figure([arch]))
    identity = sum(b.shortcut.kind == "identity" for b in a.blocks)
    projection = len(a.blocks) - identity
    assert sum(_arcs(col, "identity")) == identity and sum(_arcs(col, "projection")) == projection
    assert _arcs(col, "projection") == [1] * projection  # each projection is its own block, drawn as such
    drawn = _blocks(col)
    assert sum(repeat for _, repeat, _, _ in drawn) == len(a.blocks)
    assert [sum(r for s, r, _, _ in drawn if s == stage.name) for stage in a.stages] == list(a.layers)
    assert len(col.findall(".//s:circle[@class='add']", NS)) == len(drawn)


def test_the_papers_shortcut_counts_and_a_152_layer_net_stays_short():
    r34, r50, r152 = _columns(_figure(["resnet34", "resnet50", "resnet152"]))
    assert (sum(_arcs(r34, "identity")), sum(_arcs(r34, "projection"))) == (13, 3)
    assert (sum(_arcs(r50, "identity")), sum(_arcs(r50, "projection"))) == (12, 4)
    assert len(_blocks(r152)) == 8  # 50 blocks drawn as 8: each stage's first block, then the rest "×n"
    assert [t.text for t in r152.findall(".//s:text[@class='repeat']", NS)] == ["×2", "×7", "×35", "×2"]
    assert _height(r152) == _height(r50)  # depth shows in the counts, not in a taller drawing


def _height(svg: ET.Element) -> float:
    return float(svg.get("viewBox").split()[3])


def test_networks_keep_the_order_given_and_plain_twins_have_no_shortcuts():
    order = ["resnext50_32x4d", "resnet18", "resnet152"]
    assert [_title(c) for c in _columns(_figure(order))] == ["ResNeXt-50 32x4d", "ResNet-18", "ResNet-152"]
    cols = _columns(_figure(["resnet34", "resnet50"], plain_twins=True))
    assert [_title(c) for c in cols] == ["ResNet-34", "plain-34", "ResNet-50", "plain-50"]
    assert [_title(c) for c in _columns(_figure(["resnext101_32x8d"], plain_twins=True))] == [
        "ResNeXt-101 32x8d", "plain-101 32x8d"]  # fmt: skip
    for residual, plain in (cols[:2], cols[2:]):
        assert not plain.findall(".//s:path[@class]", NS) and not plain.findall(".//s:circle", NS)
        assert {s for _, _, s, _ in _blocks(plain)} == {"none"}
        assert [b[3] for b in _blocks(plain)] == [b[3] for b in _blocks(residual)]  # the same layers
        assert _height(plain) == _height(residual)  # so the twins line up layer by layer
    svg = ET.fromstring(blockdiagram.diagram([describe("resnet18"), describe("resnet34")], plain_twins=True))
    assert [_title(c) for c in svg.findall("s:svg[@aria-label]", NS)[:4]] == [
        "ResNet-18", "plain-18", "ResNet-34", "plain-34"]  # fmt: skip


def test_accessible_with_a_text_legend_and_text_never_under_11_px():
    root = _figure(["resnet50", "resnext101_32x8d"])
    svgs = root.findall("s:svg", NS)
    for svg in svgs:
        assert svg.get("role") == "img" and svg.get("aria-label")
        assert svg[0].tag == f"{{{SVG_NS}}}title" and svg[0].text == svg.get("aria-label")
    assert "12 identity and 4 projection shortcuts" in _columns(root)[0].get("aria-label")
    legend = root.find("s:svg[@class='legend']", NS)
    words = " ".join(t.text for t in legend.iter(f"{{{SVG_NS}}}text"))
    for phrase in ("identity shortcut", "projection shortcut", "1x1 conv", "g groups", "repeated n times"):
        assert phrase in words
    assert "g groups" not in " ".join(t.text for t in _figure(["resnet50"]).iter(f"{{{SVG_NS}}}text"))
    for svg in svgs:  # the smallest a column or the legend may render, times its smallest font
        style = dict(kv.split(":", 1) for kv in svg.get("style").split(";") if ":" in kv)
        min_px = float(style["min-width"].removesuffix("px"))
        sizes = [float(t.get("font-size")) for t in svg.iter(f"{{{SVG_NS}}}text")]
        assert min(sizes) * min_px / float(svg.get("viewBox").split()[2]) >= 11
        assert min_px <= 358  # fits a 390 px phone with the page's margins


def test_the_command_line_writes_one_svg_and_says_what_is_wrong(capsys):
    assert blockdiagram.main(["resnet34,resnet50", "--plain"]) == 0
    svg = ET.fromstring(capsys.readouterr().out)
    assert [t.text for t in svg.iter(f"{{{SVG_NS}}}text") if t.get("class") == "title"] == [
        "ResNet-34", "plain-34", "ResNet-50", "plain-50"]  # fmt: skip
    assert blockdiagram.main(["resnt50"]) == 2
    err = capsys.readouterr().err
    assert "Unknown model 'resnt50'" in err and "resnet50" in err and "Traceback" not in err
    assert blockdiagram.main([]) == 2 and "resnet34,resnet50" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("width", [1440, 390])
def test_in_chromium_text_is_legible_labels_fit_and_nothing_runs_off(width: int):
    path = shutil.which("chromium")
    if path is None:
        if IN_CI:
            pytest.fail("chromium is not installed; .ci/run installs it with apt-get (Debian package chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from tests.test_ui_browser import FLAGS

    names = ("resnet152", "resnext50_32x4d", "resnext101_32x16d")  # longest labels in wide and narrow boxes, ×35
    html = blockdiagram.figure([describe(n) for n in names], plain_twins=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.set_content(f"<!doctype html><html><body style='margin:16px'>{html}</body></html>")
        facts = page.evaluate(_MEASURE)
        (REPO_ROOT / "screenshots").mkdir(exist_ok=True)
        page.screenshot(path=str(REPO_ROOT / "screenshots" / f"blockdiagram-{width}.png"), full_page=True)
        browser.close()
    assert facts["min_font_px"] >= 11, facts
    assert facts["overflowing_labels"] == [], facts
    assert facts["clipped"] == [], facts
    assert facts["page_width"] <= width, facts
    tops = [round(t) for t in facts["column_tops"]]
    assert tops == sorted(tops) and (len(set(tops)) == 1) == (width == 1440)  # one row on a laptop, wraps on a phone
    assert facts["legend_top"] <= tops[0]  # the key is met first: left of the networks, or above them


_MEASURE = """() => {
  const texts = [...document.querySelectorAll('svg text')];
  const px = t => parseFloat(t.getAttribute('font-size')) * t.getScreenCTM().a;
  const overflowing = [...document.querySelectorAll('g.block')].flatMap(g => [...g.querySelectorAll('text.layer')]
    .filter(t => { const r = t.previousElementSibling.getBBox(), b = t.getBBox();
                   return b.x < r.x + 2 || b.x + b.width > r.x + r.width - 2; })
    .map(t => t.textContent));
  const clipped = texts.filter(t => { const b = t.getBBox(), v = t.ownerSVGElement.viewBox.baseVal;
                                      return b.x < 0 || b.x + b.width > v.width; }).map(t => t.textContent);
  const legend_top = document.querySelector('svg.legend').getBoundingClientRect().top;
  return {legend_top, min_font_px: Math.min(...texts.map(px)), overflowing_labels: overflowing, clipped,
          page_width: document.scrollingElement.scrollWidth,
          column_tops: [...document.querySelectorAll('svg.network')].slice(0, 3)
            .map(s => s.getBoundingClientRect().top)};
}"""
