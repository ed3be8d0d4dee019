"""Client identity for the upload throttle: X-Forwarded-For is trusted only behind proxies."""

from __future__ import annotations

import io

import pytest
from django.conf import settings
from django.test import override_settings

from tests.similarity.api.test_search import lookalike

pytestmark = pytest.mark.django_db


def upload(client, data: bytes, forwarded_for: str):
    file = io.BytesIO(data)
    file.name = "query.png"
    return client.post(
        "/api/similar/", {"image": file}, format="multipart", HTTP_X_FORWARDED_FOR=forwarded_for
    )


def test_forwarded_for_does_not_escape_the_throttle_by_default(client, catalog, photo_png):
    assert settings.REST_FRAMEWORK["NUM_PROXIES"] == 0
    with lookalike(UPLOAD_THROTTLE="2/min"):
        statuses = [
            upload(client, photo_png, f"198.51.100.{n}").status_code
            for n in range(3)
        ]
    assert statuses == [200, 200, 429]


def test_one_proxy_trusts_the_address_it_appended(client, catalog, photo_png):
    rest = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    with override_settings(REST_FRAMEWORK=rest), lookalike(UPLOAD_THROTTLE="1/min"):
        # Two clients behind the proxy: each has its own budget.
        first = upload(client, photo_png, "198.51.100.1")
        second = upload(client, photo_png, "198.51.100.2")
        assert (first.status_code, second.status_code) == (200, 200)
        # A forged left-hand entry does not help: the proxy's own (rightmost) entry counts.
        forged = upload(client, photo_png, "10.9.9.9, 198.51.100.1")
        assert forged.status_code == 429
