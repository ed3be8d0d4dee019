"""The Lookalike server as the client talks to it: the index's model, its file, vector batches."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

BATCH_ITEMS = 64  # the server's POST /api/similar/batch/ limit
TIMEOUT = 120.0

MSG_HTTP = "{method} {url} answered {status}: {detail}"
MSG_CHECKSUM = "the model downloaded from {url} has sha256 {found}, not {expected}; try again"


class ClientError(RuntimeError):
    """The server cannot be used for this run (unreachable, refused, no client model)."""


class ModelChanged(ClientError):
    """The server's model is no longer the one this run embeds with: vectors would be wrong."""

    def __init__(self, *, expected: str, found: str) -> None:
        super().__init__(
            f"the server's model changed under this run: it was {expected!r}, it is now "
            f"{found!r}; the rows written so far are kept, run the same command again to "
            "resume with the new model"
        )
        self.expected = expected
        self.found = found


@dataclass(frozen=True)
class ServerModel:
    """GET /api/index/client/: what this client needs to embed as the server does."""

    model: str
    model_identity: str
    dimension: int
    kind: str  # onnx or classic
    image_size: int | None
    preprocessing: dict[str, Any] | None
    same_threshold: float
    similar_threshold: float
    max_k: int
    file: dict[str, Any] | None
    etag: str


class Server:
    """One server, one token, one HTTP session (keep-alive)."""

    def __init__(self, url: str, *, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Token {token}"

    def close(self) -> None:
        self.session.close()

    def model(self) -> ServerModel:
        """The index's client model; ClientError with the server's reason if there is none."""
        response = self._request("GET", "/api/index/client/")
        body = response.json()
        return ServerModel(
            model=body["model"], model_identity=body["model_identity"],
            dimension=int(body["dimension"]), kind=body["kind"], image_size=body["image_size"],
            preprocessing=body["preprocessing"], same_threshold=float(body["duplicate_threshold"]),
            similar_threshold=float(body["similar_threshold"]), max_k=int(body["max_k"]),
            file=body["file"], etag=response.headers.get("ETag", ""),
        )

    def download(self, url: str, *, target: Path, sha256: str) -> Path:
        """The file at ``url`` saved to ``target`` (temp file + rename) once its sha256 is
        ``sha256``; ClientError otherwise, leaving nothing behind."""
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.part")
        digest = hashlib.sha256()
        try:
            with self.session.get(url, stream=True, timeout=TIMEOUT) as response:
                _raise_for(response, "GET", url)
                with temporary.open("wb") as handle:
                    for chunk in response.iter_content(1 << 20):
                        digest.update(chunk)
                        handle.write(chunk)
            if digest.hexdigest() != sha256:
                raise ClientError(MSG_CHECKSUM.format(url=url, found=digest.hexdigest(),
                                                      expected=sha256))
            temporary.replace(target)
        finally:
            temporary.unlink(missing_ok=True)
        return target

    def similar_vectors(self, vectors: list[list[float]], *, model_identity: str,
                        k: int) -> list[dict[str, Any]]:
        """One answer per vector (``{"status", "results"}`` or ``{"status", "error"}``)."""
        answers: list[dict[str, Any]] = []
        for start in range(0, len(vectors), BATCH_ITEMS):
            items = [{"vector": vector, "model": model_identity}
                     for vector in vectors[start:start + BATCH_ITEMS]]
            response = self._request("POST", "/api/similar/batch/",
                                     json={"items": items, "k": k})
            answers += response.json()["results"]
        return answers

    def similar_upload(self, data: bytes, *, name: str, k: int) -> dict[str, Any]:
        """POST /api/similar/ with the photo itself (``--verify``): the server embeds it and
        verifies it when it has a verification stage (``verify=true``)."""
        response = self._request("POST", "/api/similar/", files={"image": (name, data)},
                                 data={"k": str(k), "verify": "true"})
        body: dict[str, Any] = response.json()
        return body

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.url}{path}"
        try:
            response = self.session.request(method, url, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as error:
            raise ClientError(f"{method} {url} failed: {error}") from error
        _raise_for(response, method, url)
        return response


def _raise_for(response: requests.Response, method: str, url: str) -> None:
    if response.status_code < 400:
        return
    try:
        detail = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        detail = response.text[:200] or response.reason
    raise ClientError(MSG_HTTP.format(method=method, url=url, status=response.status_code,
                                      detail=detail))
