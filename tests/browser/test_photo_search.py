"""Search by photo in a real browser (1366x768): upload a supplier-like photo, see its article
first with the verdict, the searched photo and every candidate's thumbnail."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse
from lookalike_core.match_report import SAME

from similarity.services.builds.runs import index_build_run
from tests.browser.test_match_decisions import log_in, screenshot
from tests.similarity.helpers import make_catalog
from tests.similarity.services.matching.test_photos import near_copy

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
K = 5


def test_an_uploaded_photo_shows_its_ranked_candidates(browser, live_server,
                                                      tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    articles = make_catalog(10, size=160)
    index_build_run(model="classic", progress=False)
    photo = tmp_path / "supplier-photo.jpg"
    photo.write_bytes(near_copy(7))

    log_in(browser, live_server)
    browser.get(live_server.url + reverse("admin:index"))
    browser.find_element(By.LINK_TEXT, "Search by photo").click()
    browser.find_element(By.NAME, "image").send_keys(str(photo))
    field = browser.find_element(By.NAME, "k")
    field.clear()
    field.send_keys(str(K))
    browser.find_element(By.ID, "search-submit").click()
    results = WebDriverWait(browser, 10).until(
        ec.presence_of_element_located((By.ID, "search-results")))
    WebDriverWait(browser, 10).until(lambda driver: driver.execute_script(
        "return [...document.querySelectorAll('#content-main img')].every(i => i.complete);"))
    cards = results.find_elements(By.CSS_SELECTOR, ".search-candidate")
    assert len(cards) == K
    assert cards[0].get_attribute("data-article") == articles[7].article_id
    assert browser.find_element(By.ID, "search-verdict").text == SAME
    widths = browser.execute_script(
        "return [...document.querySelectorAll('#content-main img')].map(i => i.naturalWidth);")
    assert len(widths) == 1 + K and all(width > 0 for width in widths), widths
    assert "distance" in cards[0].text
    browser.execute_script("arguments[0].scrollIntoView();",
                           browser.find_element(By.ID, "search-summary"))
    screenshot(browser, tmp_path, "photo-search.png")

    browser.find_element(By.NAME, "image_url").send_keys("http://127.0.0.1:9/x.jpg")
    browser.find_element(By.ID, "search-submit").click()  # no file this time: the URL alone
    error = WebDriverWait(browser, 10).until(
        ec.presence_of_element_located((By.ID, "search-error")))
    assert "refused" in error.text  # loopback: private addresses are refused by default
