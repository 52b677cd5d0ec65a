"""The report opened in a real headless browser (Chromium, where installed: `apt-get install
chromium-headless-shell`): the page loads from a file with the network unused, its charts are parsed as
SVG, and the screenshot shows the chart colours (the SVG was drawn, not just shipped)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from strop.evaluation.report import write_report
from strop.evaluation.report.charts import COLOURS

from .test_report import FORGETTING, make_run

BROWSER = next(
    (b for b in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium installed")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--window-size=1200,1600",
    "--proxy-server=127.0.0.1:9",
    "--disable-background-networking",
]  # any fetch would fail


def test_the_report_renders_in_a_headless_browser(tmp_path):
    from PIL import Image

    a = make_run(tmp_path / "lr1", 1e-4, [2.0, 1.5, 1.0], 0.5, FORGETTING)
    b = make_run(tmp_path / "lr2", 2e-4, [2.0, 1.2], 0.75)
    html, _ = write_report([a, b], tmp_path / "report.html")
    dom = subprocess.run(
        [BROWSER, *FLAGS, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=60
    ).stdout
    # loss: two lines of 3 and 2 points; exact match: one point per run (no line)
    assert dom.count("<svg") == 2 and dom.count("<polyline") == 2 and dom.count("<circle") == 7 and "Forgetting" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [BROWSER, *FLAGS, f"--screenshot={shot}", html.as_uri()], capture_output=True, timeout=60, check=True
    )
    colours = {colour for _, colour in Image.open(shot).convert("RGB").getcolors(1 << 20)}
    for hex_colour in COLOURS[:2]:  # the two runs' lines
        assert tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)) in colours
