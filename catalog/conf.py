"""The one accessor for catalog settings (the LOOKALIKE dict), with defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

DEFAULTS: dict[str, object] = {
    "DOWNLOAD_MAX_BYTES": 20 * 1024 * 1024,
    "DOWNLOAD_WORKERS": 32,
    "DOWNLOAD_RETRIES": 3,
    "DOWNLOAD_TIMEOUT": 10.0,
    "DOWNLOAD_MAX_PIXELS": 64_000_000,
    # Loopback, private, link-local... addresses are refused unless this is True (the demo,
    # tests and benchmarks serve images on 127.0.0.1 and opt in).
    "DOWNLOAD_ALLOW_PRIVATE": False,
    "PROGRESS_LOG_SECONDS": 10.0,  # without a TTY, long loops log a progress line this often
}


@dataclass(frozen=True)
class CatalogSettings:
    data_dir: Path
    media_root: Path
    download_max_bytes: int
    download_workers: int
    download_retries: int
    download_timeout: float
    download_max_pixels: int
    download_allow_private: bool = False
    progress_log_seconds: float = 10.0


def catalog_settings() -> CatalogSettings:
    """Current catalog settings; read on every call so tests can override settings."""
    values = {**DEFAULTS, **getattr(settings, "LOOKALIKE", {})}
    return CatalogSettings(
        data_dir=Path(settings.DATA_DIR),
        media_root=Path(settings.MEDIA_ROOT),
        download_max_bytes=int(values["DOWNLOAD_MAX_BYTES"]),
        download_workers=int(values["DOWNLOAD_WORKERS"]),
        download_retries=int(values["DOWNLOAD_RETRIES"]),
        download_timeout=float(values["DOWNLOAD_TIMEOUT"]),
        download_max_pixels=int(values["DOWNLOAD_MAX_PIXELS"]),
        download_allow_private=bool(values["DOWNLOAD_ALLOW_PRIVATE"]),
        progress_log_seconds=float(values["PROGRESS_LOG_SECONDS"]),
    )
