"""Sticky model: rebuilds keep the current index's model unless LOOKALIKE_MODEL is set."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from rest_framework.test import APIClient

from similarity.conf import SIMILARITY_KEYS, similarity_settings
from similarity.models import IndexBuild
from similarity.services.builds.model_choice import build_model_choose
from similarity.services.builds.queue import index_build_enqueue
from similarity.services.builds.runs import index_build_run
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db
Source = IndexBuild.ModelSource


@pytest.fixture
def no_model_setting(settings):
    settings.LOOKALIKE = {k: v for k, v in settings.LOOKALIKE.items() if k != "MODEL"}


def test_settings_hold_model_only_when_the_environment_sets_it(tmp_path):
    code = "from django.conf import settings; print('MODEL' in settings.LOOKALIKE)"
    env = {k: v for k, v in os.environ.items() if k != "LOOKALIKE_MODEL"}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", LOOKALIKE_DATA_DIR=str(tmp_path))
    run = [sys.executable, "-c", f"import django; django.setup(); {code}"]
    cwd = django_settings.BASE_DIR
    unset = subprocess.run(run, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    assert unset.stdout.strip() == "False"
    env["LOOKALIKE_MODEL"] = "classic"
    explicit = subprocess.run(run, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    assert explicit.stdout.strip() == "True"


def test_the_choice_and_its_reason(settings, no_model_setting):
    conf = similarity_settings()
    assert (conf.model, conf.model_explicit) == (SIMILARITY_KEYS["MODEL"].default, False)
    assert build_model_choose(requested=None) == (SIMILARITY_KEYS["MODEL"].default, Source.DEFAULT)
    assert build_model_choose(requested="classic") == ("classic", Source.EXPLICIT)
    make_catalog(3)
    index_build_run(model="classic", progress=False)
    assert build_model_choose(requested=None) == ("classic", Source.CURRENT)
    settings.LOOKALIKE = {**settings.LOOKALIKE, "MODEL": "clip-ViT-B-32"}
    assert similarity_settings().model_explicit
    assert build_model_choose(requested=None) == ("clip-ViT-B-32", Source.SETTING)


def test_rebuilds_from_api_admin_tasks_and_the_shell_keep_the_current_model(
    no_model_setting, admin_user, django_capture_on_commit_callbacks
):
    make_catalog(4)
    first = index_build_run(model="classic", progress=False)  # e.g. the demo's fallback
    assert first.model_source == Source.EXPLICIT

    client = APIClient()
    client.force_authenticate(admin_user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/index/rebuild/", {"download": False}, format="json")
    api_build = IndexBuild.objects.get(pk=response.json()["id"])
    assert (api_build.model, api_build.model_source) == ("classic", Source.CURRENT)
    assert api_build.status == IndexBuild.Status.UNCHANGED, api_build.error  # not CLIP again

    out = StringIO()
    call_command("build_index", "--no-progress", stdout=out)
    assert "(model classic: current index)" in out.getvalue()
    shell = IndexBuild.objects.first()
    assert (shell.model, shell.model_source, shell.trigger) == ("classic", "current index", "shell")

    queued = index_build_enqueue(trigger="admin").build  # not run: only its record
    assert (queued.model, queued.model_source) == ("classic", Source.CURRENT)


def test_a_default_build_falls_back_loudly_and_rebuilds_keep_the_fallback(
    no_model_setting, monkeypatch
):
    """CLIP weights are not on this machine: the default falls back to efficientnet-lite0."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_catalog(4)
    first = index_build_run(progress=False)
    assert first.status == IndexBuild.Status.SUCCEEDED
    assert (first.model, first.model_source) == ("efficientnet-lite0", Source.FALLBACK)
    assert SIMILARITY_KEYS["MODEL"].default in first.manifest["model_fallback"]
    assert "FALLING BACK" in first.manifest["model_fallback"]
    again = index_build_run(progress=False)
    assert (again.model, again.model_source) == ("efficientnet-lite0", Source.CURRENT)


def test_an_explicit_model_that_cannot_load_fails_instead_of_falling_back(no_model_setting):
    make_catalog(2)
    build = None
    with pytest.raises(Exception, match="does not exist"):
        build = index_build_run(model="/nonexistent/model-dir", progress=False)
    assert build is None
    failed = IndexBuild.objects.latest("pk")
    assert failed.status == IndexBuild.Status.FAILED and failed.model == "/nonexistent/model-dir"
