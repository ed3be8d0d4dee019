"""The manifest of an index build: a typed record, stored as manifest.json beside the index."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
REQUIRED_MANIFEST_KEYS = ("model", "index_type", "factory", "input_checksum")
# Written only when set: builds made outside the build service (tests, benchmarks) lack them.
OPTIONAL_MANIFEST_KEYS = ("build_id", "supports_text")


@dataclass(frozen=True)
class BuildManifest(Mapping[str, Any]):
    """What a build was made from and of; ``to_dict()`` is the JSON on disk and on the row.

    Keys this class does not know (the runtime evidence of the build service, keys of
    newer or older versions) are kept in ``extra`` and written back unchanged, so every
    build on disk still loads. It also reads as a Mapping of those JSON keys, for callers
    that have not moved to the attributes yet.
    """

    model: str
    index_type: str
    factory: str
    input_checksum: str
    model_identity: str = ""
    mode: str = "full"
    recall_at_10: float | None = None
    build_id: int | None = None
    supports_text: bool | None = None
    # Set by write_build from the written index.
    count: int = 0
    dimension: int = 0
    created_at: str = ""
    faiss_version: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        for key in OPTIONAL_MANIFEST_KEYS:
            if values[key] is None:
                del values[key]
        return {**self.extra, **values}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildManifest:
        """The manifest of ``data``; ValueError naming the keys when required ones are absent."""
        missing = [key for key in REQUIRED_MANIFEST_KEYS if key not in data]
        if missing:
            raise ValueError(f"manifest is missing {', '.join(missing)}; got keys {sorted(data)}")
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            **{key: value for key, value in data.items() if key in known},
            extra={key: value for key, value in data.items() if key not in known},
        )

    # Mapping over the JSON keys (per request on the search path: no dict is built).
    def __getitem__(self, key: str) -> Any:
        if key not in _FIELD_NAMES:
            return self.extra[key]
        value = getattr(self, key)
        if value is None and key in OPTIONAL_MANIFEST_KEYS:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def read_manifest(build_path: Path) -> BuildManifest:
    """The manifest of the build directory ``build_path``."""
    return BuildManifest.from_dict(json.loads((Path(build_path) / MANIFEST_FILE).read_text()))


def manifest_text(manifest: BuildManifest) -> str:
    """manifest.json's content: sorted keys, indented, one trailing newline."""
    return json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n"


_FIELD_NAMES = frozenset(f.name for f in fields(BuildManifest)) - {"extra"}
