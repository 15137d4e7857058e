"""The dashboard in a real headless Chromium (tests/browser.py), served by a real uvicorn,
against a real Redis and supervisor: what a person sees and does. The overview follows a
running job's progress bar; a job page follows its log lines; retry from a failed job's
page runs it again; read-only offers no action; HTML in job data stays text and runs no
script. With SANDBOXRUNNER_SCREENSHOTS=docs the README's screenshots are taken here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.common.exceptions import (
    NoAlertPresentException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By

from sandboxrunner import JobFailed
from sandboxrunner.dashboard import asgi_app
from tests.browser import browser, screenshot  # noqa: F401 - the fixture
from tests.supervisors import client_for, make_config, running_supervisor, wait_for
from tests.webservers import serve_asgi

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def read_only_base(redis_url: str) -> Iterator[str]:
    app = asgi_app(config=make_config(redis_url), refresh_s=0.25)
    with serve_asgi(app) as base:
        yield base
    app.state.source.close()


@pytest.fixture
def actions_base(redis_url: str) -> Iterator[str]:
    app = asgi_app(False, config=make_config(redis_url), refresh_s=0.25)
    with serve_asgi(app) as base:
        yield base
    app.state.source.close()


def _progress(driver, job_id: str) -> float | None:
    """The running job's progress bar on the overview (read in one script call: the live
    fragment may be replaced between two WebDriver calls)."""
    value = driver.execute_script(
        "var bar = document.querySelector(arguments[0]); return bar && bar.value;",
        f'tr[data-job="{job_id}"] progress')
    return float(value) if value is not None else None


def _click(driver, element_id: str) -> bool:
    """Click ELEMENT_ID; False when the live fragment replaced it meanwhile (try again)."""
    try:
        driver.find_element(By.ID, element_id).click()
    except StaleElementReferenceException:
        return False
    return True


def _text(driver, element_id: str) -> str | None:
    """The text of element ELEMENT_ID now, read in one script call."""
    return driver.execute_script(
        "var el = document.getElementById(arguments[0]); return el && el.textContent;",
        element_id)


def _shows(driver, element_id: str, words: str) -> bool:
    """Whether element ELEMENT_ID holds WORDS now; False while a page is still loading."""
    try:
        return words in (_text(driver, element_id) or "")
    except WebDriverException:  # the script ran while the next page replaced this one
        return False


def test_the_overview_shows_live_supervisors_and_a_progress_bar_moving(
        redis_url: str, read_only_base: str, browser) -> None:  # noqa: F811
    with running_supervisor(redis_url, use_separate_process=True, concurrency=2), \
            client_for(redis_url) as client:
        job_id = client.enqueue("dash_steps", {"steps": 30, "pause_s": 0.15}).id
        browser.get(read_only_base + "/")
        first = wait_for(lambda: _progress(browser, job_id), what="a progress bar")
        # the page updates itself: no reload from here on
        later = wait_for(lambda: (p := _progress(browser, job_id)) and p > first + 0.1 and p,
                         timeout_s=15, what="the progress bar to move")
        assert later > first
        live = browser.find_elements(By.CSS_SELECTOR, 'tr.sup[data-state="live"]')
        assert live and browser.find_elements(By.CSS_SELECTOR, "tr.child")
        screenshot(browser, "dashboard-overview.png")


def test_a_job_page_shows_log_lines_appearing_while_it_runs(
        redis_url: str, read_only_base: str, browser) -> None:  # noqa: F811
    with running_supervisor(redis_url), client_for(redis_url) as client:
        job_id = client.enqueue("dash_steps", {"steps": 12, "pause_s": 0.25}).id
        wait_for(lambda: client.get_job(job_id).status == "active")
        browser.get(f"{read_only_base}/jobs/{job_id}")
        shown = len(browser.find_elements(By.CSS_SELECTOR, "#log tr"))
        assert shown < 12
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#log tr")) == 12,
                 timeout_s=20, what="all 12 log lines")
        wait_for(lambda: _text(browser, "status") == "completed",
                 timeout_s=10, what="the status to turn completed")
        lines = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#log td.msg")]
        assert lines == [f"step {i} of 12" for i in range(1, 13)]
        assert '"steps": 12' in _text(browser, "result")
        screenshot(browser, "dashboard-job.png")


def test_retry_from_a_failed_jobs_page_runs_it_again(
        redis_url: str, actions_base: str, browser) -> None:  # noqa: F811
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("fail", {"card": "0000"})
        with pytest.raises(JobFailed):
            handle.result(wait_timeout=10_000)
        browser.get(f"{actions_base}/jobs/{handle.id}")
        assert _text(browser, "status") == "failed"
        wait_for(lambda: _click(browser, "retry"), what="a click on Retry")
        # each click submits a form: the next page may not have loaded when click() returns
        wait_for(lambda: _shows(browser, "question", "again"),
                 what="the question whether to run it again")
        browser.find_element(By.ID, "confirm").click()
        wait_for(lambda: _shows(browser, "done", "retried"), what="the page saying it was retried")
        browser.find_element(By.ID, "back").click()
        # it ran again (and failed again, as this job always does): two attempts
        wait_for(lambda: client.get_job(handle.id).attempts == 2 and
                 client.get_job(handle.id).status == "failed", timeout_s=10,
                 what="the second run")
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#attempt-errors li"))
                 == 2, timeout_s=10, what="the page to show both attempts' errors")


def test_read_only_offers_no_action(redis_url: str, read_only_base: str,
                                    browser) -> None:  # noqa: F811
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("fail", {"card": "0000"})
        with pytest.raises(JobFailed):
            handle.result(wait_timeout=10_000)
    for path in (f"/jobs/{handle.id}", "/queues/default", "/"):
        browser.get(read_only_base + path)
        assert not browser.find_elements(By.CSS_SELECTOR, "form[method=post], button.action")
        assert browser.find_element(By.CSS_SELECTOR, "header .badge").text == "read-only"


def test_html_in_job_data_shows_as_text_and_runs_no_script(
        redis_url: str, read_only_base: str, browser) -> None:  # noqa: F811
    with running_supervisor(redis_url), client_for(redis_url) as client:
        job_id = client.enqueue("echo", XSS).id
        client.get_result(job_id, wait_timeout=10_000)
    browser.get(f"{read_only_base}/jobs/{job_id}")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#log tr"), what="the log")
    assert XSS in browser.find_element(By.ID, "data").text  # the literal text
    assert XSS in browser.find_element(By.ID, "log").text
    assert not browser.find_elements(By.CSS_SELECTOR, "main img")
    browser.get(read_only_base + "/")  # the log tail shows it too, and refreshes live
    wait_for(lambda: XSS in (_text(browser, "logs") or ""), what="the log tail")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - raises when no alert is open
