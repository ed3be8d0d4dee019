"""Access edges found in review: schema/docs follow the auth mode, Django 404s keep their code."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from tests.similarity.api.test_search import lookalike

pytestmark = pytest.mark.django_db


def test_schema_and_docs_require_a_token_in_token_mode(client):
    with lookalike(API_AUTH="token"):
        for url in ("/api/schema/", "/api/docs/"):
            response = client.get(url)
            assert response.status_code == 401, url
    with lookalike(API_AUTH="open"):
        assert client.get("/api/schema/").status_code == 200


def test_unknown_build_is_not_found_with_its_code(client):
    staff = get_user_model().objects.create_user("boss", password="pw-boss-1", is_staff=True)
    client.force_authenticate(staff)
    response = client.get("/api/index/builds/999999/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_duplicate_review_page_needs_permission_and_has_no_edit_views(client):
    user = get_user_model().objects.create_user("clerk", password="pw-clerk-1", is_staff=True)
    client.force_login(user)
    url = reverse("admin:similarity_duplicategroupreview_changelist")
    assert client.get(url).status_code == 403
    user.user_permissions.add(
        Permission.objects.get(codename="view_duplicategroupreview")
    )
    assert client.get(url).status_code == 200
    assert client.get(url + "1/change/").status_code in (302, 404)  # no change view
