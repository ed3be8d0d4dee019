"""At most one queued rebuild: further API and admin requests join it and get its id."""

from __future__ import annotations

import pytest
from django.urls import reverse

from similarity.models import IndexBuild
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db


def test_rebuild_requests_while_one_is_queued_join_it(client, admin_user):
    client.force_authenticate(admin_user)
    first = client.post("/api/index/rebuild/", {"download": False}, format="json")
    assert first.status_code == 202
    assert first.json()["joined"] is False
    build_id = first.json()["id"]
    assert first.json()["detail"] == f"build #{build_id} queued"
    for _ in range(3):  # a client hammering the endpoint queues nothing more
        again = client.post("/api/index/rebuild/", {"full": True}, format="json")
        assert again.status_code == 202
        body = again.json()
        assert (body["id"], body["joined"], body["status"]) == (build_id, True, "queued")
        assert body["detail"].endswith(f"this request joined build #{build_id}")
        assert again["Location"].endswith(f"/api/index/builds/{build_id}/")
    build = IndexBuild.objects.get()
    assert build.full and build.download  # the widest options asked for


def test_the_admin_action_says_it_joined(admin_client):
    articles = make_catalog(2)
    url = reverse("admin:catalog_article_changelist")
    data = {"action": "rebuild_index", "_selected_action": [articles[0].pk]}
    admin_client.post(url, data, follow=True)
    response = admin_client.post(url, data, follow=True)
    build = IndexBuild.objects.get()
    message = [str(m) for m in response.context["messages"]][-1]
    assert message.startswith("A rebuild was already queued: your request joined index build")
    assert f"#{build.pk}</a>" in message
