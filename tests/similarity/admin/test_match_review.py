"""The match run review page: decisions posted (forms and the page's script), their errors,
CSRF and permissions, counts on the list and the page, filters, export, bulk confirmation."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils.html import escape
from lookalike_core.match_report import SAME

from similarity.models import MatchDecision, MatchRun
from tests.similarity.services.matching.test_decisions import published_run

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}


@pytest.fixture
def run(tmp_path) -> MatchRun:
    return published_run(tmp_path)


def decide_url(run: MatchRun) -> str:
    return reverse("admin:similarity_matchrun_decide", args=[run.pk])


def review_url(run: MatchRun, query: str = "") -> str:
    return reverse("admin:similarity_matchrun_review", args=[run.pk]) + query


def test_the_page_offers_each_candidate_new_and_skip_with_their_keys(admin_client, run):
    page = admin_client.get(review_url(run)).content.decode()
    assert page.count('class="match-row"') == 5
    assert 'value="confirmed:A1"' in page and 'data-candidate="1"' in page
    assert 'value="new"' in page and 'value="skipped"' in page
    assert "match_review.js" in page and 'id="match-shortcuts"' in page
    assert 'id="count-undecided">5<' in page


def test_a_form_post_records_the_decision_and_returns_to_the_same_filtered_page(
        admin_client, run):
    response = admin_client.post(decide_url(run), {
        "supplier_ref": "alike", "choice": "confirmed:A3",
        "return_query": "verdict=similar&page=1"})
    assert response.status_code == 302
    assert response["Location"] == review_url(run, "?verdict=similar&page=1")
    made = MatchDecision.objects.get()
    assert (made.run, made.supplier_ref, made.article_id, made.decided_by) == (
        run, "alike", "A3", "admin")
    page = admin_client.get(response["Location"]).content.decode()
    assert "Alike: confirmed: A3" in page  # the message (capitalised by the admin)
    assert 'class="match-candidate chosen" data-article="A3"' in page
    assert 'id="count-confirmed">1<' in page


def test_the_script_gets_the_decision_and_the_counts_as_json(admin_client, run):
    response = admin_client.post(decide_url(run), {"supplier_ref": "nothing",
                                                   "choice": "new"}, **JSON)
    assert response.status_code == 200
    assert response.json() == {
        "supplier_ref": "nothing", "decision": "new", "article_id": "", "label": "new",
        "counts": {"confirmed": 0, "new": 1, "skipped": 0, "undecided": 4}}
    undone = admin_client.post(decide_url(run), {"supplier_ref": "nothing",
                                                 "choice": "undo"}, **JSON)
    assert undone.json()["label"] == "undecided" and not MatchDecision.objects.exists()


@pytest.mark.parametrize(("ref", "choice", "message"), [
    ("ghost", "new", "has no supplier photo 'ghost'"),
    ("alike", "confirmed:NOPE", "no catalog article has the id 'NOPE'"),
    ("alike", "maybe", "choice must be confirmed:<article id>, new, skipped or undo"),
    ("alike", "confirmed", "choice must be confirmed:<article id>"),
    ("alike", "undo", "has no decision to undo"),
])
def test_unknown_refs_articles_and_choices_are_refused_clearly(admin_client, run, ref, choice,
                                                               message):
    response = admin_client.post(decide_url(run), {"supplier_ref": ref, "choice": choice},
                                 **JSON)
    assert response.status_code == 400 and message in response.json()["error"]
    form = admin_client.post(decide_url(run), {"supplier_ref": ref, "choice": choice},
                             follow=True)
    assert escape(message).lower() in form.content.decode().lower()  # capitalised
    assert not MatchDecision.objects.exists()


def test_unknown_runs_get_404_and_get_is_refused(admin_client, run):
    missing = reverse("admin:similarity_matchrun_decide", args=[run.pk + 1])
    response = admin_client.post(missing, {"supplier_ref": "alike", "choice": "new"}, **JSON)
    assert response.status_code == 404
    assert response.json() == {"error": f"no match run #{run.pk + 1}"}
    assert admin_client.get(review_url(run).replace(str(run.pk), str(run.pk + 1))
                            ).status_code == 404
    assert admin_client.get(decide_url(run)).status_code == 405


def test_posts_need_the_csrf_token(run):
    get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client = Client(enforce_csrf_checks=True)
    client.login(username="boss", password="pw")
    refused = client.post(decide_url(run), {"supplier_ref": "alike", "choice": "new"})
    assert refused.status_code == 403
    token = client.get(review_url(run)).cookies["csrftoken"].value
    accepted = client.post(decide_url(run), {"supplier_ref": "alike", "choice": "new",
                                             "csrfmiddlewaretoken": token})
    assert accepted.status_code == 302 and MatchDecision.objects.count() == 1


def test_staff_who_may_only_view_runs_see_no_buttons_and_cannot_decide(client, run):
    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_matchrun"))
    client.login(username="viewer", password="pw")
    page = client.get(review_url(run)).content.decode()
    assert 'class="match-row"' in page and "decide-form" not in page
    assert client.post(decide_url(run), {"supplier_ref": "alike", "choice": "new"}
                       ).status_code == 403
    confirm = reverse("admin:similarity_matchrun_confirm_same", args=[run.pk])
    assert client.post(confirm).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="change_matchdecision"))
    client.login(username="viewer", password="pw")
    assert client.post(decide_url(run), {"supplier_ref": "alike", "choice": "new"}
                       ).status_code == 302


def test_non_staff_are_sent_to_the_login(client, run):
    get_user_model().objects.create_user("shopper", password="pw")
    client.login(username="shopper", password="pw")
    response = client.post(decide_url(run), {"supplier_ref": "alike", "choice": "new"})
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert not MatchDecision.objects.exists()


def test_same_verdicts_are_confirmed_after_a_confirmation_step(admin_client, run):
    confirm = reverse("admin:similarity_matchrun_confirm_same", args=[run.pk])
    admin_client.post(decide_url(run), {"supplier_ref": "same-2", "choice": "skipped"})
    step = admin_client.get(confirm).content.decode()
    assert 'id="pending-count">1<' in step and "same-1" in step and "1 same photo already" \
        in step.replace(SAME, "same")
    assert MatchDecision.objects.count() == 1  # the step records nothing
    done = admin_client.post(confirm, follow=True)
    assert "1 " + SAME + " photo confirmed as their first match" in done.content.decode()
    decided = dict(MatchDecision.objects.values_list("supplier_ref", "decision"))
    assert decided == {"same-1": "confirmed", "same-2": "skipped"}
    assert "nothing to confirm" in admin_client.get(confirm).content.decode()


def test_filters_by_decision_and_verdict_and_the_export_downloads_them(admin_client, run):
    admin_client.post(decide_url(run), {"supplier_ref": "same-1", "choice": "confirmed:A1"})
    page = admin_client.get(review_url(run, f"?verdict={SAME}&decision=undecided")).content
    assert page.decode().count('class="match-row"') == 1 and b"same-2" in page
    export = admin_client.get(review_url(run, "?decision=confirmed&export=csv"))
    assert export["Content-Disposition"] == (
        f'attachment; filename="match-run-{run.pk}-confirmed.csv"')
    lines = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert len(lines) == 2 and lines[1][0] == "same-1"
    assert lines[1][-4:-1] == ["confirmed", "A1", "admin"]


def test_the_run_list_counts_the_decisions(admin_client, run):
    admin_client.post(decide_url(run), {"supplier_ref": "same-1", "choice": "confirmed:A1"})
    admin_client.post(decide_url(run), {"supplier_ref": "nothing", "choice": "new"})
    page = admin_client.get(reverse("admin:similarity_matchrun_changelist")).content.decode()
    assert "Confirmed / new / skipped / undecided" in page and "1 / 1 / 0 / 3" in page
