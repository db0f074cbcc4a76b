"""`harness report` as a person (or a script) starts it: no terminal, no prompt, a URL printed, the Runs view
in a real browser, and SIGTERM leaving nothing listening (slow tier: streamlit and Chromium)."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.synthetic import build_store
from tests.test_app_browser_slow import CHROMIUM, CHROMIUM_ARGS, START_TIMEOUT_S, free_port

REPO = Path(__file__).resolve().parent.parent


def _is_listening(port: int) -> bool:
    """Whether something accepts connections on the port (TIME_WAIT leftovers of the browser do not count)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return False
    return True


@pytest.mark.timeout(300)
def test_report_without_a_terminal_serves_the_runs_view_and_sigterm_frees_the_port(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing; scripts/setup.sh installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    runs_dir = tmp_path / "runs"
    n_runs = len(build_store(runs_dir, n_large=200))  # every run the synthetic store holds is listed
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    # No --headless: a fresh machine with no terminal and no display must neither prompt nor exit.
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "report", "--port", str(port)], cwd=REPO,
                            env={**env, "HARNESS_RUNS_DIR": str(runs_dir), "HOME": str(tmp_path / "home")},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        first = proc.stdout.readline()
        found = re.search(r"report on (http://\S+)", first)
        assert found, first
        url = found.group(1)
        deadline = time.time() + START_TIMEOUT_S
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            assert proc.poll() is None, f"harness report exited {proc.returncode}: {proc.stdout.read()[-2000:]}"
            assert time.time() < deadline, "streamlit did not start"
            time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)
                page.goto(url)
                expect(page.get_by_text(re.compile(rf"of {n_runs} runs"))).to_be_visible()
                page.screenshot(path=str(tmp_path / "runs.png"))
            finally:
                browser.close()
        assert _is_listening(port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        out = proc.stdout.read()
        assert "Email" not in out and "email" not in out  # Streamlit's onboarding prompt never appeared
        assert not _is_listening(port)
        with pytest.raises(ProcessLookupError):  # the streamlit child went with it: the session is empty
            os.killpg(proc.pid, 0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
