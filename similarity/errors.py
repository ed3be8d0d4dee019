"""Errors the similarity services raise; the API and admin map them to messages and statuses."""

from __future__ import annotations


class SimilarityError(Exception):
    """Base class; ``code`` is a stable machine-readable name."""

    code = "similarity_error"


class ArticleNotFound(SimilarityError):
    code = "article_not_found"

    def __init__(self, article_id: str) -> None:
        super().__init__(f"unknown article {article_id!r}")
        self.article_id = article_id


class ArticleNotIndexed(SimilarityError):
    code = "article_not_indexed"

    def __init__(self, article_id: str, reason: str, *, public_reason: str | None = None) -> None:
        super().__init__(f"article {article_id!r} is not in the index: {reason}")
        self.article_id = article_id
        self.reason = reason
        # What an anonymous API client may read (no download error details).
        self.public_reason = reason if public_reason is None else public_reason

    def public_message(self) -> str:
        return f"article {self.article_id!r} is not in the index: {self.public_reason}"


class IndexNotReady(SimilarityError):
    code = "index_not_ready"

    def __init__(self, message: str = "no index has been built yet; run manage.py build_index"):
        super().__init__(message)


class ClientModelUnavailable(SimilarityError):
    """No client can compute the index's vectors (no machine-readable preprocessing, or no
    ONNX export that passed the accuracy gate): clients must upload photos instead."""

    code = "client_model_unavailable"


class InvalidQuery(SimilarityError):
    code = "invalid_query"


class InvalidImageQuery(InvalidQuery):
    """The uploaded bytes are not an acceptable image (format, pixels, truncation...)."""

    code = "invalid_image"


class UploadsBusy(SimilarityError):
    """Every upload decode slot of this process stayed busy for the whole wait."""

    code = "uploads_busy"


class InvalidDecision(SimilarityError):
    """A review decision on a match run that cannot be recorded (unknown photo or article,
    a decision that is not one of the choices); the message names the offending value."""

    code = "invalid_decision"


class BuildAlreadyRunning(SimilarityError):
    code = "build_already_running"

    def __init__(self, running_id: int | None) -> None:
        super().__init__(f"another index build is running (#{running_id})")
        self.running_id = running_id


class BuildTakenOver(SimilarityError):
    code = "build_taken_over"

    def __init__(self, build_id: int) -> None:
        super().__init__(
            f"build #{build_id} was marked failed by another process (no heartbeat or no "
            "progress for BUILD_STALE_SECONDS); it stopped"
        )
        self.build_id = build_id


class BuildFailed(Exception):
    """A build could not complete; the message is for the shop's engineer."""


class ImageUrlFailed(InvalidQuery):
    """An ``image_url`` query could not be fetched or is not an acceptable image.

    ``reason`` may name hosts, addresses and ports (connection refused, a refused private
    address): the API shows it to signed-in clients only (catalog.selectors
    .public_download_error), anonymous ones read ``public_message()``.
    """

    code = "image_url_failed"

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"image_url {url!r} could not be used: {reason}")
        self.url = url
        self.reason = reason

    def public_message(self, reason: str) -> str:
        return f"image_url {self.url!r} could not be used: {reason}"


class TaskQueueUnavailable(SimilarityError):
    """The task queue's broker (Redis, or the database) refused a task: nothing was queued."""

    code = "task_queue_unavailable"


class QueryThrottled(SimilarityError):
    """A batch item that would fetch an image_url beyond the upload throttle's budget."""

    code = "throttled"


class InvalidInput(InvalidQuery):
    """Input that failed validation at the edge, kept as a value (a batch item's error)."""

    code = "invalid_input"

    def __init__(self, message: str, *, fields: dict | None = None) -> None:
        super().__init__(message)
        self.fields = fields or {}
