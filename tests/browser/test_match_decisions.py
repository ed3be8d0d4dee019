"""Reviewing a supplier run in a real browser (1366x768): keys confirm, mark new, skip and move
between photos in place; the bulk confirmation of same verdicts; the CSV export downloads the
decisions. Screenshots go to LOOKALIKE_SCREENSHOT_DIR when set."""

from __future__ import annotations

import csv
import io
import os
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from lookalike_core.match_report import SAME

from similarity.models import MatchDecision, MatchRun
from similarity.services.builds.runs import index_build_run
from similarity.services.matching.runs import match_run_create
from tests.similarity.helpers import make_catalog
from tests.similarity.services.matching.test_photos import near_copy, unrelated

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-test-password"
WINDOW = (1366, 768)


def screenshot(browser, tmp_path: Path, name: str) -> None:
    path = Path(os.environ.get("LOOKALIKE_SCREENSHOT_DIR") or tmp_path) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(browser.get_screenshot_as_png())


def log_in(browser, live_server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    get_user_model().objects.create_superuser("buyer", "buyer@example.com", PASSWORD)
    browser.set_window_size(*WINDOW)
    browser.get(live_server.url + reverse("admin:login"))
    browser.find_element(By.NAME, "username").send_keys("buyer")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "user-tools")))


@pytest.fixture
def run() -> MatchRun:
    make_catalog(10, size=160)
    index_build_run(model="classic", progress=False)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for number in (2, 4, 6):
            bundle.writestr(f"copy-{number}.jpg", near_copy(number))
        bundle.writestr("noise.jpg", unrelated(1))
    created = match_run_create(upload=SimpleUploadedFile("photos.zip", buffer.getvalue()), k=3)
    created.refresh_from_db()  # transaction=True: the task ran inline on commit
    assert created.status == MatchRun.Status.SUCCEEDED, created.error
    return created


def decisions() -> dict[str, tuple[str, str]]:
    return {d.supplier_ref: (d.decision, d.article_id) for d in MatchDecision.objects.all()}


def test_keys_decide_in_place_and_the_export_holds_the_decisions(browser, live_server, run,
                                                                  tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    log_in(browser, live_server)
    browser.get(live_server.url + reverse("admin:similarity_matchrun_review", args=[run.pk]))
    wait = WebDriverWait(browser, 10)
    rows = browser.find_elements(By.CSS_SELECTOR, "#match-results .match-row")
    refs = [row.get_attribute("data-ref") for row in rows]
    assert refs == ["copy-2", "copy-4", "copy-6", "noise"]
    assert "current" in rows[0].get_attribute("class")

    def press(key: str) -> None:
        ActionChains(browser).send_keys(key).perform()

    def decided(index: int, name: str) -> None:
        wait.until(lambda _: rows[index].get_attribute("data-decision") == name)

    first_candidate = rows[0].find_element(By.CSS_SELECTOR, ".match-candidate").get_attribute(
        "data-article")
    press("1")  # copy-2 is its first candidate
    decided(0, "confirmed")
    wait.until(lambda _: "current" in rows[1].get_attribute("class"))  # moved on
    assert rows[0].find_element(By.CSS_SELECTOR, ".match-decision").text == (
        f"confirmed: {first_candidate}")
    press("s")  # copy-4 skipped
    decided(1, "skipped")
    press("j")  # past copy-6
    press("n")  # noise is new
    decided(3, "new")
    press("k")  # the last photo stays current after its decision: back to copy-6
    press("2")  # copy-6: its second candidate
    decided(2, "confirmed")
    assert browser.find_element(By.ID, "count-confirmed").text == "2"
    assert browser.find_element(By.ID, "count-undecided").text == "0"
    second = rows[2].find_elements(By.CSS_SELECTOR, ".match-candidate")[1]
    assert "chosen" in second.get_attribute("class")
    screenshot(browser, tmp_path, "review-decisions.png")

    assert decisions() == {
        "copy-2": ("confirmed", first_candidate), "copy-4": ("skipped", ""),
        "noise": ("new", ""), "copy-6": ("confirmed", second.get_attribute("data-article")),
    }
    assert {d.decided_by for d in MatchDecision.objects.all()} == {"buyer"}

    browser.refresh()  # kept when the page is opened again
    rows = browser.find_elements(By.CSS_SELECTOR, "#match-results .match-row")
    assert [row.get_attribute("data-decision") for row in rows] == [
        "confirmed", "skipped", "confirmed", "new"]

    href = browser.find_element(By.ID, "match-export").get_attribute("href")
    text = browser.execute_async_script(
        "fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text())"
        ".then(arguments[1]);", href)
    lines = list(csv.DictReader(io.StringIO(text)))
    assert {line["supplier_ref"]: line["review_decision"] for line in lines} == {
        "copy-2": "confirmed", "copy-4": "skipped", "copy-6": "confirmed", "noise": "new"}


def test_same_verdicts_are_confirmed_in_bulk_after_the_confirmation_step(
        browser, live_server, run, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    log_in(browser, live_server)
    browser.get(live_server.url + reverse("admin:similarity_matchrun_review", args=[run.pk]))
    browser.find_element(By.CSS_SELECTOR, '#match-results .match-row[data-ref="noise"] '
                                          'button.decide-new').click()  # a click decides too
    WebDriverWait(browser, 10).until(lambda _: decisions() == {"noise": ("new", "")})
    browser.find_element(By.ID, "confirm-same").click()
    count = WebDriverWait(browser, 10).until(
        ec.presence_of_element_located((By.ID, "pending-count")))
    same = run.same_count
    assert count.text == str(same) and same >= 3
    screenshot(browser, tmp_path, "review-confirm-same.png")
    assert len(decisions()) == 1  # the step records nothing
    browser.find_element(By.ID, "confirm-same-submit").click()
    WebDriverWait(browser, 10).until(ec.url_contains(f"verdict={SAME}"))
    assert "confirmed as their first match" in browser.find_element(
        By.CSS_SELECTOR, ".messagelist").text
    made = decisions()
    assert made["noise"] == ("new", "")
    assert sum(decision == "confirmed" for decision, _ in made.values()) == same
