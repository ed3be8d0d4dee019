"""Exit codes from the command line (README "Exit codes"): 1 for a bad option, 2 for a partial run.

argparse alone exits 2 on a bad option, which a cron chain reads as "done, partly"; and
Django prints "CommandError: ..." before a partial run's summary, which reads like a crash.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class

from catalog.exitcodes import EXIT_FAILED, EXIT_PARTIAL
from catalog.management.base import LookalikeCommand

ROOT = Path(__file__).resolve().parents[2]
OUR_APPS = ("catalog", "similarity", "demo")


@pytest.mark.parametrize("command", ["build_index", "import_catalog"])
def test_a_bad_option_exits_1_with_the_usage(tmp_path, command):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", LOOKALIKE_DATA_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, str(ROOT / "manage.py"), command, "--bogus"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == EXIT_FAILED, done.stderr
    assert done.stderr.startswith(f"usage: manage.py {command}")
    assert f"manage.py {command}: error: " in done.stderr  # argparse says what is wrong
    assert "Traceback" not in done.stderr


def test_every_command_uses_the_lookalike_base():
    ours = {name: app for name, app in get_commands().items() if app in OUR_APPS}
    assert {"build_index", "import_catalog", "demo", "match_images"} <= set(ours)
    for name, app in ours.items():
        assert isinstance(load_command_class(app, name), LookalikeCommand), name


@pytest.mark.django_db
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_partial_run_prints_its_summary_without_the_crash_prefix(
    tmp_path, capsys, monkeypatch, dry_run
):
    feed = tmp_path / "feed.csv"
    feed.write_text("article_id,image_url\nA1,https://x.example/a.jpg\n,https://x.example/b.jpg\n")
    # run_from_argv closes every connection when it ends: the test's own transaction stays.
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)
    command = load_command_class("catalog", "import_catalog")
    argv = ["manage.py", "import_catalog", str(feed)] + (["--dry-run"] if dry_run else [])
    with pytest.raises(SystemExit) as exited:
        command.run_from_argv(argv)
    assert exited.value.code == EXIT_PARTIAL
    err = capsys.readouterr().err
    assert "CommandError" not in err
    done = "validated, nothing written" if dry_run else "imported"
    assert f"1 row(s) skipped; the other rows were {done}" in err
