"""`auto`'s measured runtime choice, remembered on disk per machine and model identity.

Calibrating `auto` (an ONNX export, the accuracy gate, timing every candidate) costs seconds
to minutes; its outcome only changes when the CPU, the weights or the libraries do. So the
choice is written beside the exported models, one small JSON file per model identity and
gate, holding the fingerprint it was measured under (CPU model and flags, thread count,
library versions). A file whose fingerprint differs from this process's is stale: the
choice is measured again and the file replaced. A damaged file is measured again too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import re
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from similarity.engine.files import atomic_write_bytes

logger = logging.getLogger(__name__)

FORMAT = 1
LIBRARIES = ("torch", "onnx", "onnxruntime", "numpy", "transformers", "sentence-transformers")


def cpu_description() -> dict[str, str]:
    """The CPU's model name and a digest of its feature flags (what speed depends on)."""
    name, flags = platform.processor() or platform.machine(), ""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name in {"", platform.machine(), platform.processor()}:
            name = value.strip()
        elif key.strip() in {"flags", "Features"} and not flags:
            flags = " ".join(sorted(value.split()))
    return {"cpu": name, "cpu_flags": hashlib.blake2b(flags.encode(), digest_size=8).hexdigest()}


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a runtime's speed and vectors depend on."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def fingerprint(*, threads: int | None) -> dict[str, Any]:
    """What a remembered choice is valid for besides the model: this machine and its libraries."""
    return {"format": FORMAT, **cpu_description(), "threads": threads, **library_versions()}


def choice_path(cache_dir: Path, identity: str, gate: dict[str, Any]) -> Path:
    """``<cache_dir>/<readable model>-<hash of identity + gate>.json``."""
    payload = json.dumps({"identity": identity, **gate}, sort_keys=True)
    digest = hashlib.blake2b(payload.encode(), digest_size=10).hexdigest()
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", identity.split("@")[0].split("/")[-1])[:48]
    return Path(cache_dir) / f"{readable or 'model'}-{digest}.json"


def remembered_choice(path: Path, current: dict[str, Any]) -> dict[str, Any] | None:
    """The choice stored at ``path`` if measured under ``current``; else None (logged why)."""
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.warning("Ignoring the unreadable runtime choice %s: %s", path, error)
        return None
    if not isinstance(stored, dict) or not isinstance(stored.get("choice"), dict):
        logger.warning("Ignoring the runtime choice %s: not a choice record", path)
        return None
    measured_under = stored.get("fingerprint")
    if measured_under != current:
        changed = sorted(
            key for key in set(current) | set(measured_under or {})
            if (measured_under or {}).get(key) != current.get(key)
        )
        logger.info("The remembered runtime choice %s is stale (%s changed): measuring again",
                    path.name, ", ".join(changed))
        return None
    return {**stored["choice"], "measured_at": stored.get("measured_at", "")}


def remember_choice(path: Path, current: dict[str, Any], choice: dict[str, Any]) -> str:
    """Store ``choice`` measured under ``current`` at ``path`` (atomically); its timestamp."""
    measured_at = datetime.now(UTC).isoformat(timespec="seconds")
    record = {"fingerprint": current, "measured_at": measured_at, "choice": choice}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(record, indent=2, sort_keys=True).encode())
    except OSError as error:  # a read-only data dir only costs a re-measure next time
        logger.warning("Could not remember the runtime choice in %s: %s", path, error)
    return measured_at
