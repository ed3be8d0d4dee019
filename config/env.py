"""Typed settings from environment variables (environs), with one clear line per bad value."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import environs
from django.core.exceptions import ImproperlyConfigured

LOOKALIKE_PREFIX = "LOOKALIKE_"


class SettingsError(ImproperlyConfigured):
    """A setting from the environment could not be parsed; the message names var and value."""


class EnvReader:
    """environs.Env that treats an empty variable as unset (except for strings) and reports
    every bad value in one line naming the variable and its value (seal())."""

    def __init__(self) -> None:
        self.environ = os.environ
        self._env = environs.Env(eager=False)

    def _set(self, name: str) -> bool:
        return bool(self.environ.get(name, "").strip())

    def str(self, name: str, default: str | None = None, **kwargs: Any) -> Any:
        return self._env.str(name, default, **kwargs)

    def int(self, name: str, default: int | None = None) -> Any:
        return self._env.int(name) if self._set(name) else default

    def float(self, name: str, default: float | None = None) -> Any:
        return self._env.float(name) if self._set(name) else default

    def bool(self, name: str, default: bool | None = None) -> Any:
        return self._env.bool(name) if self._set(name) else default

    def list(self, name: str, default: str = "") -> list[str]:
        raw = self.environ.get(name, default)
        return [item.strip() for item in raw.split(",") if item.strip()]

    def seal(self) -> None:
        """Raise SettingsError naming every bad variable and its value, if any."""
        try:
            self._env.seal()
        except environs.EnvValidationError as exc:
            problems = [
                f"{name}={self.environ.get(name)!r}: {_sentence(messages)}"
                for name, messages in exc.error_messages.items()
            ]
            raise SettingsError("invalid environment: " + "; ".join(problems)) from None


def lookalike_from_env(
    reader: EnvReader, *defaults: Mapping[str, object], types: Mapping[str, type] | None = None
) -> dict[str, object]:
    """The LOOKALIKE dict: each DEFAULTS key read from LOOKALIKE_<KEY> when that is set.

    The type comes from the default's type (or ``types`` for keys whose default is None, else
    str). Keys that are not set are left out, so the conf modules' DEFAULTS stay the one place
    for default values and new keys need no change here.
    """
    types = dict(types or {})
    values: dict[str, object] = {}
    for block in defaults:
        for key, default in block.items():
            name = LOOKALIKE_PREFIX + key
            if name not in reader.environ:
                continue
            kind = types.get(key) or (type(default) if default is not None else str)
            nullable = default is None
            raw = reader.environ[name]
            if nullable and raw.strip().lower() in {"", "none", "null"}:
                values[key] = None
                continue
            if kind is bool:
                value = reader.bool(name)
            elif kind is int:
                value = reader.int(name)
            elif kind is float:
                value = reader.float(name)
            else:
                value = reader.str(name)
            if value is not None or kind is str:
                values[key] = value
    return values


def _sentence(messages: list[str]) -> str:
    text = " ".join(str(message) for message in messages).rstrip(".")
    return text[:1].lower() + text[1:]
