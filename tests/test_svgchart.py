"""Server-drawn SVG charts: every series drawn and named, text readable on a phone."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from zoo import svgchart
from zoo.ui import transfer_tab

NS = "{http://www.w3.org/2000/svg}"


def test_the_transfer_lab_chart_draws_and_names_every_run_of_the_update_it_is_given():
    """gr.LinePlot drew the previous update's series: the last run of a job never appeared (a browser pass)."""
    runs = ["resnet18 · linear", "resnet18 · mlp", "resnet18 · full"]
    curves = [{"epoch": e, "val accuracy": 30.0 + 10 * i + e, "train accuracy": 50.0, "run": run}
              for i, run in enumerate(runs) for e in (1, 2, 3)]
    root = ET.fromstring(transfer_tab._lines(curves, epochs=5))
    assert len(root.findall(f"{NS}polyline")) == 3
    assert [t.text for t in root.findall(f"{NS}text")][-3:] == runs  # the legend, in the runs' order
    colours = {p.get("stroke") for p in root.findall(f"{NS}polyline")}
    assert len(colours) == 3
    one = ET.fromstring(transfer_tab._lines(curves[:1]))  # one epoch of one run: a point, not nothing
    assert len(one.findall(f"{NS}circle")) == 1 and ET.fromstring(transfer_tab._lines([])).tag == f"{NS}svg"


def test_chart_text_stays_readable_on_a_phone():
    """The degradation lab's charts came out at 5-6 px on a 390 px phone (legend at the side of a 620 px box)."""
    series = [svgchart.Series(f"net-{i}", [1, 2, 3], [10.0, 20.0, 15.0], "#000", i % 2 == 0) for i in range(4)]
    svg = svgchart.chart(series, title="t", xlabel="epoch", ylabel="error (%)")
    width = float(ET.fromstring(svg).get("viewBox").split()[2])
    smallest = min(float(v) for v in re.findall(r'font-size[:=]"?(\d+(?:\.\d+)?)', svg))
    assert smallest * 340 / width >= 9.5  # at a 340 px wide column: about 10 px
