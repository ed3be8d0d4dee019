"""OpenAPI contract: the error body, and the error statuses each view declares.

Each API view declares the error statuses its operations answer, next to its code::

    class ArticleSimilarApi(APIView):
        error_statuses = {"get": (400, 404, 409, 503)}

``ApiAutoSchema`` (REST_FRAMEWORK's DEFAULT_SCHEMA_CLASS) adds them, the statuses every
operation may answer (COMMON_STATUSES, SERVER_STATUSES) and the shared Error component to
each operation; a method a view does not declare gets the statuses its shape implies. The
schema-driven fuzzer (``make fuzz``) fails CI on any status the schema does not declare.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ComponentRegistry, ResolvedComponent

from similarity.conf import similarity_settings

ERROR_COMPONENT = "Error"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": 'Every error of the API: {"error": {"code", "message", ...}}.',
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "Stable, machine-readable code."},
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "additionalProperties": True,
                    "description": "invalid_input only: the messages of each bad field.",
                },
                "article_id": {"type": "string"},
                "reason": {"type": "string"},
            },
            "required": ["code", "message"],
            "additionalProperties": True,
        }
    },
    "required": ["error"],
}

STATUS_TEXT = {
    400: "Invalid input or query (`invalid_input`, `invalid_query`, `invalid_image`, ...).",
    401: "Credentials required (`LOOKALIKE_API_AUTH=token`, or a staff-only endpoint).",
    403: "Authenticated but not allowed (staff-only endpoints).",
    404: "Unknown article, build or path.",
    409: "Conflict: the article is not in the index, or a build is already running.",
    413: "Upload larger than `LOOKALIKE_UPLOAD_MAX_BYTES`.",
    405: "Method not allowed on this path (`method_not_allowed`).",
    406: "No acceptable representation for the Accept header (`not_acceptable`).",
    415: "Unsupported media type of the request body.",
    429: "Throttled (`LOOKALIKE_UPLOAD_THROTTLE`).",
    503: "Unavailable for now: no index built yet (`index_not_ready`), the database "
         "unreachable (`database_unavailable`), uploads busy, the task queue unreachable.",
}

# Answered by the HTTP server before Django (gunicorn's limit_request_line, 4094 bytes), as
# HTML: declared so that clients (and the fuzzer) know a very long query string can get it.
SERVER_STATUSES: dict[int, dict[str, Any]] = {
    414: {
        "content": {"text/html": {"schema": {"type": "string"}}},
        "description": "Request line too long (the HTTP server's limit; not a JSON body).",
    },
}

# Every operation may answer 401/403 (token mode, staff-only endpoints), 405 (another method
# on its path), 406 (an Accept header the API cannot satisfy) and 503 (the database
# unavailable), beyond what its view declares; keep the views' declarations in step with the
# README's error table.
COMMON_STATUSES = (401, 403, 405, 406, 503)
# An operation its view does not declare still gets the statuses its shape implies.
DEFAULT_BY_SHAPE = {"parameters": 400, "path": 404, "body": 400}
ErrorStatuses = dict[str, tuple[int, ...]]  # a view's error_statuses: method -> statuses


def operation_error_statuses(view: Any, method: str, operation: dict[str, Any]) -> list[int]:
    """The error statuses ``method`` of ``view`` can answer: declared, else by its shape."""
    statuses = set(COMMON_STATUSES)
    declared: ErrorStatuses = getattr(view, "error_statuses", {})
    if method.lower() in declared:
        statuses.update(declared[method.lower()])
    else:
        parameters = operation.get("parameters", [])
        if any(p.get("in") == "query" for p in parameters) or "requestBody" in operation:
            statuses.add(DEFAULT_BY_SHAPE["parameters"])
        if any(p.get("in") == "path" for p in parameters):
            statuses.add(DEFAULT_BY_SHAPE["path"])
    return sorted(statuses)


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus each operation's error responses (its view's
    ``error_statuses``) in the API's one error shape."""

    def get_operation(
        self, path: str, path_regex: str, path_prefix: str, method: str,
        registry: ComponentRegistry,
    ) -> dict[str, Any] | None:
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        error = ResolvedComponent(
            name=ERROR_COMPONENT, type=ResolvedComponent.SCHEMA, schema=ERROR_SCHEMA,
            object=ERROR_COMPONENT,
        )
        registry.register_on_missing(error)
        responses = operation.setdefault("responses", {})
        for status in operation_error_statuses(self.view, method, operation):
            responses.setdefault(str(status), {
                "content": {"application/json": {"schema": error.ref}},
                "description": STATUS_TEXT.get(status, "Error."),
            })
        for status, response in SERVER_STATUSES.items():
            responses.setdefault(str(status), response)
        return operation


def postprocess_schema(result: dict[str, Any], generator: Any, request: Any, public: bool,
                       **kwargs: Any) -> dict[str, Any]:
    """POSTPROCESSING_HOOKS entry: k bounds from MAX_K and the duplicates page's extra keys."""
    _extend_duplicates_page(result)
    _bound_k(result)
    return result


def _bound_k(result: dict[str, Any]) -> None:
    # KField (api/search.py) validates 1 <= k <= MAX_K but maps to a bare integer: declare
    # the bounds on every "k" parameter and body property that does not declare its own.
    bounds = {"minimum": 1, "maximum": similarity_settings().max_k}
    schemas: list[dict[str, Any]] = []
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                parameters = operation.get("parameters", [])
                schemas += [p["schema"] for p in parameters if p.get("name") == "k"]
    for component in result["components"]["schemas"].values():
        k = component.get("properties", {}).get("k")
        if k is not None:
            schemas.append(k)
    for schema in schemas:
        if schema.get("type") == "integer":
            for key, value in bounds.items():
                schema.setdefault(key, value)


def _extend_duplicates_page(result: dict[str, Any]) -> None:
    # GET /api/duplicates/ adds the threshold, model and build to the usual page envelope.
    page = result["components"]["schemas"].get("PaginatedDuplicateGroupList")
    if page is None:
        return
    page["properties"].update(
        {
            "threshold": {"type": "number", "format": "double"},
            "model": {"type": "string"},
            "index_build": {"type": "string"},
        }
    )
    page.setdefault("required", [])
    page["required"] = sorted({*page["required"], "count", "results", "threshold", "model",
                               "index_build"})
