"""`mixdistill bench report`: is the audit browser usable at 200,000 rationales?

Renders report.html for a synthetic audit of N rationales (4 per problem, questions and rationales of realistic length
drawn from a word list, a quarter rejected) and reports the file size, the render time, and, where a headless
Chromium and selenium exist, the time until the page has decoded its data and shown the first page, and the time
one filter click and the first text search take. Targets: the file under 100 MB, first page under 10 s, a filter
under 1 s, a search under 2 s.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl

WORDS = ("apples pencils rows each more less total how many does have gives away buys sells bakes cookies tickets "
         "students class teacher books pages minutes hours train car miles speed price dollars cents boxes bags "
         "garden flowers trees birds eggs baskets first then after left remaining together altogether equal share "
         "groups times twice half third number difference sum product divided multiplied added subtracted").split()


def synthetic_audit(n: int, seed: int = 0) -> pl.DataFrame:
    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    n_problems = max(1, n // 4)
    questions = [f"{words(30)} {rng.randint(2, 99)} {words(8)}?" for _ in range(n_problems)]
    rows = []
    for i in range(n):
        p = i % n_problems
        mode = "cot" if i % 2 == 0 else "pot"
        kept = rng.random() < 0.75
        rationale = (f"{words(45)}. The answer is {rng.randint(1, 500)}." if mode == "cot" else
                     f"# {words(6)}\nx = {rng.randint(2, 99)}\ny = {rng.randint(2, 99)}\nans = x * y + {rng.randint(1, 9)}")
        rows.append({
            "request_key": f"{rng.getrandbits(64):016x}", "problem_id": f"p{p:07d}", "task": "svamp",
            "source_id": f"chal-{p}", "question": questions[p], "mode": mode, "teacher": f"teacher-{i % 3}",
            "gold": str(rng.randint(1, 500)), "answer": str(rng.randint(1, 500)), "rationale": rationale,
            "reason": "kept" if kept else rng.choice(["wrong-answer", "no-answer", "error", "timeout", "not-selected"]),
            "rule": "strict@1", "execution": "ok" if mode == "pot" else None, "error_text": None,
            "kept": kept, "split": "validation" if p % 20 == 0 else "train",
        })
    return pl.DataFrame(rows)


def _context(audit: pl.DataFrame) -> dict:
    from mixdistill import __version__

    rows = {c: {"train": 0, "validation": 0} for c in ("cot", "pot", "mixed")}
    return {
        "name": "bench", "version": "0.0.0", "fingerprint": "0" * 32, "built": "2026-01-01 00:00:00",
        "mixdistill_version": __version__, "license": {"id": "mit"}, "plots": [],
        "stats": {"problems": audit["problem_id"].n_unique(), "rows": rows, "teacher_mode": [], "mix": {}},
        "provenance": {"teachers": [], "sources": []}, "lineage": {"prompt_ids": [], "rules": ["strict@1"]},
    }


def _browser_times(path: Path) -> dict:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select, WebDriverWait
    except ImportError:
        return {"browser": "selenium not installed"}
    browser, driver_path = shutil.which("chromium") or shutil.which("google-chrome"), shutil.which("chromedriver")
    if not browser or not driver_path:
        return {"browser": "no chromium/chromedriver"}
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        t0 = time.perf_counter()
        driver.get(path.as_uri())
        WebDriverWait(driver, 120, poll_frequency=0.05).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        load = time.perf_counter() - t0
        before = driver.find_element(By.ID, "status").text
        t0 = time.perf_counter()
        Select(driver.find_element(By.ID, "f-kept")).select_by_visible_text("rejected")
        WebDriverWait(driver, 30, poll_frequency=0.01).until(lambda d: d.find_element(By.ID, "status").text != before)
        click = time.perf_counter() - t0
        before = driver.find_element(By.ID, "status").text
        t0 = time.perf_counter()  # the first search also lower-cases every text once; 150 ms of it is the debounce
        driver.find_element(By.ID, "search").send_keys("garden")
        WebDriverWait(driver, 60, poll_frequency=0.01).until(lambda d: d.find_element(By.ID, "status").text != before)
        search = time.perf_counter() - t0
        return {"browser": browser, "load_s": round(load, 2), "filter_s": round(click, 3),
                "search_s": round(search, 3), "status": driver.find_element(By.ID, "status").text}
    finally:
        driver.quit()


def run(n: int = 200_000, keep: Path | None = None) -> dict:
    from mixdistill.cards import write_report
    from mixdistill.workspace import Workspace

    audit = synthetic_audit(n)
    folder = Path(tempfile.mkdtemp(prefix="mixdistill-bench-report-"))
    path = (keep or folder / "report.html")
    with Workspace() as ws:
        ws.append("audit", audit.with_row_index("_pos"))
        t0 = time.perf_counter()
        write_report(path, _context(audit), [], ws)
        render_s = time.perf_counter() - t0
    out = {"rationales": n, "file_mb": round(path.stat().st_size / 1e6, 2), "render_s": round(render_s, 2),
           **_browser_times(path)}
    if keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return out
