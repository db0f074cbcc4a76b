"""End to end: `streamlit run app.py` on loopback, opened in headless Debian Chromium via Playwright (slow tier).

One server for the module (its start is most of the time). Screenshots go
under the test's tmp_path; the per-prompt one is also copied to
/tmp/report-screenshot.png for a person to look at. A table (st.dataframe) is
drawn on a canvas; its visible cells are also in the DOM as `glide-cell-COL-ROW`
for screen readers, which is what these tests read.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.synthetic import build_store

APP = Path(__file__).resolve().parent.parent / "app.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HEADER_Y = 17  # the middle of a table's header row, in pixels from the top of its canvas
ITEM_ID_WIDTH = 200  # app.show_table gives item_id the "medium" width; the golden table's next column is "output chars"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """(url, run ids) of a streamlit server on a synthetic store with a 10,000-prompt judge run."""
    tmp_path = tmp_path_factory.mktemp("served")
    runs_dir = tmp_path / "runs"
    ids = build_store(runs_dir, n_large=10_000)
    port = free_port()
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--server.port", str(port),
                             "--browser.gatherUsageStats", "false"],
                            env={**os.environ, "HARNESS_RUNS_DIR": str(runs_dir)}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + START_TIMEOUT_S
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not start: {(tmp_path / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, ids
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.timeout(300)
def test_report_in_a_real_browser_shows_runs_comparison_and_inert_model_text(served, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing; scripts/setup.sh installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    url, ids = served
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))  # an alert() would mean XSS
            page.set_default_timeout(60_000)
            page.goto(url)
            expect(page.get_by_text("8 of 8 runs")).to_be_visible()
            page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)

            page.get_by_test_id("stSidebar").get_by_text("Compare", exact=True).click()
            expect(page.get_by_role("heading", name="Forgetting")).to_be_visible()
            expect(page.get_by_text("gate verdict: regression")).to_be_visible()
            expect(page.locator("[data-testid='stVegaLiteChart']").first).to_be_visible()
            page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)

            page.get_by_text(f"Per-prompt view of judge run {ids['judge']}").click()
            expect(page.get_by_text("xss-0 · outcome 0.0").first).to_be_visible()
            code = page.locator("[data-testid='stCode']", has_text="<script>alert(1)</script>").first
            expect(code).to_be_visible()
            expect(page.locator("[data-testid='stCode']", has_text="<img src=x onerror=alert(1)>").first).to_be_visible()
            expect(page.locator("[data-testid='stCode']", has_text="[link](javascript:alert(1))").first).to_be_visible()
            # The attacks are text: no element, link or bold was made from them.
            assert page.locator("img[src='x']").count() == 0
            assert page.locator("a[href^='javascript']").count() == 0
            assert page.locator("script:has-text('alert(1)')").count() == 0
            assert page.locator("h1", has_text="big").count() == 0
            page.wait_for_timeout(500)
            page.screenshot(path=str(tmp_path / "per-prompt.png"), full_page=False)
        finally:
            browser.close()
    assert dialogs == []
    shutil.copy(tmp_path / "per-prompt.png", "/tmp/report-screenshot.png")
    shutil.copy(tmp_path / "compare.png", "/tmp/report-screenshot-compare.png")


def _browser(pw):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing; scripts/setup.sh installs Debian's chromium (apt-get install chromium)")
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def _column(table, col: int) -> list[str]:
    """The texts of a table's visible cells in column `col`, top to bottom."""
    return table.locator(f"[data-testid^='glide-cell-{col}-']").all_inner_texts()


def _resorted(page, table, before: list[int], is_descending: bool, timeout_s: float = 30.0) -> list[int]:
    """Column 1's numbers once the grid has redrawn after a header click: changed from `before` and in
    order, or whatever it shows after `timeout_s` (a loaded machine redraws late; a fixed wait flaked)."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = [int(t) for t in _column(table, 1) if t]
        if (shown != before and shown == sorted(shown, reverse=is_descending)) or time.monotonic() > deadline:
            return shown
        page.wait_for_timeout(250)


@pytest.mark.timeout(300)
def test_golden_items_sort_numerically_in_a_real_browser(served, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, ids = served
    with sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_test_id("stSidebar").get_by_text("Golden items", exact=True).click()
            expect(page.get_by_text("Click a column header to sort")).to_be_visible()
            table = page.get_by_test_id("stDataFrame").first
            expect(table.get_by_test_id("glide-cell-1-0")).to_have_text("7")  # "Bonjour": stored order first
            canvas = table.locator("canvas").first.bounding_box()
            shown = [[int(t) for t in _column(table, 1) if t]]  # the unscored item has no output
            for is_descending in (False, True):  # ascending, then descending
                page.mouse.click(canvas["x"] + ITEM_ID_WIDTH + 30, canvas["y"] + HEADER_Y)
                shown.append(_resorted(page, table, shown[-1], is_descending))
            up, down = shown[1:]
            assert up == sorted(up) and down == sorted(down, reverse=True) and len(up) >= 8
            assert up.index(10 if 10 in up else 11) > up.index(9 if 9 in up else 8)  # 11 after 8, not "11" < "8"
            assert max(up) >= 100 and min(up) < 10
            page.screenshot(path=str(tmp_path / "golden.png"), full_page=True)
        finally:
            browser.close()


@pytest.mark.timeout(300)
def test_switching_compare_runs_shows_each_runs_results(served, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, ids = served
    with sync_playwright() as pw:
        browser = _browser(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_test_id("stSidebar").get_by_text("Compare", exact=True).click()
            summary = page.get_by_test_id("stDataFrame").first
            expect(summary.get_by_test_id("glide-cell-0-0")).to_contain_text("lora-r8")
            for run_id, distinctive, gone in ((ids["compare_ckpt"], "checkpoint-400", "lora-r16"),
                                              (ids["compare"], "lora-r16", "checkpoint-")):
                page.get_by_test_id("stSelectbox").filter(has_text="Compare run").click()
                page.get_by_role("option", name=run_id).click()
                expect(page.get_by_text("gate verdict:")).to_be_visible()
                expect(summary.locator("[data-testid^='glide-cell-0-']", has_text=distinctive).first).to_be_attached()
                candidates = " ".join(_column(summary, 0))
                assert gone not in candidates and distinctive in candidates
                # Every section has this run's results: none says it is empty.
                for empty in ("Nothing to show", "No subject-level results", "No perplexity results",
                              "No judge results"):
                    expect(page.get_by_text(empty)).to_have_count(0)
                page.screenshot(path=str(tmp_path / f"compare-{run_id}.png"), full_page=True)
            expect(page.get_by_role("heading", name="Checkpoint trend")).to_have_count(0)  # adapters: no trend
        finally:
            browser.close()
