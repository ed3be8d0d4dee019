"""System checks (manage.py check, runserver, migrate) for the similarity settings."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core.checks import Error, register

from catalog.checks import configured_values, number_errors
from similarity.conf import API_AUTH_MODES, SIMILARITY_KEYS

THROTTLE_RATE = re.compile(r"^\d+/(s|sec|second|m|min|minute|h|hour|d|day)$")


@register()
def similarity_settings_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    values = configured_values(SIMILARITY_KEYS)
    errors = number_errors(SIMILARITY_KEYS, app="similarity")
    if str(values["API_AUTH"]).strip().lower() not in API_AUTH_MODES:
        errors.append(_error("similarity", 3, f"LOOKALIKE_API_AUTH must be one of "
                             f"{', '.join(API_AUTH_MODES)}; got {values['API_AUTH']!r}"))
    max_k, default_k = values["MAX_K"], values["DEFAULT_K"]
    if isinstance(max_k, int) and isinstance(default_k, int) and default_k > max_k:
        errors.append(_error("similarity", 4, f"LOOKALIKE_DEFAULT_K ({default_k}) must not "
                             f"exceed LOOKALIKE_MAX_K ({max_k})"))
    neighbors_k = values["NEIGHBORS_K"]
    if isinstance(max_k, int) and isinstance(neighbors_k, int) and neighbors_k > max_k:
        errors.append(_error("similarity", 4, f"LOOKALIKE_NEIGHBORS_K ({neighbors_k}) must not "
                             f"exceed LOOKALIKE_MAX_K ({max_k})"))
    throttle = str(values["UPLOAD_THROTTLE"] or "")
    if throttle and not THROTTLE_RATE.match(throttle):
        errors.append(_error("similarity", 5, "LOOKALIKE_UPLOAD_THROTTLE must be a rate like "
                             f"60/min (or empty for no limit); got {throttle!r}"))
    errors += _runtime_errors(values)
    errors += _threshold_errors(values["DUPLICATE_THRESHOLD"])
    return errors


def _runtime_errors(values: Mapping[str, object]) -> list[Error]:
    from similarity.engine.embedders.runtimes import RUNTIME_CHOICES  # numpy/PIL: only here

    errors = []
    runtime = str(values["RUNTIME"]).strip().lower()
    if runtime not in RUNTIME_CHOICES:
        errors.append(_error("similarity", 6, f"LOOKALIKE_RUNTIME must be one of "
                             f"{', '.join(RUNTIME_CHOICES)}; got {values['RUNTIME']!r}"))
    for key in ("RUNTIME_MIN_COSINE", "RUNTIME_MIN_OVERLAP"):
        value = values[key]
        if isinstance(value, int | float) and not 0 < value <= 1:
            errors.append(_error("similarity", 7, f"LOOKALIKE_{key} must be in (0, 1]; "
                                 f"got {value!r}"))
    return errors


def _threshold_errors(threshold: object) -> list[Error]:
    from similarity.selectors.duplicates import MAX_THRESHOLD

    if isinstance(threshold, int | float) and not 0 < threshold <= MAX_THRESHOLD:
        return [_error("similarity", 8, f"LOOKALIKE_DUPLICATE_THRESHOLD must be in "
                       f"(0, {MAX_THRESHOLD}]; got {threshold!r}")]
    return []


def _error(app: str, number: int, message: str) -> Error:
    return Error(message, id=f"{app}.E{number:03d}")
