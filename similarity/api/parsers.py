"""The API's JSON parser: DRF's, with a nesting depth limit (deep JSON is a 400, never a 500)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

# Deepest nesting any request needs is 4 (batch -> items -> item -> vector); 32 leaves room.
MAX_JSON_DEPTH = 32
MSG_TOO_DEEP = "JSON parse error - nested deeper than {limit} levels"


class JSONParser(parsers.JSONParser):
    """Parses like DRF's JSONParser; refuses JSON nested deeper than MAX_JSON_DEPTH.

    Python's json module recurses once per level and raises RecursionError past the
    interpreter's limit, which DRF does not catch (an anonymous 500); shallower but deep
    documents would recurse again in the serializers. Both are refused with a ParseError.
    """

    def parse(self, stream: Any, media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(MSG_TOO_DEEP.format(limit=MAX_JSON_DEPTH)) from None
        if json_depth_exceeds(data, MAX_JSON_DEPTH):
            raise ParseError(MSG_TOO_DEEP.format(limit=MAX_JSON_DEPTH))
        return data


def json_depth_exceeds(data: Any, limit: int) -> bool:
    """True when ``data`` nests lists / objects more than ``limit`` levels (no recursion)."""
    level: list[Any] = [data]
    depth = 0
    while level:
        containers = [item for item in level if isinstance(item, list | dict)]
        if not containers:
            return False
        depth += 1
        if depth > limit:
            return True
        level = [child for container in containers
                 for child in (container.values() if isinstance(container, dict) else container)
                 if isinstance(child, list | dict)]
    return False
