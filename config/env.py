"""Typed settings from environment variables (environs), with one clear line per bad value."""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from typing import Any

import environs
from django.core.exceptions import ImproperlyConfigured

from catalog.conf import SettingKey

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

    # The methods are named after the types they read, so the annotations say builtins.*.
    def str(self, name: builtins.str, default: builtins.str = "", **kwargs: Any) -> builtins.str:
        value: builtins.str | None = self._env.str(name, default, **kwargs)
        return default if value is None else value  # None: a bad value, reported by seal()

    def int(self, name: builtins.str, default: builtins.int | None = None) -> builtins.int | None:
        value: builtins.int | None = self._env.int(name) if self._set(name) else default
        return value

    def float(self, name: builtins.str,
              default: builtins.float | None = None) -> builtins.float | None:
        value: builtins.float | None = self._env.float(name) if self._set(name) else default
        return value

    def bool(self, name: builtins.str,
             default: builtins.bool | None = None) -> builtins.bool | None:
        value: builtins.bool | None = self._env.bool(name) if self._set(name) else default
        return value

    def list(self, name: builtins.str, default: builtins.str = "") -> builtins.list[builtins.str]:
        raw = self.environ.get(name, default)
        return [item.strip() for item in raw.split(",") if item.strip()]

    def seal(self) -> None:
        """Raise SettingsError naming every bad variable and its value, if any."""
        try:
            self._env.seal()
        except environs.EnvValidationError as exc:
            errors = exc.error_messages
            by_name = errors.items() if isinstance(errors, Mapping) else [("environment", errors)]
            problems = [
                f"{name}={self.environ.get(name)!r}: {_sentence(messages)}"
                for name, messages in by_name
            ]
            raise SettingsError("invalid environment: " + "; ".join(problems)) from None


def lookalike_from_env(reader: EnvReader, keys: Mapping[str, SettingKey]) -> dict[str, object]:
    """The LOOKALIKE dict: each key read from LOOKALIKE_<KEY> when that is set.

    ``keys`` are the conf modules' declared keys (``setting_keys``): each is parsed with its
    declared type; a nullable one takes "", "none" or "null" as None. Keys that are not set
    are left out, so the conf modules stay the one place for default values and new keys
    need no change here.
    """
    values: dict[str, object] = {}
    for key in keys.values():
        name = LOOKALIKE_PREFIX + key.name
        if name not in reader.environ:
            continue
        raw = reader.environ[name]
        if key.nullable and raw.strip().lower() in {"", "none", "null"}:
            values[key.name] = None
            continue
        value: object
        if key.kind is bool:
            value = reader.bool(name)
        elif key.kind is int:
            value = reader.int(name)
        elif key.kind is float:
            value = reader.float(name)
        else:
            value = reader.str(name)
        if value is not None or key.kind is str:
            values[key.name] = value
    return values


def _sentence(messages: list[str]) -> str:
    text = " ".join(str(message) for message in messages).rstrip(".")
    return text[:1].lower() + text[1:]
