"""System checks (manage.py check, runserver, migrate) for the catalog settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.checks import Error, register

from catalog.conf import CATALOG_KEYS, NAMESPACE, SettingKey


def configured_values(keys: Mapping[str, SettingKey]) -> dict[str, object]:
    """The project's LOOKALIKE values of ``keys`` (their defaults where not set), unparsed."""
    configured = getattr(settings, NAMESPACE, {})
    return {name: configured.get(name, key.default) for name, key in keys.items()}


def number_errors(keys: Mapping[str, SettingKey], *, app: str) -> list[Error]:
    """Type and sign of every numeric key (generic: new keys are covered). Numbers must be
    positive unless their key accepts zero (``setting(..., zero=True)``)."""
    errors = []
    for name, value in configured_values(keys).items():
        key = keys[name]
        if key.kind not in (int, float) or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(_error(app, 1, f"LOOKALIKE_{name} must be a number; got {value!r}"))
        elif key.kind is int and not isinstance(value, int):
            errors.append(_error(app, 1, f"LOOKALIKE_{name} must be an integer; got {value!r}"))
        elif value < 0 or (value == 0 and not key.zero):
            floor = ">= 0" if key.zero else "> 0"
            errors.append(_error(app, 2, f"LOOKALIKE_{name} must be {floor}; got {value!r}"))
    return errors


@register()
def catalog_settings_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every numeric catalog setting has its declared type and a valid sign."""
    return number_errors(CATALOG_KEYS, app="catalog")


def _error(app: str, number: int, message: str) -> Error:
    return Error(message, id=f"{app}.E{number:03d}")
