"""Headless Chromium (Debian's chromium + chromium-driver) driven by Selenium, offline."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("LOOKALIKE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("LOOKALIKE_CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
)
MSG_MISSING = (
    "{path} is missing: browser tests need Debian's chromium and chromium-driver "
    "(`make test` installs them via scripts/ensure-chromium.sh; "
    "set LOOKALIKE_SKIP_BROWSER=1 to skip these tests locally)"
)


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A fresh headless Chromium with its own profile; never lets Selenium Manager download."""
    if os.environ.get("LOOKALIKE_SKIP_BROWSER") == "1":
        pytest.skip("LOOKALIKE_SKIP_BROWSER=1")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            pytest.fail(MSG_MISSING.format(path=path), pytrace=False)
    monkeypatch.setenv("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
