"""Exit codes (README "Exit codes"): 0 all done, 2 done with skipped or failed items, 1 failure."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db


def exit_code(*args: str) -> int:
    """What manage.py would exit with (BaseCommand.run_from_argv: CommandError.returncode)."""
    try:
        call_command(*args, stdout=StringIO(), stderr=StringIO())
    except CommandError as exc:
        return exc.returncode
    except SystemExit as exc:  # argparse errors
        return int(exc.code or 0)
    return EXIT_OK


def test_build_and_embed_exit_2_when_some_images_cannot_be_embedded(tmp_path):
    articles = make_catalog(4)
    assert exit_code("embed_images", "--model", "classic", "--no-progress") == EXIT_OK
    assert exit_code("build_index", "--model", "classic", "--no-progress") == EXIT_OK
    Path(articles[1].image.path).write_bytes(b"not an image")
    articles[1].image_sha256 = "0" * 64  # a new file: embedded again, and fails
    articles[1].save()
    assert exit_code("embed_images", "--model", "classic", "--no-progress") == EXIT_PARTIAL
    assert exit_code("build_index", "--model", "classic", "--no-progress") == EXIT_PARTIAL


def test_unusable_input_and_failures_exit_1(tmp_path):
    assert exit_code("build_index", "--model", "classic", "--no-progress") == EXIT_FAILED
    assert exit_code("build_index", "--batch-size", "0") == EXIT_FAILED
    assert exit_code("import_catalog", str(tmp_path / "missing.csv")) == EXIT_FAILED
    assert exit_code("export_neighbors", "--k", "0") == EXIT_FAILED
    assert exit_code("export_neighbors", "--no-progress") == EXIT_FAILED  # no index yet
    assert exit_code("find_duplicates") == EXIT_FAILED
    assert exit_code("evaluate", "--no-progress") == EXIT_FAILED
    assert exit_code("download_images", "--workers", "0") == EXIT_FAILED
    assert exit_code("embed_images", "--shard", "9/2") == EXIT_FAILED


def test_everything_done_exits_0():
    make_catalog(3)
    assert exit_code("build_index", "--model", "classic", "--no-progress") == EXIT_OK
    assert exit_code("export_neighbors", "--k", "2", "--no-progress") == EXIT_OK
    assert exit_code("find_duplicates") == EXIT_OK
    assert exit_code("evaluate", "--no-progress") == EXIT_OK
    assert exit_code("download_images") == EXIT_OK  # nothing to do is success
    assert exit_code("reap_builds") == EXIT_OK
