"""System checks (manage.py check, runserver, migrate) for the catalog settings."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

from catalog.conf import DEFAULTS

ZERO_ALLOWED = {"DOWNLOAD_RETRIES"}


@register()
def catalog_settings_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every numeric catalog setting has its default's type and is positive."""
    configured = getattr(settings, "LOOKALIKE", {})
    errors = []
    for key, default in DEFAULTS.items():
        value = configured.get(key, default)
        if isinstance(default, bool) or not isinstance(default, int | float):
            continue
        if isinstance(value, bool) or not isinstance(value, type(default) | int):
            errors.append(Error(f"LOOKALIKE_{key} must be a number; got {value!r}",
                                id="catalog.E001"))
        elif value < 0 or (value == 0 and key not in ZERO_ALLOWED and default != 0):
            floor = ">= 0" if key in ZERO_ALLOWED or default == 0 else "> 0"
            errors.append(Error(f"LOOKALIKE_{key} must be {floor}; got {value!r}",
                                id="catalog.E002"))
    return errors
