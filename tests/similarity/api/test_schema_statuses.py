"""Statuses every operation can answer are declared in the schema, and answered as JSON."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def schema(client) -> dict:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_every_operation_declares_405_and_406(client):
    for path, operations in schema(client)["paths"].items():
        for method, operation in operations.items():
            assert {"405", "406"} <= set(operation["responses"]), (method, path)


def test_405_and_406_are_answered_in_the_error_shape(client):
    response = client.delete("/api/index/")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    response = client.get("/api/index/", HTTP_ACCEPT="application/xml")
    assert response.status_code == 406
    assert response.json()["error"]["code"] == "not_acceptable"


def test_k_declares_the_bounds_the_views_enforce(client):
    from tests.similarity.api.test_search import lookalike

    with lookalike(MAX_K=7):
        body = schema(client)
    declared = [
        parameter["schema"]
        for operations in body["paths"].values()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "k"
    ]
    declared += [
        component["properties"]["k"]
        for component in body["components"]["schemas"].values()
        if "k" in component.get("properties", {})
    ]
    assert len(declared) >= 3
    for k in declared:
        assert (k["minimum"], k["maximum"]) == (1, 7), k
