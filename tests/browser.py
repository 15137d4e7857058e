"""A real headless Chromium driven by Selenium (Debian's chromium and chromium-driver), for
the dashboard tests: a fresh profile per test, never a shared one; the driver is always
quit. The tests run as root, hence --no-sandbox."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1000")
# Screenshots for the README are rewritten only when this is set, so a normal run leaves
# the tree clean: SANDBOXRUNNER_SCREENSHOTS=docs python -m pytest tests/test_dashboard_browser.py
SCREENSHOTS_ENV = "SANDBOXRUNNER_SCREENSHOTS"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: webdriver.Chrome, name: str) -> None:
    """Save the page as docs/NAME when SANDBOXRUNNER_SCREENSHOTS names the folder."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))
