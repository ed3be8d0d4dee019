"""Requests Django refuses before or while parsing answer the API's JSON error under /api/."""

from __future__ import annotations

import io

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def assert_api_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content[:200]
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == code


def test_disallowed_host_under_api_is_json(client):
    response = client.get("/api/articles/", HTTP_HOST="evil.example")
    assert_api_error(response, 400, "disallowed_host")
    assert "evil.example" not in response.content.decode()
    # Elsewhere Django's own page stays.
    page = client.get("/admin/login/", HTTP_HOST="evil.example")
    assert page.status_code == 400 and page["Content-Type"].startswith("text/html")


def too_many_fields() -> dict[str, str]:
    return {f"f{n}": "x" for n in range(1001)}  # DATA_UPLOAD_MAX_NUMBER_FIELDS is 1000


def image() -> io.BytesIO:
    file = io.BytesIO(b"\x89PNG")
    file.name = "q.png"
    return file


def test_upload_with_too_many_fields_is_a_json_400(client, catalog):
    response = client.post("/api/similar/", {"image": image(), **too_many_fields()},
                           format="multipart")
    assert_api_error(response, 400, "too_many_fields")


def test_upload_with_too_many_files_is_a_json_400(client, catalog):
    files = {}
    for n in range(101):  # DATA_UPLOAD_MAX_NUMBER_FILES is 100
        files[f"file{n}"] = image()
    response = client.post("/api/similar/", {"image": image(), **files}, format="multipart")
    assert_api_error(response, 400, "too_many_files")


def test_upload_with_a_field_over_the_memory_limit_is_a_json_413(client, catalog, settings):
    text = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = client.post("/api/similar/", {"image": image(), "category": text},
                           format="multipart")
    assert_api_error(response, 413, "request_too_large")


@pytest.fixture
def plain_views(settings):
    settings.ROOT_URLCONF = "tests.similarity.api.refusal_urls"


def test_plain_django_views_under_api_answer_json_too(plain_views):
    client = Client(raise_request_exception=False)
    assert_api_error(client.get("/api/forbidden/"), 403, "permission_denied")
    assert_api_error(client.post("/api/plain-form/", too_many_fields()), 400, "too_many_fields")
    page = client.post("/plain-form/", too_many_fields())
    assert page.status_code == 400 and page["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/api/similar/", "/api/similar/batch/"])
@pytest.mark.parametrize("depth", [100_000, 40])
def test_deeply_nested_json_is_a_json_400(client, path, depth):
    # Past the interpreter's recursion limit json raises RecursionError (a 500 before the
    # depth limit); 40 levels parse but are refused all the same.
    body = "[" * depth + "]" * depth
    response = client.post(path, body, content_type="application/json")
    assert_api_error(response, 400, "parse_error")
    assert "nested deeper than 32 levels" in response.json()["error"]["message"]


def test_json_nested_to_the_limit_still_parses():
    from similarity.api.parsers import MAX_JSON_DEPTH, json_depth_exceeds

    nested: object = 1.0
    for _ in range(MAX_JSON_DEPTH):
        nested = [nested]
    assert not json_depth_exceeds(nested, MAX_JSON_DEPTH)
    assert json_depth_exceeds([nested], MAX_JSON_DEPTH)
    assert not json_depth_exceeds({"items": [{"vector": [0.5] * 512}]}, MAX_JSON_DEPTH)
