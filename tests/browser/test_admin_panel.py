"""The article change page in a real browser: the "Similar items" thumbnails load and link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from similarity.admin.articles import SIMILAR_K
from similarity.services.builds.runs import index_build_run
from tests.similarity.helpers import make_catalog

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-test-password"


@pytest.fixture
def superuser() -> object:
    return get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)


def test_similar_items_panel_in_the_browser(
    browser, live_server, settings, superuser, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    articles = make_catalog(15, size=160)
    index_build_run(model="classic", progress=False)
    article = articles[0]

    browser.get(live_server.url + reverse("admin:login"))
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "user-tools")))

    url = live_server.url + reverse("admin:catalog_article_change", args=[article.pk])
    browser.get(url)
    panel = WebDriverWait(browser, 10).until(
        ec.presence_of_element_located((By.ID, "similar-items"))
    )
    browser.execute_script("arguments[0].scrollIntoView();", panel)
    # Wait until every thumbnail has finished loading (or failed), then check none failed.
    WebDriverWait(browser, 10).until(
        lambda driver: driver.execute_script(
            "return [...document.querySelectorAll('#similar-items img')]"
            ".every(img => img.complete);"
        )
    )
    widths = browser.execute_script(
        "return [...document.querySelectorAll('#similar-items img')].map(img => img.naturalWidth);"
    )
    assert len(widths) == SIMILAR_K
    assert all(width > 0 for width in widths), widths

    links = [
        card.get_attribute("href")
        for card in panel.find_elements(By.CSS_SELECTOR, "a.similar-card")
    ]
    assert len(links) == SIMILAR_K
    expected = {
        live_server.url + reverse("admin:catalog_article_change", args=[a.pk])
        for a in articles[1:]
    }
    assert set(links) <= expected
    assert all("distance 0." in card.text or "distance 1." in card.text
               for card in panel.find_elements(By.CSS_SELECTOR, "a.similar-card"))

    screenshot = Path(os.environ.get("LOOKALIKE_SCREENSHOT_DIR") or tmp_path) / "panel.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(panel.screenshot_as_png)
    screenshot.with_name("page.png").write_bytes(browser.get_screenshot_as_png())

    # The links lead to the neighbor's own change page (with its own panel).
    panel.find_elements(By.CSS_SELECTOR, "a.similar-card")[0].click()
    WebDriverWait(browser, 10).until(ec.url_to_be(links[0]))
    assert browser.find_element(By.ID, "similar-items")
