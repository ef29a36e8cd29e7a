"""The dashboard in a real browser: Debian's chromium headless, driven by selenium and chromedriver.

Skipped, saying why, where chromium or chromedriver is missing (scripts/test installs them
when it runs as root). With HORIZOND_SCREENSHOTS=DIR the page tour saves a PNG of each page.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from rq import Queue

pytest.importorskip("flask")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")

from selenium.common.exceptions import (  # noqa: E402, I001
    NoSuchElementException, StaleElementReferenceException, WebDriverException)
from selenium.webdriver.common.by import By  # noqa: E402, I001
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from conftest import wait_until  # noqa: E402
from horizond.observe.snapshots import snapshot_key  # noqa: E402
from horizond.web import auth  # noqa: E402
from horizond.configfile import load  # noqa: E402
from webfixtures import PASSWORDS, SEED_LEVELS, WebProcess, fail_jobs, record_levels, write_config  # noqa: E402

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromium-driver are not installed "
                                "(apt-get install chromium chromium-driver; scripts/test does it as root)")


@pytest.fixture
def web(tmp_path, redis_url):
    process = WebProcess(write_config(tmp_path, redis_url))
    yield process
    process.stop()


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def log_in(browser, web, name: str, password: str | None = None) -> None:
    browser.get(f"{web.url}/login")
    browser.find_element(By.ID, "name").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(password or PASSWORDS[name])
    button = browser.find_element(By.ID, "login")
    button.click()
    WebDriverWait(browser, 10).until(lambda _: gone(button))  # the answer has loaded


def gone(element) -> bool:
    """The element's page was replaced. Chromium may say so with a stale-element error or, mid
    navigation, with "Node ... does not belong to the document": both mean the old page is gone."""
    try:
        element.is_enabled()
    except (StaleElementReferenceException, WebDriverException):
        return True
    return False


def text_of(browser, element_id: str) -> str:
    """The element's text once the page that has it has loaded (a submit may still be loading, and
    a progress page reloads itself: an element gone stale is looked up again)."""
    def read(_):
        try:
            return browser.find_element(By.ID, element_id).text or " "
        except (NoSuchElementException, StaleElementReferenceException):
            return False
    return WebDriverWait(browser, 15).until(read).strip()


def test_admin_logs_in_and_sees_the_queues(web, browser, redis):
    Queue("emails", connection=redis).enqueue("testjobs.record", "x")
    fail_jobs(redis, "reports", ["r1"])
    log_in(browser, web, "admin")
    wait_until(lambda: "Overview" in browser.title, what="the overview")
    browser.find_element(By.LINK_TEXT, "Queues").click()
    names = [row.find_elements(By.TAG_NAME, "td")[0].text
             for row in browser.find_elements(By.CSS_SELECTOR, "#queues tbody tr")]
    assert names == ["emails", "reports"]


def test_a_viewer_finds_no_arguments_on_a_failed_jobs_page(web, browser, redis):
    [job_id] = fail_jobs(redis, "emails", ["card-4111-1111"])
    log_in(browser, web, "viewer")
    wait_until(lambda: "Overview" in browser.title, what="the overview")
    browser.get(f"{web.url}/jobs/{job_id}")
    page = browser.page_source
    assert "RuntimeError" in page and "card-4111" not in page and not browser.find_elements(By.ID, "args")
    assert not browser.find_elements(By.ID, "retry")


def test_a_post_without_the_csrf_token_is_refused(web, browser, redis):
    [job_id] = fail_jobs(redis, "emails", ["x"])
    log_in(browser, web, "admin")
    wait_until(lambda: "Overview" in browser.title, what="the overview")
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('{web.url}/jobs/{job_id}/retry', {{method: 'POST', credentials: 'same-origin'}})"
        ".then(r => done(r.status));")
    assert status == 403
    assert redis.zscore("rq:failed:emails", job_id) is not None


def test_bulk_retry_of_a_filtered_set_requeues_exactly_that_set(web, browser, redis):
    alpha = fail_jobs(redis, "emails", [f"alpha-{i}" for i in range(30)]) + fail_jobs(redis, "sms", ["alpha-sms"])
    beta = fail_jobs(redis, "emails", [f"beta-{i}" for i in range(20)])
    log_in(browser, web, "admin")
    wait_until(lambda: "Overview" in browser.title, what="the overview")
    browser.get(f"{web.url}/failed?q=alpha")
    button = browser.find_element(By.ID, "bulk-retry")
    button.click()
    WebDriverWait(browser, 10).until(lambda _: gone(button))
    wait_until(lambda: text_of(browser, "bulk-state").startswith("done"), 20, what="the bulk retry")
    assert "31 requeued" in text_of(browser, "bulk-state")
    queued = {j.decode() for q in ("emails", "sms") for j in redis.lrange(f"rq:queue:{q}", 0, -1)}
    assert queued == set(alpha)
    still_failed = {j.decode() for j in redis.zrange("rq:failed:emails", 0, -1)}
    assert still_failed == set(beta)


def test_failed_logins_are_rate_limited(web, browser):
    for _ in range(auth.FAIL_LIMIT_USER):
        log_in(browser, web, "admin", "wrong-password")
        assert "wrong name or password" in text_of(browser, "login-error")
    log_in(browser, web, "admin")
    assert "too many failed logins" in text_of(browser, "login-error")


def test_page_tour_and_live_overview(start_daemon, browser, redis, redis_url, tmp_path):
    """Every page renders in the browser; the Overview's live figures follow Redis within seconds.
    A real master (a fleet node) runs two workers, one of them busy, for the Overview's nodes and
    supervisors and the Workers page."""
    daemon = start_daemon('[fleet]\nnode = "n1"\nheartbeat = 0.3\n[supervisors.webhooks]\nqueues = ["webhooks"]\n'
                          'min_processes = 2\nmax_processes = 2\n')
    daemon.wait_ready({"webhooks": 2})
    Queue("webhooks", connection=redis).enqueue("testjobs.block", 120, "tour")
    wait_until(lambda: redis.hexists("test:started", "tour"), 10, what="a worker to be busy")
    (tmp_path / "web").mkdir()
    config = write_config(tmp_path / "web", redis_url, extra=SEED_LEVELS)
    slos = load(str(config)).slos  # the masters' counts, written before the dashboard reads the window:
    record_levels(redis, slos, "default", ok=400, failed=3, latency=8.0, ago=1800)  # ok: 3 of 403 failed, 5% allowed
    record_levels(redis, slos, "emails", ok=90, failed=10, latency=45.0)  # violated: 90% good of 98%
    record_levels(redis, slos, "webhooks", ok=3000, failed=0, latency=0.8, ago=1500)  # a good history ...
    record_levels(redis, slos, "webhooks", ok=20, failed=6, latency=1.2)  # ... and a fast burn now
    web = WebProcess(config)
    try:
        _tour(web, browser, redis)
    finally:
        web.stop()


def _tour(web, browser, redis) -> None:
    for i, q in enumerate(("default", "emails", "reports")):
        for n in range(3 + 4 * i):
            Queue(q, connection=redis).enqueue("testjobs.record", f"{q}-{n}")
    failed = fail_jobs(redis, "emails", [f"customer-{i}" for i in range(6)])
    now = time.time()  # an hour of the master's snapshots, for the Metrics charts
    for minute in range(60, -1, -1):
        row = {"queue": "emails", "pending": 20 + minute % 7, "processes": 4, "processed": 3000 - 40 * minute,
               "failed": 60 - minute // 2, "jobs_per_minute": 40 + (minute * 7) % 13,
               "recent_runtime": 0.2 + minute % 5 / 10,
               "estimated_wait": 2 + minute % 9, "time": now - 60 * minute}
        redis.lpush(snapshot_key("horizond", "emails"), json.dumps(row))
    log_in(browser, web, "admin")
    wait_until(lambda: "Overview" in browser.title, what="the overview")
    fail_jobs(redis, "reports", ["late"])
    figure = lambda: browser.find_element(By.CSS_SELECTOR, '[data-k="failed_kept"]').text
    wait_until(lambda: figure() == "7", 10, what="the live figure to follow Redis")
    shots = os.environ.get("HORIZOND_SCREENSHOTS")
    for name, path in (("overview", "/"), ("slo", "/slo"), ("recent", "/jobs?state=pending"), ("failed", "/failed"),
                       ("job", f"/jobs/{failed[0]}"), ("metrics", "/metrics?queue=emails"), ("workers", "/workers"),
                       ("queues", "/queues")):
        browser.get(f"{web.url}{path}")
        assert "Error" not in browser.title, name
        if shots:  # the whole page (up to 2000 px tall), once the charts and live figures have drawn
            height = browser.execute_script("return document.documentElement.scrollHeight")
            browser.set_window_size(1280, min(2000, max(900, height + 90)))
            time.sleep(0.5)
            Path(shots).mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(Path(shots) / f"{name}.png"))
            browser.set_window_size(1280, 900)


def test_admin_pauses_a_supervisor_fleet_wide_from_the_overview(start_daemon, redis_url, browser, tmp_path):
    """The dashboard's actions are fleet commands: a click on Pause reaches the master, which
    `horizonctl status --fleet` then shows paused, and Continue undoes it."""
    from conftest import horizonctl
    daemon = start_daemon('[fleet]\nnode = "n1"\nheartbeat = 0.3\n[supervisors.alpha]\nqueues = ["qa"]\n')
    daemon.wait_ready({"alpha": 1})
    (tmp_path / "web").mkdir()
    web = WebProcess(write_config(tmp_path / "web", redis_url))
    try:
        log_in(browser, web, "admin")
        row = WebDriverWait(browser, 15).until(expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, '#supervisors tr[data-supervisor="alpha"]')))
        row.find_element(By.CSS_SELECTOR, 'button[value="pause"]').click()
        assert "pause alpha: sent to every node (n1)" in text_of(browser, "done")

        def alpha_paused() -> bool:
            view = json.loads(horizonctl("status", "--fleet", "--json", socket_path=daemon.socket).stdout)
            [node] = view["nodes"]
            return next(s for s in node["supervisors"] if s["name"] == "alpha")["state"] == "paused"
        wait_until(alpha_paused, timeout=5, what="alpha paused in status --fleet")
        browser.get(f"{web.url}/")
        row = WebDriverWait(browser, 15).until(expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, '#supervisors tr[data-supervisor="alpha"]')))
        wait_until(lambda: "n1" in browser.find_element(By.CSS_SELECTOR, '#supervisors tr[data-supervisor="alpha"] '
                                                                          '.paused-on').text or browser.refresh(),
                   timeout=10, what="the overview to show alpha paused on n1")
        alpha = '#supervisors tr[data-supervisor="alpha"]'
        browser.find_element(By.CSS_SELECTOR, f'{alpha} button[value="continue"]').click()
        text_of(browser, "done")
        wait_until(lambda: not alpha_paused(), timeout=5, what="alpha running again")
    finally:
        web.stop()


def test_service_levels_turn_violated_live_when_real_workers_fail_jobs(start_daemon, redis_url, redis, browser,
                                                                       tmp_path):
    """Real workers fail real jobs; the master counts them into the fleet-wide levels; the open
    Service levels page turns the queue red by itself (the snapshot it polls), no reload."""
    levels = "\n[slo.payments]\nthroughput = 60\nmax_latency = 30\nsuccess_rate = 99\n"
    daemon = start_daemon(levels + '[supervisors.alpha]\nqueues = ["payments"]\nmin_processes = 1\n'
                                   'max_processes = 1\n')
    daemon.wait_ready({"alpha": 1})
    (tmp_path / "web").mkdir()
    web = WebProcess(write_config(tmp_path / "web", redis_url, extra=levels))
    try:
        log_in(browser, web, "viewer")
        browser.get(f"{web.url}/slo")
        cells = lambda: browser.execute_script(  # the row as drawn now (read in one go: the page redraws it)
            "return Array.from(document.querySelectorAll('#slo tr[data-queue=\"payments\"] td'))"
            ".map(td => [td.innerText, td.className]);")
        state = lambda: cells()[1][0]
        assert state() == "no data"
        queue = Queue("payments", connection=redis)
        jobs = [queue.enqueue("testjobs.fail", f"p{i}") for i in range(3)]
        jobs += [queue.enqueue("testjobs.record", f"ok{i}") for i in range(7)]
        wait_until(lambda: all(j.get_status(refresh=True) in ("failed", "finished") for j in jobs), 20,
                   what="the jobs to end")
        # the master adds its counts every 2 s: the page may show the first few jobs before all 10
        row = wait_until(lambda: (r := cells())[3][0] == "10" and r, 15, what="the page to count all 10 jobs")
        assert (row[1], row[3][0], row[9][0]) == (["violated", "slo-red"], "10", "70 %")  # 7 of 10 succeeded
        assert browser.find_element(By.ID, "slo-verdict").text == "red"
    finally:
        web.stop()
