"""End to end: `streamlit run app.py` on loopback, opened in headless Debian Chromium via Playwright (slow tier).

Screenshots go under the test's tmp_path; the per-prompt one is also copied to
/tmp/report-screenshot.png for a person to look at.
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


@pytest.fixture
def served(tmp_path: Path):
    """(url, run ids) of a streamlit server on a synthetic store with a 10,000-prompt judge run."""
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
            expect(page.get_by_text("6 of 6 runs")).to_be_visible()
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
