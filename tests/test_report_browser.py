"""The audit browser (report.html) in a real headless Chromium: it loads offline, filters, searches and pages.

Driven by selenium with the distribution's chromium + chromium-driver (`.ci/run` installs them); skipped, saying
why, where no browser exists. The screenshot is kept in $MIXDISTILL_TEST_ARTIFACTS (default: test-artifacts/).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from mixdistill.corpus import build_version, export_version
from mixdistill.registry import Registry

ARTIFACTS = Path(os.environ.get("MIXDISTILL_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))


def chromium_driver():
    """A headless Chromium WebDriver, or a skip naming what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium); .ci/run installs it")
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,2000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture
def report(registry_path, shared_data, tmp_path):
    from test_corpus import fill, recipe

    with Registry.open(registry_path) as reg:
        fill(reg, shared_data)
        version, configs = build_version(reg, recipe())
        out = export_version(reg, version.ref, configs, tmp_path / "export")
    return out


def test_audit_browser_filters_searches_and_pages(report):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    kept = pl.read_parquet(report / "mixed" / "*.parquet")
    rejected = pl.read_parquet(report / "rejected" / "*.parquet")
    driver = chromium_driver()
    try:
        driver.get((report / "report.html").as_uri())  # file://, no server, no network
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        status = lambda: driver.find_element(By.ID, "status").text  # noqa: E731
        total = kept.height + rejected.height
        assert status() == f"1-50 of {total} rationales (page 1 of {-(-total // 50)})"

        Select(driver.find_element(By.ID, "f-kept")).select_by_visible_text("rejected")
        Select(driver.find_element(By.ID, "f-mode")).select_by_visible_text("pot")
        want = rejected.filter(pl.col("mode") == "pot")
        assert 0 < want.height <= 50
        assert status().startswith(f"1-{want.height} of {want.height} rationales")
        rows = driver.find_elements(By.CSS_SELECTOR, "#rows .row")
        assert len(rows) == want.height
        assert {(r.get_attribute("data-kept"), r.get_attribute("data-mode")) for r in rows} == {("0", "pot")}
        first = rows[0]
        assert first.find_elements(By.CSS_SELECTOR, "pre.rationale span.kw, pre.rationale span.num")  # highlighted
        assert "wrong-answer" in first.text and "strict@1" in first.text
        golds = {r.find_element(By.CSS_SELECTOR, "code.gold").text for r in rows}
        assert golds <= set(want["gold"])
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.execute_script("document.getElementById('browse').scrollIntoView()")
        driver.save_screenshot(str(ARTIFACTS / "report-rejected-pot.png"))

        # text search across question and rationale; kept rows only
        Select(driver.find_element(By.ID, "f-kept")).select_by_visible_text("kept")
        Select(driver.find_element(By.ID, "f-mode")).select_by_visible_text("all")
        sid = "-".join(kept["id"][0].split("-")[1:3])  # svamp-chal-104-cot-1 -> chal-104
        box = driver.find_element(By.ID, "search")
        box.send_keys(sid)
        n = kept.filter(pl.col("id").str.contains(f"-{sid}-", literal=True)).height
        WebDriverWait(driver, 5).until(lambda d: status().startswith(f"1-{n} of {n} rationales"))
        assert all(sid in r.text for r in driver.find_elements(By.CSS_SELECTOR, "#rows .row"))

        # paging over everything
        box.clear()
        Select(driver.find_element(By.ID, "f-kept")).select_by_visible_text("all")
        WebDriverWait(driver, 5).until(lambda d: status().startswith(f"1-50 of {total}"))
        driver.find_element(By.ID, "next").click()
        assert status().startswith(f"51-{min(100, total)} of {total}")
        assert driver.find_element(By.ID, "prev").is_enabled()
    finally:
        driver.quit()
    assert (ARTIFACTS / "report-rejected-pot.png").read_bytes()[:4] == b"\x89PNG"
