"""Index state and rebuilds, access modes, upload throttling, the OpenAPI schema and docs."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import override_settings
from rest_framework.authtoken.models import Token

from similarity.models import IndexBuild
from tests.similarity.api.test_search import lookalike, upload
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("staff", password="pw-staff-1", is_staff=True)


@pytest.fixture
def member(db):
    return get_user_model().objects.create_user("member", password="pw-member-1")


def test_index_before_any_build(client, db):
    body = client.get("/api/index/").json()
    assert body == {"current": None, "latest_build": None}


def test_index_describes_the_current_build(client, catalog, django_assert_max_num_queries):
    with django_assert_max_num_queries(2):
        body = client.get("/api/index/").json()
    current = body["current"]
    assert current["model"] == "classic" and current["count"] == 15
    assert current["index_type"] == "flat" and current["factory"] == "IDMap2,Flat"
    assert current["name"] and current["built_at"] and current["supports_text"] is False
    latest = body["latest_build"]
    assert latest["status"] == "succeeded" and latest["article_count"] == 15
    assert latest["build_name"] == current["name"]


@pytest.mark.parametrize("who", ["anonymous", "member"])
def test_rebuild_is_staff_only(client, member, who):
    if who == "member":
        client.force_authenticate(member)
    response = client.post("/api/index/rebuild/")
    assert response.status_code == (401 if who == "anonymous" else 403)
    assert response.json()["error"]["code"] in {"not_authenticated", "permission_denied"}
    assert not IndexBuild.objects.exists()


def test_staff_rebuild_is_queued_and_runs(
    client, staff, django_capture_on_commit_callbacks, settings
):
    make_catalog(4)
    settings.LOOKALIKE = {**settings.LOOKALIKE, "MODEL": "classic"}
    client.force_authenticate(staff)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post("/api/index/rebuild/", {"download": False}, format="json")
    assert response.status_code == 202
    body = response.json()
    build = IndexBuild.objects.get()
    assert body["id"] == build.pk and body["status"] == "queued"
    assert response["Location"] == body["status_url"]
    assert body["status_url"].endswith(f"/api/index/builds/{build.pk}/")
    assert len(callbacks) == 1  # the task ran inline (Q_CLUSTER sync in tests)
    build.refresh_from_db()
    assert build.trigger == "api" and build.status == "succeeded" and build.article_count == 4
    status = client.get(body["status_url"]).json()
    assert status["status"] == "succeeded" and status["id"] == build.pk
    assert client.get("/api/articles/S0001/similar/?k=2").status_code == 200
    assert client.get("/api/index/builds/999999999/").status_code == 404


def test_token_mode_requires_a_token_or_session(client, catalog, member):
    with lookalike(API_AUTH="token"):
        for url in ("/api/articles/", "/api/articles/S0000/similar/", "/api/index/"):
            response = client.get(url)
            assert response.status_code == 401, url
            assert response.json()["error"]["code"] == "not_authenticated"
        token = Token.objects.create(user=member)
        response = client.get("/api/articles/S0000/similar/", HTTP_AUTHORIZATION=f"Token {token}")
        assert response.status_code == 200
        bad = client.get("/api/articles/", HTTP_AUTHORIZATION="Token nope")
        assert bad.status_code == 401
        client.login(username="member", password="pw-member-1")
        assert client.get("/api/articles/").status_code == 200


def test_bad_api_auth_setting_is_reported(client, db):
    from django.core.exceptions import ImproperlyConfigured

    with lookalike(API_AUTH="sometimes"), pytest.raises(ImproperlyConfigured, match="sometimes"):
        client.get("/api/articles/")


def test_uploads_are_throttled(client, catalog, photo_png):
    with lookalike(UPLOAD_THROTTLE="2/min"):
        assert upload(client, photo_png).status_code == 200
        assert upload(client, photo_png).status_code == 200
        response = upload(client, photo_png)
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "throttled"
        assert "Retry-After" in response
        # Reads are not throttled.
        assert client.get("/api/articles/S0000/similar/").status_code == 200
    with lookalike(UPLOAD_THROTTLE=""):
        assert upload(client, photo_png).status_code == 200


def test_openapi_schema_validates(client, tmp_path, db):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    schema = target.read_text()
    for path in (
        "/api/articles/{article_id}/similar/:",
        "/api/similar/:",
        "/api/index/rebuild/:",
    ):
        assert path in schema
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200 and response.json()["info"]["title"] == "Lookalike API"


@override_settings(DEBUG=False)
def test_docs_page_uses_local_assets(client, db):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui-dist/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
    asset = html.split('src="')[1].split('"')[0]
    static = client.get(asset)
    assert static.status_code == 200, asset
    b"".join(static.streaming_content if static.streaming else [static.content])


def test_browsable_api_renders(client, catalog):
    response = client.get("/api/articles/S0000/similar/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and b"S0000" in response.content
    bad = client.get("/api/articles/NOPE/similar/", HTTP_ACCEPT="text/html")
    assert bad.status_code == 404


def test_errors_are_json_for_wrong_methods_and_media(client, catalog):
    response = client.delete("/api/articles/S0000/")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    response = client.post("/api/similar/", io.BytesIO(b"{}").read(), content_type="text/plain")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_index_state_hides_build_errors_from_anonymous_clients(client, admin_client, db):
    from similarity.api.index import MSG_ERROR_FOR_STAFF

    IndexBuild.objects.create(
        status=IndexBuild.Status.FAILED, model="/srv/secret/models/clip",
        error="Cannot load embedding model '/srv/secret/models/clip': directory does not exist",
    )
    public = client.get("/api/index/").json()["latest_build"]
    assert public["error"] == MSG_ERROR_FOR_STAFF and "secret" not in public["error"]
    staff = admin_client.get("/api/index/").json()["latest_build"]
    assert "/srv/secret/models/clip" in staff["error"]
