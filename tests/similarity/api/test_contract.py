"""The API contract: schema pagination and error responses, JSON 404/500, access."""

from __future__ import annotations

import logging

import pytest
from django.test import Client
from drf_spectacular.generators import EndpointEnumerator, SchemaGenerator
from rest_framework.response import Response
from rest_framework.views import APIView

pytestmark = pytest.mark.django_db

ERROR_REF = "#/components/schemas/Error"


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def ok_schema(schema: dict, path: str, method: str = "get") -> dict:
    content = schema["paths"][path][method]["responses"]["200"]["content"]["application/json"]
    ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
    return schema["components"]["schemas"][ref]


@pytest.mark.parametrize("path", ["/api/articles/", "/api/duplicates/"])
def test_lists_are_declared_paginated_with_limit_and_offset(schema, path):
    page = ok_schema(schema, path)
    assert {"count", "next", "previous", "results"} <= set(page["properties"])
    assert page["properties"]["results"]["type"] == "array"
    names = {p["name"] for p in schema["paths"][path]["get"]["parameters"]}
    assert {"limit", "offset"} <= names


def test_duplicates_page_declares_its_extra_fields(schema):
    page = ok_schema(schema, "/api/duplicates/")
    assert {"threshold", "model", "index_build"} <= set(page["required"])


def declared_statuses(schema: dict) -> dict[tuple[str, str], tuple[int, ...]]:
    """(path, method) -> the statuses its view declares, for every operation in ``schema``."""
    declared = {}
    for path, _regex, method, callback in EndpointEnumerator().get_api_endpoints():
        view = callback.cls
        if method.lower() not in schema["paths"].get(path, {}):
            continue  # drf-spectacular's own schema and docs views
        assert method.lower() in getattr(view, "error_statuses", {}), (
            f"{view.__name__} does not declare the error statuses of {method} {path}")
        declared[(path, method.lower())] = view.error_statuses[method.lower()]
    return declared


def test_every_operation_declares_its_errors_with_the_error_body(schema):
    assert set(schema["components"]["schemas"]["Error"]["required"]) == {"error"}
    declared = declared_statuses(schema)
    seen = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            seen.add((path, method))
            codes = {int(code) for code in operation["responses"] if code.startswith(("4", "5"))}
            assert {401, 403, 405, 406, 414} <= codes, (path, method)
            assert set(declared[(path, method)]) <= codes, (path, method)
            for code in codes - {414}:  # 414: the HTTP server's own HTML page
                body = operation["responses"][str(code)]["content"]["application/json"]
                assert body["schema"]["$ref"] == ERROR_REF
    assert seen == set(declared)


class TeapotApi(APIView):
    """A new endpoint: its view declares its statuses, nothing central changes."""

    error_statuses = {"get": (418,)}

    def get(self, request):
        return Response({})


urlpatterns: list = []  # this module is the URLconf of the test below


def test_a_new_endpoint_declares_its_statuses_on_its_view():
    from django.urls import path

    urlpatterns[:] = [path("api/teapot/", TeapotApi.as_view())]
    try:
        schema = SchemaGenerator(urlconf=__name__).get_schema(request=None, public=True)
    finally:
        urlpatterns.clear()
    responses = schema["paths"]["/api/teapot/"]["get"]["responses"]
    assert {"401", "403", "405", "406", "414", "418"} <= set(responses)
    assert responses["418"]["content"]["application/json"]["schema"]["$ref"] == ERROR_REF


def test_unknown_api_path_answers_json_404(client):
    response = client.get("/api/nothing/here/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == {
        "code": "not_found", "message": "no API endpoint at /api/nothing/here/"}
    assert client.post("/api/index/builds/x/").json()["error"]["code"] == "not_found"


def test_known_endpoint_without_slash_still_redirects(client):
    response = client.get("/api/index", {"a": "1"})
    assert response.status_code == 301 and response["Location"] == "/api/index/?a=1"


def test_server_error_under_api_is_json_and_logged(settings, caplog):
    settings.ROOT_URLCONF = "tests.similarity.api.boom_urls"
    settings.DEBUG = False
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = client.get("/api/boom/")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    record = next(r for r in caplog.records if r.name == "django.request")
    assert record.levelno == logging.ERROR and "boom" in str(record.exc_info[1])


def test_server_errors_reach_stderr_with_debug_off(settings):
    handlers = settings.LOGGING["loggers"]["django.request"]["handlers"]
    assert handlers == ["console"]
    assert "filters" not in settings.LOGGING["handlers"]["console"]  # no require_debug_true


def test_duplicates_need_a_staff_user_even_in_open_mode(client, admin_client, django_user_model):
    assert client.get("/api/duplicates/").status_code in (401, 403)
    member = django_user_model.objects.create_user("member", password="pw-member-1")
    client.force_authenticate(member)
    assert client.get("/api/duplicates/").status_code == 403
    assert admin_client.get("/api/duplicates/").status_code == 503  # allowed; no index yet


def test_build_details_need_a_staff_user(client, admin_client):
    from similarity.models import IndexBuild

    build = IndexBuild.objects.create(model="classic", index_type="flat", error="secret trace")
    assert client.get(f"/api/index/builds/{build.pk}/").status_code in (401, 403)
    assert admin_client.get(f"/api/index/builds/{build.pk}/").json()["error"] == "secret trace"
