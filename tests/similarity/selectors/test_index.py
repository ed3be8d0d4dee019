"""The index as clients see it (selectors.index): what GET /api/index/ serializes."""

from __future__ import annotations

import pytest

from similarity.models import IndexBuild
from similarity.selectors.index import index_state
from similarity.services.builds.runs import index_build_run
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db


def test_before_any_build_nothing_is_current():
    state = index_state()
    assert state.current is None and state.latest_build is None


def test_the_served_build_is_described_with_its_model_and_preprocessing():
    make_catalog(4)
    build = index_build_run(model="classic", progress=False)
    state = index_state()
    current = state.current
    assert current is not None and state.latest_build == build
    assert (current.name, current.model, current.count) == (build.build_name, "classic", 4)
    assert current.model_identity == build.manifest["model_identity"]
    assert current.dimension == build.manifest["dimension"] and current.index_type == "flat"
    assert current.preprocessing is not None and not current.supports_text
    assert current.built_at  # the manifest's time
    IndexBuild.objects.create(model="classic", index_type="flat", status="failed")
    assert index_state().latest_build.status == "failed"  # the newest record, not the served
