"""Settings from the environment: typed parsing, clear errors, system checks, README table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from catalog.conf import CATALOG_KEYS, SettingKey, lookalike_values, setting, setting_keys
from config.env import EnvReader, SettingsError, lookalike_from_env
from similarity.conf import SIMILARITY_KEYS

ROOT = Path(__file__).resolve().parents[2]
ALL_KEYS = {**SIMILARITY_KEYS, **CATALOG_KEYS}


def manage_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    environ.update(DJANGO_SETTINGS_MODULE="config.settings", LOOKALIKE_DATA_DIR=str(tmp_path))
    environ.update(env)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check"],
        env=environ, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )


def test_bad_value_is_one_clear_line_naming_variable_and_value(tmp_path):
    result = manage_check(tmp_path, LOOKALIKE_BATCH_SIZE="abc")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == ["Error: invalid environment: LOOKALIKE_BATCH_SIZE='abc': "
                     "not a valid integer"]


def test_a_bad_task_timeout_is_one_clear_line_too(tmp_path):
    # Q_CLUSTER's retry is computed from it: a bad value must reach env.seal(), not crash.
    result = manage_check(tmp_path, LOOKALIKE_Q_TIMEOUT="soon")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "LOOKALIKE_Q_TIMEOUT='soon': not a valid integer" in result.stderr


def test_every_bad_value_is_reported_at_once(tmp_path):
    result = manage_check(tmp_path, LOOKALIKE_STORE_NEIGHBORS="maybe", DEBUG="sometimes")
    assert result.returncode == 1
    assert "LOOKALIKE_STORE_NEIGHBORS='maybe': not a valid boolean" in result.stderr
    assert "DEBUG='sometimes': not a valid boolean" in result.stderr


def test_invalid_combination_fails_the_system_check(tmp_path):
    result = manage_check(tmp_path, LOOKALIKE_DEFAULT_K="500", LOOKALIKE_API_AUTH="closed")
    assert result.returncode == 1
    assert "similarity.E004" in result.stderr and "DEFAULT_K (500)" in result.stderr
    assert "LOOKALIKE_API_AUTH must be one of open, token; got 'closed'" in result.stderr


def test_good_environment_passes_the_check(tmp_path):
    result = manage_check(tmp_path, LOOKALIKE_BATCH_SIZE="8", LOOKALIKE_DUPLICATE_THRESHOLD="0.1")
    assert result.returncode == 0, result.stderr


def sample_value(key: SettingKey) -> tuple[str, object]:
    kind = key.kind
    if kind is bool:
        return ("true", True) if not key.default else ("false", False)
    if kind is int:
        return "7", 7
    if kind is float:
        return "0.125", 0.125
    return "custom", "custom"


@pytest.mark.parametrize("key", sorted(ALL_KEYS))
def test_every_declared_key_is_settable_from_the_environment(monkeypatch, key):
    raw, expected = sample_value(ALL_KEYS[key])
    monkeypatch.setenv(f"LOOKALIKE_{key}", raw)
    reader = EnvReader()
    values = lookalike_from_env(reader, ALL_KEYS)
    reader.seal()
    assert values[key] == expected


def test_unset_variables_leave_the_defaults_to_the_conf_modules(monkeypatch):
    for key in ALL_KEYS:
        monkeypatch.delenv(f"LOOKALIKE_{key}", raising=False)
    assert lookalike_from_env(EnvReader(), ALL_KEYS) == {}


def test_a_new_key_needs_no_settings_change(monkeypatch):
    @dataclass(frozen=True)
    class NewSettings:
        new_limit: int = setting(5)
        new_flag: bool = setting(False)
        new_ratio: float = setting(0.5)
        new_name: str = setting("x")
        new_cap: float | None = setting(None)

    monkeypatch.setenv("LOOKALIKE_NEW_LIMIT", "9")
    monkeypatch.setenv("LOOKALIKE_NEW_FLAG", "yes")
    monkeypatch.setenv("LOOKALIKE_NEW_RATIO", "0.25")
    monkeypatch.setenv("LOOKALIKE_NEW_CAP", "1.5")
    reader = EnvReader()
    values = lookalike_from_env(reader, setting_keys(NewSettings))
    assert values == {"NEW_LIMIT": 9, "NEW_FLAG": True, "NEW_RATIO": 0.25, "NEW_CAP": 1.5}
    reader.seal()
    built = NewSettings(**lookalike_values(NewSettings, values))
    assert (built.new_limit, built.new_flag, built.new_name, built.new_cap) == (9, True, "x", 1.5)


def test_nullable_key_accepts_empty_and_none(monkeypatch):
    monkeypatch.setenv("LOOKALIKE_DUPLICATE_THRESHOLD", "none")
    values = lookalike_from_env(EnvReader(), SIMILARITY_KEYS)
    assert values["DUPLICATE_THRESHOLD"] is None


def test_seal_names_the_variable_and_value(monkeypatch):
    monkeypatch.setenv("LOOKALIKE_DOWNLOAD_TIMEOUT", "soon")
    reader = EnvReader()
    lookalike_from_env(reader, CATALOG_KEYS)
    with pytest.raises(SettingsError, match=r"LOOKALIKE_DOWNLOAD_TIMEOUT='soon': not a valid"):
        reader.seal()


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"DEFAULT_K": 50, "MAX_K": 10}, "similarity.E004"),
        ({"BATCH_SIZE": -1}, "similarity.E002"),
        ({"KEEP_BUILDS": 0}, "similarity.E002"),
        ({"THREADS": -2}, "similarity.E002"),
        ({"API_AUTH": "public"}, "similarity.E003"),
        ({"UPLOAD_THROTTLE": "lots"}, "similarity.E005"),
        ({"DUPLICATE_THRESHOLD": 0.5}, "similarity.E008"),
        ({"MAX_K": "many"}, "similarity.E001"),
        ({"DOWNLOAD_TIMEOUT": 0}, "catalog.E002"),
    ],
)
def test_system_checks_reject_bad_values(settings, overrides, check_id):
    call_command("check")  # the defaults pass
    settings.LOOKALIKE = {**settings.LOOKALIKE, **overrides}
    with pytest.raises(SystemCheckError, match=re.escape(check_id)):
        call_command("check")


def test_readme_settings_table_lists_every_key():
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"^\| `LOOKALIKE_([A-Z0-9_]+)` \|", readme, flags=re.M))
    missing = sorted(set(ALL_KEYS) - listed)
    assert not missing, f"README settings table lacks: {', '.join(missing)}"
