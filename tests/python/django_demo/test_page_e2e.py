"""examples/django-demo's async page end to end, in headless Chromium.

A user's path through the page, with nothing stubbed: Debian's Chromium
(driven by Debian's chromedriver through Selenium) loads the page from
`manage.py runserver`, three integers are typed into the form and submitted
with the button, and the page's own JavaScript posts them and polls
`/status/` every second until each row shows its doubled result. The tasks
are run by two rmulti nodes, `worker1` (the `demo_node` fixture) and
`worker2` (started here the same way), on the fixtures' private Redis.

bin/setup installs chromium and chromium-driver; /tmp/e2e.png is a
screenshot of the page as the test left it (pass or fail).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from demo_helpers import DEMO, alive, demo_worker, free_port, tree, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Flags from the machine notes: without the background-networking ones,
# Chromium keeps trying (and failing) to reach Google's hosts.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,600",
]
SCREENSHOT = Path("/tmp/e2e.png")
NUMBERS = (7, 21, 1000)
# Each task waits DEMO_COUNTDOWN (0.5 s) and works DEMO_WORK_SECONDS (0.5 s);
# the page polls every second.
DEADLINE = 20


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, the process group `proc` leads."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def worker2(demo_node, demo_env):
    """A second node beside `demo_node`'s worker1, started and stopped as
    that fixture does, with its pidfile and logs in the same directory."""
    with demo_worker("worker2", demo_node, dict(os.environ, **demo_env)):
        yield demo_node


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def site(demo_env, demo_tmp):
    """`manage.py migrate`, then `manage.py runserver` on a free port of
    127.0.0.1, with the project's settings pointed at the fixtures' Redis and
    database. Yields (base URL, log path).

    The migration is the server's own: `django_project` migrates whatever
    database Django was first set up with in this process, which is another
    module's when the whole directory runs (pytest keeps one instance of an
    imported session fixture per importing module)."""
    log_path = demo_tmp / "runserver.log"
    env = dict(os.environ, **demo_env, PYTHONUNBUFFERED="1")
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=DEMO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert migrate.returncode == 0, f"migrate failed:\n{migrate.stdout}{migrate.stderr}"
    for _ in range(3):  # a free port can be taken before the server binds it
        port = free_port()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                cwd=DEMO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        wait_until(20, lambda: proc.poll() is not None or _http_ok(url + "/"), interval=0.1)
        if proc.poll() is None:
            break
    else:
        pytest.fail(f"runserver did not start:\n{log_path.read_text(errors='replace')}")
    try:
        yield url, log_path
    finally:
        _stop(proc)


@pytest.fixture
def browser():
    """Headless Chromium through chromedriver (both Debian's: Selenium is
    given their paths, so it never looks for or downloads its own)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: bin/setup installs chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="rmulti-e2e-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=subprocess.DEVNULL)
    driver = None
    try:
        driver = webdriver.Chrome(options=options, service=service)
        driver.set_page_load_timeout(20)
        yield driver
    finally:
        # quit() ends Chromium and stops chromedriver; if it fails, kill what is left.
        driver_pid = service.process.pid if service.process else None
        browsers = tree(driver_pid)[1:] if driver_pid else []
        try:
            if driver is not None:
                driver.quit()
        finally:
            service.stop()
            for p in browsers:
                if alive(p):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
            shutil.rmtree(profile, ignore_errors=True)


# One round trip for the whole table: what a user sees in each row.
READ_ROWS = """
return Array.from(document.querySelectorAll('#results tbody tr')).map((row) => {
  const text = (name) => row.querySelector('.' + name).innerText;
  const box = row.getBoundingClientRect();
  return {
    task: text('task'), number: text('number'), status: text('status'), event: text('event'),
    processing: text('processing'), finish: text('finish'), result: text('result'),
    done: row.classList.contains('done'), visible: box.width > 0 && box.height > 0,
  };
});
"""


def test_three_integers_through_the_page(site, worker2, browser):
    from selenium.webdriver.common.by import By

    url, server_log = site
    browser.get(url + "/")
    assert "Double an integer" in browser.find_element(By.TAG_NAME, "h1").text
    try:
        for i, n in enumerate(NUMBERS, 1):
            box = browser.find_element(By.ID, "number")
            box.send_keys(str(n))
            browser.find_element(By.ID, "submit").click()
            # Each submission gets its row (with its task id) before the next.
            assert wait_until(10, lambda: len(browser.execute_script(READ_ROWS)) == i, interval=0.1), (
                f"no row for {n}: {browser.execute_script(READ_ROWS)}\n{server_log.read_text(errors='replace')}"
            )
            assert box.get_attribute("value") == ""

        rows = wait_until(
            DEADLINE,
            lambda: (lambda rs: rs if len(rs) == 3 and all(r["done"] for r in rs) else None)(
                browser.execute_script(READ_ROWS)
            ),
            interval=0.2,
        )
        assert rows, f"rows not done within {DEADLINE}s: {browser.execute_script(READ_ROWS)}"
    finally:
        browser.save_screenshot(str(SCREENSHOT))

    for row, n in zip(rows, NUMBERS):
        assert row["visible"], row
        assert row["number"] == str(n), row
        assert row["status"] == "SUCCESS", row
        assert row["result"] == str(2 * n), row
        # The browser's submission time and the task's own times, in UTC+8 as the task returns them.
        for key in ("event", "processing", "finish"):
            assert row[key].endswith("+08:00"), row
        event, processing, finish = (datetime.fromisoformat(row[k]) for k in ("event", "processing", "finish"))
        assert event - timedelta(seconds=1) <= processing <= finish, row
    task_ids = [row["task"] for row in rows]
    assert len(set(task_ids)) == 3 and all(re.fullmatch(r"[0-9a-f-]{36}", t) for t in task_ids), task_ids

    # Run by rmulti's pool children: each task's success line (its result's
    # repr, as Celery logs it) is in the log of a child of one of the two
    # nodes (worker1-N.log, worker2-N.log).
    def child_lines():
        found = {t: [] for t in task_ids}
        for log in sorted(worker2.glob("worker[12]-*.log")):
            for line in log.read_text(errors="replace").splitlines():
                for t in task_ids:
                    if f"demo.tasks.double_a_integer[{t}] succeeded" in line:
                        found[t].append((log.name, line))
        return found

    found = wait_until(5, lambda: (lambda f: f if all(f.values()) else None)(child_lines()))
    assert found, child_lines()
    for lines, n in zip(found.values(), NUMBERS):
        assert len(lines) == 1, lines
        _log, line = lines[0]
        assert "/ForkPoolWorker-" in line and line.rstrip().endswith(f", {2 * n})"), line
    print("ran in", {t: lines[0][0] for t, lines in found.items()})
    assert "Traceback" not in server_log.read_text(errors="replace")
