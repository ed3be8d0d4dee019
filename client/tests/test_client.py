"""The client in its own light environment (no Django, no torch), against a loopback HTTP
server that speaks the Lookalike client API (the product's own tests run it against the
real server: tests/client/)."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lookalike_client import ClientError, ModelChanged, match_photos
from lookalike_client.cli import main
from lookalike_core.classic import describe
from lookalike_core.vectors import l2_normalise
from PIL import Image

TOKEN = "t0ken"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}


def packshot(colour: tuple[int, int, int], size: tuple[int, int] = (120, 120)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    inner = Image.new("RGB", (size[0] // 2, size[1] // 2), colour)
    image.paste(inner, (size[0] // 4, size[1] // 4))
    return image


class Catalog:
    """The fake server's state: a classic index of three packshots."""

    def __init__(self) -> None:
        self.identity = "classic@v2"
        self.ids = list(COLOURS)
        self.vectors = l2_normalise(np.stack([describe(packshot(c)) for c in COLOURS.values()]))
        self.file: dict[str, Any] | None = None
        self.uploads = 0
        self.batches = 0

    def description(self) -> dict[str, Any]:
        return {"index_build": "b1", "model": "classic", "model_identity": self.identity,
                "dimension": int(self.vectors.shape[1]), "kind": "classic" if self.file is None
                else "onnx", "image_size": 128, "preprocessing": None,
                "duplicate_threshold": 0.05, "similar_threshold": 0.5, "max_k": 100,
                "file": self.file}

    def answer(self, item: dict[str, Any], k: int) -> dict[str, Any]:
        if item.get("model") != self.identity:
            return {"article_id": None, "status": 400,
                    "error": {"code": "invalid_query", "message": "another model"}}
        vector = np.asarray(item["vector"], dtype=np.float32)
        distances = 1.0 - self.vectors @ vector
        order = np.argsort(distances)[:k]
        return {"article_id": None, "status": 200, "results": [
            {"article_id": self.ids[i], "distance": max(0.0, float(distances[i]))}
            for i in order]}


def handler(catalog: Catalog) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") == f"Token {TOKEN}":
                return True
            self._send(401, {"error": {"code": "not_authenticated", "message": "no token"}})
            return False

        def do_GET(self) -> None:
            if not self._authorised():
                return
            if self.path == "/api/index/client/":
                self._send(200, catalog.description())
            elif self.path == "/api/index/client/model.onnx":
                self._send(200, b"not the model", "application/octet-stream")
            else:
                self._send(404, {"error": {"code": "not_found", "message": self.path}})

        def do_POST(self) -> None:
            if not self._authorised():
                return
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            if self.path == "/api/similar/batch/":
                catalog.batches += 1
                request = json.loads(body)
                self._send(200, {"model": "classic", "index_build": "b1", "results": [
                    catalog.answer(item, request["k"]) for item in request["items"]]})
            elif self.path == "/api/similar/":
                catalog.uploads += 1
                self._send(200, {"results": [{"article_id": "green", "distance": 0.01}]})

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Catalog]]:
    catalog = Catalog()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler(catalog))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", catalog
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    packshot(COLOURS["red"], (150, 150)).save(folder / "a-red.jpg", quality=90)
    packshot(COLOURS["blue"], (140, 160)).save(folder / "b-blue.png")
    Image.new("RGB", (100, 100), (120, 90, 30)).save(folder / "c-brown.png")
    (folder / "d-broken.jpg").write_bytes(b"nope")
    return folder


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_report_has_match_images_columns_verdicts_and_resumes(server, photos, tmp_path):
    url, catalog = server
    report = tmp_path / "report.csv"
    summary = match_photos(photos, server=url, token=TOKEN, output=report, k=2, batch_size=3,
                           progress=False)
    found = {row["supplier_ref"]: row for row in rows(report)}
    assert list(rows(report)[0])[:6] == ["supplier_ref", "verdict", "match_1", "distance_1",
                                         "inliers_1", "inlier_ratio_1"]
    # A JPEG moves the red photo's colours (0.31 away): similar; the PNG copy is the same.
    assert found["a-red"]["verdict"] == "similar" and found["a-red"]["match_1"] == "red"
    assert found["b-blue"]["verdict"] == "same" and found["b-blue"]["match_1"] == "blue"
    assert found["c-brown"]["verdict"] == "new"
    assert found["d-broken"]["verdict"] == "error" and found["d-broken"]["error"]
    assert summary.failed == 1 and summary.uploaded == 0 and catalog.uploads == 0
    again = match_photos(photos, server=url, token=TOKEN, output=report, k=2, progress=False)
    assert again.already_done == 3 and again.photos == 1  # only the error row is retried


def test_verify_uploads_only_similar_photos(server, photos, tmp_path):
    url, catalog = server
    report = tmp_path / "report.csv"
    plain = match_photos(photos, server=url, token=TOKEN, output=report, k=1, progress=False)
    assert plain.counts["similar"] == 1 and catalog.uploads == 0
    verified = match_photos(photos, server=url, token=TOKEN, output=tmp_path / "v.csv", k=1,
                            verify=True, progress=False)
    assert verified.uploaded == catalog.uploads == 1
    # The server's answer for the uploaded photo is the row's.
    assert {row["supplier_ref"]: row["match_1"] for row in rows(tmp_path / "v.csv")}[
        "a-red"] == "green"


def test_a_changed_model_is_refused_clearly(server, photos, tmp_path):
    url, catalog = server

    def swap(summary: object) -> None:
        catalog.identity = "clip-ViT-B-32@abc"

    with pytest.raises(ModelChanged, match="changed under this run"):
        match_photos(photos, server=url, token=TOKEN, output=tmp_path / "r.csv", k=1,
                     batch_size=1, progress=False, on_batch=swap)
    assert len(rows(tmp_path / "r.csv")) == 1  # the row written before the change stays


def test_a_model_file_with_the_wrong_checksum_is_refused_and_not_cached(server, photos,
                                                                        tmp_path):
    url, catalog = server
    catalog.file = {"url": f"{url}/api/index/client/model.onnx",
                    "sha256": hashlib.sha256(b"the real model").hexdigest(), "size": 14,
                    "runtime": "onnx", "input": "pixel_values", "output": "embedding"}
    with pytest.raises(ClientError, match="sha256"):
        match_photos(photos, server=url, token=TOKEN, output=tmp_path / "r.csv",
                     cache_dir=tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_cli_exit_codes(server, photos, tmp_path, capsys):
    url, _ = server
    output = tmp_path / "r.csv"
    assert main(["match", str(photos), "--server", url, "--token", TOKEN, "--output",
                 str(output), "--no-progress"]) == 2  # a row failed, as match_images
    assert "d-broken:" in capsys.readouterr().err
    assert main(["match", str(photos), "--server", url, "--token", "wrong", "--output",
                 str(tmp_path / "x.csv"), "--no-progress"]) == 1
    assert "answered 401" in capsys.readouterr().err


def test_the_client_is_light():
    code = ("import sys, lookalike_client, lookalike_client.cli; "
            "heavy = {'django', 'torch', 'transformers', 'scipy', 'similarity', 'catalog'} "
            "& {name.split('.')[0] for name in sys.modules}; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
    if os.environ.get("LOOKALIKE_CLIENT_LIGHT_VENV"):  # CI's own environment for the client
        assert importlib.util.find_spec("django") is None
        assert importlib.util.find_spec("torch") is None
