"""The HTML report as a person sees it: opened from disk in headless Chromium through Selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` and ``pip install selenium``; skips cleanly otherwise.
Selenium Manager is never used (it would try to download a driver): the driver path is given explicitly.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.report.html import write_report
from test_report import BINARY_CLASSES, build_run_folder

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HEADLESS_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1280,1600",
)

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install selenium")
if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip("headless Chromium needs Debian's chromium and chromium-driver packages", allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402  (only once selenium is known to exist)


@pytest.fixture()
def browser():
    """A headless Chromium driven through the Debian chromedriver."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in HEADLESS_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_report_opens_from_disk_with_every_image_and_class_row(browser, tmp_path: Path) -> None:
    run = build_run_folder(tmp_path / "data", "binary")
    report = write_report(run, tmp_path / "site" / "report.html")
    shots = os.environ.get("SEGLAB_SHOTS")  # a folder to keep the screenshot and figures in, to look at them
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        for name in ("curves.png", "eval_gallery_worst.png", "eval_samples.png", "eval_per_image_iou.png"):
            shutil.copy(report.parent / "report_files" / name, Path(shots) / name)
    shutil.rmtree(report.parent / "report_files")  # the page must not depend on files beside it

    browser.get(report.resolve().as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    assert browser.title.startswith("seglab report")

    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt]);"
    )
    assert len(images) == 9
    for complete, width, height, alt in images:
        assert complete and width > 100 and height > 100, f"image {alt!r} did not load"

    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('table#per-class tbody tr'))"
        ".map(r => r.cells[0].textContent);"
    )
    assert cells == BINARY_CLASSES

    # Nothing but the page itself and its data: URIs was fetched.
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert all(name.startswith(("data:", "file:")) for name in resources), resources

    # every section is there and drawn: headings shown, each figure laid out at a readable width
    for anchor in ("summary", "training-curves", "evaluation-eval", "config"):
        element = browser.find_element("id", anchor)
        assert element.is_displayed() and element.size["height"] > 10, anchor
    widths = browser.execute_script("return Array.from(document.images).map(i => i.getBoundingClientRect().width);")
    assert all(w > 300 for w in widths), widths
    # the legend of the class colours sits on the page, with visible swatches in the report's colours
    swatches = browser.execute_script(
        "return Array.from(document.querySelectorAll('#class-colors-eval .swatch'))"
        ".map(s => [getComputedStyle(s).backgroundColor, s.getBoundingClientRect().width]);"
    )
    assert [c for c, _ in swatches] == ["rgb(0, 0, 0)", "rgb(255, 190, 0)"] and all(w >= 10 for _, w in swatches)
    assert browser.find_element("id", "error-colors-eval").is_displayed()

    # the whole page in one screenshot (the window as tall as the page)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 100, 16000))
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    if shots:
        shutil.copy(shot, Path(shots) / "report_screenshot.png")
    with Image.open(shot) as img:
        img.verify()
    with Image.open(shot) as img:
        assert img.format == "PNG" and img.size[0] >= 1000 and img.size[1] >= 3000  # the whole page, not a window
        pixels = np.array(img.convert("L"))
    assert pixels.std() > 10  # a rendered page, not a blank screen
    # the figures are in the shot: rows of the page hold drawn (non-white) pixels all the way down to the config
    drawn = (pixels < 200).mean(axis=1) > 0.01
    assert drawn[: len(drawn) // 4].any() and drawn[len(drawn) // 4: len(drawn) // 2].any() \
        and drawn[len(drawn) // 2:].any()
