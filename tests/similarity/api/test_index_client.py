"""GET /api/index/client/ and its model file: identity, spec, gated ONNX, ETags, access."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from lookalike_core.pixels import PixelPreprocessor, PixelSpec
from rest_framework.authtoken.models import Token

from demo.sample_images import product_image
from similarity.selectors.search import image_query_vector
from similarity.selectors.store import get_store
from similarity.services.builds.runs import index_build_run
from tests.similarity.api.test_search import lookalike
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db

URL = "/api/index/client/"
MODEL_URL = "/api/index/client/model.onnx"


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("staff", password="pw-staff-1", is_staff=True)


@pytest.fixture
def member(db):
    return get_user_model().objects.create_user("member", password="pw-member-1")


def test_classic_index_is_described_without_a_file(client, catalog, staff):
    client.force_authenticate(staff)
    response = client.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert body["kind"] == "classic" and body["file"] is None
    assert body["model"] == "classic" and body["model_identity"] == "classic@v2"
    assert body["dimension"] == 143 and body["preprocessing"] is None
    assert body["image_size"] == 128  # what the server decodes supplier photos down to
    assert body["duplicate_threshold"] == 0.05 and body["similar_threshold"] == 0.25
    # Conditional GET: the same ETag answers 304 with no body.
    etag = response["ETag"]
    again = client.get(URL, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    assert client.get(URL, HTTP_IF_NONE_MATCH='"other"').status_code == 200
    missing = client.get(MODEL_URL)
    assert missing.status_code == 409
    assert missing.json()["error"]["code"] == "client_model_unavailable"
    # The error stays JSON whatever the client accepts or asks with ?format= (never a 404).
    for query, accept in (("?format=onnx", "*/*"), ("?format=AAA", "*/*"),
                          ("", "application/octet-stream")):
        refused = client.get(MODEL_URL + query, HTTP_ACCEPT=accept)
        assert refused.status_code == 409, query
        assert refused["Content-Type"] == "application/json", query


def test_weights_are_staff_only_in_open_mode_and_any_token_in_token_mode(client, catalog,
                                                                          member):
    assert client.get(URL).status_code in (401, 403)
    client.force_authenticate(member)
    assert client.get(URL).status_code == 403
    client.force_authenticate(None)
    token = Token.objects.create(user=member)
    with lookalike(API_AUTH="token"):
        assert client.get(URL).status_code == 401
        assert client.get(URL, HTTP_AUTHORIZATION=f"Token {token}").status_code == 200


def test_no_index_answers_503(client, staff):
    client.force_authenticate(staff)
    assert client.get(URL).status_code == 503


def test_onnx_model_is_the_gated_export_and_gives_the_servers_vectors(client, staff,
                                                                      tiny_clip):
    import onnxruntime

    make_catalog(12)
    index_build_run(model=str(tiny_clip), progress=False)
    client.force_authenticate(staff)
    body = client.get(URL).json()
    assert body.get("kind") == "onnx", body
    assert body["file"]["runtime"] == "onnx"
    spec = PixelSpec.from_dict(body["preprocessing"])
    assert body["image_size"] == spec.image_size
    download = client.get(MODEL_URL, HTTP_ACCEPT="application/octet-stream")
    assert download.status_code == 200
    data = b"".join(download.streaming_content)
    assert hashlib.sha256(data).hexdigest() == body["file"]["sha256"]
    assert len(data) == body["file"]["size"]
    assert download["ETag"] == f'"{body["file"]["sha256"]}"'
    assert download["X-Model-Identity"] == body["model_identity"]
    cached = client.get(MODEL_URL, HTTP_IF_NONE_MATCH=download["ETag"])
    assert cached.status_code == 304
    # What a client computes with the published spec and file equals the server's vectors.
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    images = [product_image(seed, size=70).resize((70 + 9 * seed, 60)) for seed in range(4)]
    pixels = PixelPreprocessor(spec)(images)
    raw = session.run([body["file"]["output"]], {body["file"]["input"]: pixels})[0]
    mine = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    loaded = get_store().get()
    theirs = np.stack([image_query_vector(loaded, image) for image in images])
    assert (mine * theirs).sum(axis=1).min() >= 0.99999
