"""``report.html`` in a real browser: Debian's headless Chromium, driven by selenium through chromium-driver (both
installed by ``scripts/ensure-chromium.sh``, which ``make test`` runs; the test skips, saying why, only when they are
absent).

The page is opened at laptop size (1366 × 768) with every network request sent to a dead proxy, so anything the
page tried to fetch from outside (a CDN font, script or image) would fail and show as a console error. Checked:
no console errors or warnings, every image decoded, the tables there with rows, no horizontal scrolling of the
page, units and the selection protocol stated, and a full-page screenshot saved (to ``$PEFTBENCH_ARTIFACTS`` too,
when set).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from peftbench.reporting.build import write_report
from tests.reporting.test_report_intervals import _run

WIDTH, HEIGHT = 1366, 768


def _browser_paths() -> tuple[str, str]:
    """Chromium and its driver, or a skip that says how to get them."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if not p)
        pytest.skip(
            f"no {missing}: scripts/ensure-chromium.sh could not install Debian's chromium and "
            "chromium-driver here (see its message and /tmp/ensure-chromium.log)"
        )
    return browser, driver


@pytest.fixture
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, chromedriver = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    # a dead proxy for every request, loopback included: the page must not fetch anything
    offline = ("--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},{HEIGHT}",
        *offline,
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def report(tmp_path) -> Path:
    """A report with every section: three methods over two seeds with predictions (intervals and paired tests),
    two learning rates for one of them (the learning-rate plot)."""
    root = tmp_path / "runs"
    for seed in (1, 2):
        _run(root, "full", seed, 0.8, val=40)
        _run(root, "lora", seed, 0.8, val=39)
        _run(root, "lora", seed, 0.5, lr=1e-4, val=20)
        _run(root, "prompt", seed, 0.3, val=10)
    files = write_report(root, tmp_path / "report")
    assert files.html is not None
    return files.html


@pytest.mark.slow
def test_report_page_renders_offline_in_chromium(driver, report, tmp_path):
    driver.get(report.as_uri())
    state = driver.execute_script(
        """
        const images = Array.from(document.images);
        const external = Array.from(document.querySelectorAll('[src],[href]'))
            .map(e => e.getAttribute('src') || e.getAttribute('href'))
            .filter(u => !u.startsWith('data:') && !u.startsWith('#'));
        return {
            ready: document.readyState,
            images: images.map(i => ({ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth, shown: i.clientWidth,
                                      alt: i.alt})),
            tables: Array.from(document.querySelectorAll('table')).map(t => t.tBodies[0].rows.length),
            headings: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
            external: external,
            resources: performance.getEntriesByType('resource').map(r => r.name),
            pageWidth: document.documentElement.scrollWidth,
            viewWidth: window.innerWidth,
            height: document.documentElement.scrollHeight,
            text: document.body.innerText,
        };
        """
    )
    console = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert console == [], console
    assert state["ready"] == "complete"
    assert state["external"] == [] and state["resources"] == [], "the page must need nothing from outside"

    assert len(state["images"]) == len(list(report.parent.glob("*.png"))) == 3  # best, learning rate, categories
    for image in state["images"]:
        assert image["ok"], f"image not loaded: {image['alt']}"
        assert 0 < image["shown"] <= WIDTH, image  # scaled to the page, not wider than the window
    assert state["headings"] == [
        "Best configuration per method",
        "Which differences are real",
        "All configurations",
        "Runs",
    ]
    assert len(state["tables"]) == 4 and all(rows > 0 for rows in state["tables"]), state["tables"]
    assert state["pageWidth"] <= state["viewWidth"], "the page scrolls sideways at laptop width"

    text = state["text"]
    assert "0–100" in text and "in seconds" in text and "Trainable % is of the model's total parameters" in text
    assert "Chosen on validation ROUGE-L" in text and "chosen on validation ROUGE-L" in text  # the protocol
    for image in state["images"]:
        assert "0–100" in image["alt"] and "chosen on validation" in image["alt"], image["alt"]

    driver.set_window_size(WIDTH, min(state["height"] + 120, 16000))
    shot = tmp_path / "report-screenshot.png"
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    if os.environ.get("PEFTBENCH_ARTIFACTS"):
        target = Path(os.environ["PEFTBENCH_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / shot.name)
