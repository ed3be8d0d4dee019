"""Settings objects over the LOOKALIKE dict (DRF's ``api_settings`` shape), and the catalog's.

Each app declares its keys once, as the fields of a frozen dataclass (name = key in lower
case, default = the default, type = how the value is read); ``lookalike_values`` reads them
from ``settings.LOOKALIKE`` and ``SettingsCache`` builds the object once per process and
drops it when Django's ``setting_changed`` names one of its sources (``override_settings``
and pytest-django's ``settings`` fixture send it), as DRF's ``api_settings.reload`` does.
"""

from __future__ import annotations

import threading
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

T = TypeVar("T")
Clean = Callable[[str, Any], Any]

KEY = "lookalike_key"  # field metadata: the field is a LOOKALIKE key
NAMESPACE = "LOOKALIKE"


def setting(default: T, *, clean: Clean | None = None, zero: bool = False) -> T:
    """A LOOKALIKE key's field: its default (the one place it is written) and its checks.

    ``clean(key, value)`` runs on the typed value when the object is built (and raises
    ImproperlyConfigured naming the key); ``zero`` lets the system check accept 0 for a
    number that must otherwise be positive.
    """
    metadata = {KEY: True, "clean": clean, "zero": zero}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class SettingKey:
    """One LOOKALIKE key as the environment parser and the system checks see it."""

    name: str  # e.g. "BATCH_SIZE" (the variable is LOOKALIKE_BATCH_SIZE)
    default: object
    kind: type  # bool, int, float or str
    nullable: bool  # None is a valid value ("" or "none" in the environment)
    zero: bool  # 0 is accepted for a number


def setting_keys(cls: type) -> dict[str, SettingKey]:
    """The LOOKALIKE keys a settings dataclass declares, by key name."""
    hints = typing.get_type_hints(cls)
    keys = {}
    for item in _key_fields(cls):
        kind, nullable = _kind(hints[item.name])
        name = item.name.upper()
        keys[name] = SettingKey(name, item.default, kind, nullable, bool(item.metadata["zero"]))
    return keys


def lookalike_values(cls: type, configured: Mapping[str, object] | None = None) -> dict[str, Any]:
    """``cls``'s LOOKALIKE keys as field values: configured, else default; typed and cleaned."""
    if configured is None:
        configured = getattr(settings, NAMESPACE, {})
    keys = setting_keys(cls)
    values = {}
    for item in _key_fields(cls):
        key = keys[item.name.upper()]
        value = _typed(key, configured.get(key.name, key.default))
        clean = item.metadata["clean"]
        values[item.name] = clean(key.name, value) if clean else value
    return values


class SettingsCache(Generic[T]):
    """A settings object built once per process, dropped when one of ``sources`` changes."""

    def __init__(self, build: Callable[[], T], *, sources: Collection[str]) -> None:
        self._build = build
        self.sources = frozenset(sources)
        self._value: T | None = None
        self._lock = threading.Lock()
        setting_changed.connect(self._changed, weak=False)

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
                value = self._value
        return value

    def reset(self) -> None:
        with self._lock:
            self._value = None

    def _changed(self, *, setting: str, **kwargs: object) -> None:
        if setting in self.sources:
            self.reset()


def at_least_one(key: str, value: Any) -> int:
    """``clean`` for counts that must be >= 1."""
    number = int(value)
    if number < 1:
        raise ImproperlyConfigured(f"LOOKALIKE_{key} must be >= 1; got {value!r}")
    return number


def _key_fields(cls: type) -> list[Field[Any]]:
    return [item for item in fields(cls) if item.metadata.get(KEY)]


def _kind(hint: object) -> tuple[type, bool]:
    """(bool | int | float | str, nullable) of a field annotation like ``float | None``."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kinds = [arg for arg in args if arg is not type(None)]
    if len(kinds) != 1 or kinds[0] not in (bool, int, float, str):
        raise TypeError(f"a LOOKALIKE key must be bool, int, float or str (or None); got {hint}")
    return kinds[0], len(kinds) < len(args)


def _typed(key: SettingKey, value: object) -> object:
    if value is None and key.nullable:
        return None
    try:
        if key.kind is str:
            return str(value if value is not None else "").strip()
        return key.kind(value)
    except (TypeError, ValueError) as error:
        raise ImproperlyConfigured(
            f"LOOKALIKE_{key.name} must be {key.kind.__name__}; got {value!r}"
        ) from error


@dataclass(frozen=True, kw_only=True)
class CatalogSettings:
    """The catalog's settings: its LOOKALIKE keys and the Django paths it writes under."""

    data_dir: Path  # DATA_DIR: everything the app writes
    media_root: Path  # MEDIA_ROOT: the default storage of downloaded images

    download_max_bytes: int = setting(20 * 1024 * 1024)
    download_workers: int = setting(32)
    download_retries: int = setting(3, zero=True)
    download_timeout: float = setting(10.0)
    download_max_pixels: int = setting(64_000_000)
    # Loopback, private, link-local... addresses are refused unless this is True (the demo,
    # tests and benchmarks serve images on 127.0.0.1 and opt in).
    download_allow_private: bool = setting(False)
    progress_log_seconds: float = setting(10.0)  # without a TTY, loops log progress this often


def _catalog_settings_build() -> CatalogSettings:
    return CatalogSettings(
        data_dir=Path(settings.DATA_DIR),
        media_root=Path(settings.MEDIA_ROOT),
        **lookalike_values(CatalogSettings),
    )


_catalog = SettingsCache(_catalog_settings_build, sources={NAMESPACE, "DATA_DIR", "MEDIA_ROOT"})


def catalog_settings() -> CatalogSettings:
    """The catalog's settings, built once per process (rebuilt after a settings change)."""
    return _catalog.get()


CATALOG_KEYS = setting_keys(CatalogSettings)  # the environment parser and the checks read these
