"""Fetch one image over HTTP(S): pooled session, retries, time and size limits, validation."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from lookalike_core.images import ImageValidationError, validate_image_bytes
from requests.adapters import HTTPAdapter
from urllib3.exceptions import DecodeError, MaxRetryError, ProtocolError, ReadTimeoutError
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util.retry import Retry

from catalog.services.addresses import GuardedAdapter, PrivateAddressError

logger = logging.getLogger(__name__)

ALLOWED_SCHEMES = ("http", "https")
RETRY_STATUSES = (429, 500, 502, 503, 504)
DEFAULT_BACKOFF_FACTOR = 0.5
RETRY_AFTER_CAP = 30.0  # seconds: a server's Retry-After never parks a worker for longer
DEADLINE_FACTOR = 6  # the body must arrive within timeout x this (stops slow trickles)
MAX_REDIRECTS = 5
CHUNK_SIZE = 64 * 1024


NOT_IMAGE_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")

MSG_SCHEME = "unsupported URL scheme {scheme!r}: only http and https are allowed"
MSG_HTTP = "HTTP {status} {reason}"
MSG_TIMEOUT = "timed out after {timeout}s"
MSG_DEADLINE = "too slow: exceeded the time limit of {limit:g}s for the whole image"
MSG_TOO_LARGE = "image too large: > {max_bytes} bytes"
MSG_NOT_IMAGE = "not an image ({content_type})"
MSG_CONNECTION = "connection failed: {error}"
MSG_INCOMPLETE = "incomplete body: {error}"


class ImageFetchError(Exception):
    """One image could not be fetched or is not acceptable; the message says why."""


class DownloadCancelled(Exception):
    """The batch is stopping (Ctrl-C); raised inside workers to abandon their download."""


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    format: str
    ext: str
    width: int
    height: int
    sha256: str




class _CappedRetry(Retry):
    """urllib3 Retry whose Retry-After wait is capped (Retry.new keeps the subclass)."""

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), RETRY_AFTER_CAP)


def download_session(
    *, workers: int, retries: int, backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
    allow_private: bool = False,
) -> requests.Session:
    """A Session shared by all workers: pooled connections, retries with backoff.

    Connection errors, read timeouts, 429 and 5xx are retried (``retries`` times, GET only);
    any other status, e.g. 404, is final. Redirects are followed (at most MAX_REDIRECTS).
    Unless ``allow_private``, every connection (each redirect hop's too) goes through
    ``GuardedAdapter``: loopback, private, link-local... addresses are refused at connect time.
    """
    retry = _CappedRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        backoff_factor=backoff_factor,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,  # hand back the last response so we report its status
        respect_retry_after_header=True,
    )
    adapter_class = HTTPAdapter if allow_private else GuardedAdapter
    adapter = adapter_class(pool_connections=32, pool_maxsize=workers, max_retries=retry)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.max_redirects = MAX_REDIRECTS
    # Images are already compressed; identity also rules out gzip bombs.
    session.headers.update(
        {"User-Agent": "Lookalike image downloader", "Accept": "image/*",
         "Accept-Encoding": "identity"}
    )
    return session


def fetch_image(
    session: requests.Session,
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    max_pixels: int,
    cancel: threading.Event | None = None,
    sink: Callable[[bytes], object] | None = None,
) -> FetchedImage:
    """GET ``url`` and return its bytes if they are an acceptable image; else ImageFetchError.

    Fetched as ``fetch_bytes`` fetches, then validated (every byte decoded, within
    ``max_pixels`` and the scan limit).
    """
    data, content_type = fetch_bytes(session, url, timeout=timeout, max_bytes=max_bytes,
                                     cancel=cancel, sink=sink)
    return _validated(data, content_type=content_type, max_pixels=max_pixels)


def fetch_bytes(
    session: requests.Session,
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    cancel: threading.Event | None = None,
    sink: Callable[[bytes], object] | None = None,
) -> tuple[bytes, str]:
    """GET ``url``: (its body, its content type), not decoded; ImageFetchError otherwise.

    For callers that decode the photo themselves, once, in their decode slots (API queries,
    supplier photos). ``timeout`` applies to connecting and to each read; the whole body must
    arrive within ``timeout * DEADLINE_FACTOR``, checked after every read (each returns
    whatever has arrived), so a trickling server is cut off at about that limit plus
    ``timeout``. The size limit is enforced while streaming (a declared Content-Length above
    it fails early, but is never trusted on its own). Each chunk is also handed to ``sink``
    (a temp file's write) as it arrives, when given.
    """
    _check_scheme(url)
    try:
        with session.get(url, stream=True, timeout=(timeout, timeout)) as response:
            content_type = _checked_response(response, max_bytes=max_bytes)
            data = _read_body(response, max_bytes=max_bytes,
                              body_timeout=timeout * DEADLINE_FACTOR, cancel=cancel, sink=sink)
    except (ImageFetchError, DownloadCancelled):
        raise
    except (PrivateAddressError, requests.exceptions.RequestException) as exc:
        raise _request_error(exc, timeout=timeout) from exc
    return data, content_type


def _checked_response(response: requests.Response, *, max_bytes: int) -> str:
    """The response's content type, once its scheme, status, type and declared size pass."""
    _check_scheme(response.url)
    if response.status_code != 200:
        raise ImageFetchError(
            MSG_HTTP.format(status=response.status_code, reason=response.reason or "").strip()
        )
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    if content_type.lower().startswith(NOT_IMAGE_TYPES):
        raise ImageFetchError(MSG_NOT_IMAGE.format(content_type=content_type))
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ImageFetchError(MSG_TOO_LARGE.format(max_bytes=max_bytes))
    return content_type


def _request_error(
    exc: PrivateAddressError | requests.exceptions.RequestException, *, timeout: float
) -> ImageFetchError:
    """What a failed request says to the shop: the reason, without the library's noise."""
    if isinstance(exc, PrivateAddressError):
        return ImageFetchError(str(exc))
    if isinstance(exc, requests.exceptions.Timeout):
        return ImageFetchError(MSG_TIMEOUT.format(timeout=timeout))
    if isinstance(exc, requests.exceptions.InvalidSchema):
        # "No connection adapters were found for 'ftp://...'" (a redirect to another scheme)
        target = str(exc).split("'")[1] if str(exc).count("'") >= 2 else ""
        return ImageFetchError(MSG_SCHEME.format(scheme=urlsplit(target).scheme))
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return ImageFetchError(f"more than {MAX_REDIRECTS} redirects")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return ImageFetchError(MSG_INCOMPLETE.format(error=_reason(exc)))
    if isinstance(exc, requests.exceptions.ConnectionError):
        if isinstance(_root(exc), ReadTimeoutError):  # a read timeout while streaming
            return ImageFetchError(MSG_TIMEOUT.format(timeout=timeout))
        return ImageFetchError(MSG_CONNECTION.format(error=_reason(exc)))
    return ImageFetchError(f"request failed: {exc}")


def _validated(data: bytes, *, content_type: str, max_pixels: int) -> FetchedImage:
    """``data`` as a FetchedImage once it validates as an image within ``max_pixels``."""
    try:
        info = validate_image_bytes(data, max_pixels=max_pixels)
    except ImageValidationError as exc:
        message = str(exc)
        if message.startswith("not an image") and content_type and not content_type.startswith(
            "image/"
        ):
            message = MSG_NOT_IMAGE.format(content_type=content_type)
        raise ImageFetchError(message) from exc
    return FetchedImage(
        data=data,
        format=info.format,
        ext=info.ext,
        width=info.width,
        height=info.height,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _read_body(
    response: requests.Response, *, max_bytes: int, body_timeout: float,
    cancel: threading.Event | None, sink: Callable[[bytes], object] | None = None,
) -> bytes:
    """Read the body, checking size, cancellation and the whole-body deadline after each read.

    ``raw.read1`` returns whatever has arrived (iter_content would block until a full chunk
    is in, which a trickling server can stretch out indefinitely). Content decoding is kept
    as iter_content does it (the session asks for identity anyway), and urllib3 errors are
    wrapped in the requests exceptions iter_content would raise.
    """
    deadline = time.monotonic() + body_timeout
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = _read_chunk(response)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise ImageFetchError(MSG_TOO_LARGE.format(max_bytes=max_bytes))
        if cancel is not None and cancel.is_set():
            raise DownloadCancelled
        if time.monotonic() > deadline:
            raise ImageFetchError(MSG_DEADLINE.format(limit=body_timeout))
        chunks.append(chunk)
        if sink is not None:
            sink(chunk)


def _read_chunk(response: requests.Response) -> bytes:
    """Whatever has arrived (up to CHUNK_SIZE); urllib3 errors as requests raises them."""
    try:
        return bytes(response.raw.read1(CHUNK_SIZE, decode_content=True))
    except ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from exc
    except DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except Urllib3SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc


def _check_scheme(url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise ImageFetchError(MSG_SCHEME.format(scheme=scheme))


def _root(exc: BaseException) -> BaseException:
    """The urllib3 cause inside a requests exception (MaxRetryError unwrapped)."""
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    if isinstance(inner, MaxRetryError) and inner.reason is not None:
        return inner.reason
    return inner


def _reason(exc: BaseException) -> str:
    text = str(_root(exc))
    # "HTTPConnection(host=..., port=...): Failed to establish ..." -> the part that matters
    return text.split("): ", 1)[1] if "): " in text else text
