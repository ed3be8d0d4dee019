"""The supplier match review page in a real browser: supplier and catalog thumbnails load."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from similarity.models import MatchRun
from similarity.services.builds.runs import index_build_run
from similarity.services.matching.runs import match_run_create
from tests.similarity.helpers import make_catalog
from tests.similarity.services.matching.test_photos import near_copy, unrelated

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-test-password"
K = 3


def test_review_page_shows_supplier_photos_beside_their_matches(
    browser, live_server, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)
    articles = make_catalog(10, size=160)
    index_build_run(model="classic", progress=False)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("copy-4.jpg", near_copy(4))
        bundle.writestr("noise.jpg", unrelated(1))
    run = match_run_create(upload=SimpleUploadedFile("photos.zip", buffer.getvalue()), k=K)
    run.refresh_from_db()  # transaction=True: the task ran inline on commit
    assert run.status == MatchRun.Status.SUCCEEDED, run.error

    browser.get(live_server.url + reverse("admin:login"))
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "user-tools")))

    browser.get(live_server.url + reverse("admin:similarity_matchrun_review", args=[run.pk]))
    results = WebDriverWait(browser, 10).until(
        ec.presence_of_element_located((By.ID, "match-results")))
    WebDriverWait(browser, 10).until(
        lambda driver: driver.execute_script(
            "return [...document.querySelectorAll('#match-results img')].every(i => i.complete);"
        )
    )
    widths = browser.execute_script(
        "return [...document.querySelectorAll('#match-results img')].map(i => i.naturalWidth);")
    assert len(widths) == 2 * (1 + K)  # two supplier photos, K catalog matches each
    assert all(width > 0 for width in widths), widths
    supplier = browser.execute_script(
        "return [...document.querySelectorAll('img.supplier-photo')].map(i => i.naturalWidth);")
    assert len(supplier) == 2 and all(width > 0 for width in supplier)

    first = results.find_elements(By.CSS_SELECTOR, ".match-row")[0]
    assert "copy-4" in first.text and "same" in first.text
    link = first.find_elements(By.CSS_SELECTOR, "a.match-card")[0].get_attribute("href")
    assert link == live_server.url + reverse("admin:catalog_article_change",
                                             args=[articles[4].pk])

    screenshot = Path(os.environ.get("LOOKALIKE_SCREENSHOT_DIR") or tmp_path) / "review.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(browser.get_screenshot_as_png())

    browser.find_element(By.LINK_TEXT, "new").click()
    WebDriverWait(browser, 10).until(ec.url_contains("verdict=new"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#match-results .match-row")
    assert len(rows) == 1 and "noise" in rows[0].text
