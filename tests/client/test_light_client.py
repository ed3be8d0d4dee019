"""The light client (client/) against a live server on 127.0.0.1: its report equals
``manage.py match_images``'s, its vectors the server's; refusals, resuming, --verify.

On ``../shared/realphotos/grocery`` (skipped with the reason when absent) with the real
efficientnet-lite0: vectors cosine >= 0.99999 per photo and the same report.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from lookalike_client import ModelChanged, Server, local_model, match_photos
from lookalike_client.cli import main as client_main
from lookalike_core.images import image_decode_reduced
from lookalike_core.imaging import to_rgb
from rest_framework.authtoken.models import Token

from catalog.models import Article
from catalog.services.images import article_image_store
from demo.sample_images import product_image
from similarity.selectors.search import image_query_vector
from similarity.selectors.store import get_store
from similarity.services.builds.runs import index_build_run
from similarity.services.matching.photos import supplier_photos_match
from tests.similarity.engine.tiny_models import build_tiny_clip
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
GROCERY = Path(os.environ.get("LOOKALIKE_REALPHOTOS") or ROOT.parent / "shared" / "realphotos"
               ) / "grocery"


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("client-clip") / "clip")


@pytest.fixture
def token(db) -> str:
    staff = get_user_model().objects.create_user("supplier-desk", password="pw-1",
                                                 is_staff=True)
    return Token.objects.create(user=staff).key


def supplier_folder(tmp_path: Path, seeds: range) -> Path:
    folder = tmp_path / "supplier"
    (folder / "sub").mkdir(parents=True)
    for seed in seeds:
        # Resized and recompressed copies of catalog photos, and two other products.
        product_image(seed, size=110).resize((120 + seed, 100)).save(
            folder / ("sub" if seed % 2 else "") / f"p{seed}.jpg", quality=80)
    (folder / "broken.png").write_bytes(b"not a picture")
    return folder


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def assert_same_report(mine: Path, theirs: Path, *, tolerance: float = 1e-5) -> None:
    """Same header, refs, verdicts, articles and errors; distances within ``tolerance``."""
    a, b = read_csv(mine), read_csv(theirs)
    assert a[0] == b[0] and len(a) == len(b)
    header = a[0]
    for row_a, row_b in zip(a[1:], b[1:], strict=True):
        for name, cell_a, cell_b in zip(header, row_a, row_b, strict=True):
            if name.startswith("distance_") and cell_a and cell_b:
                assert abs(float(cell_a) - float(cell_b)) <= tolerance, (row_a, row_b)
            else:
                assert cell_a == cell_b, (name, row_a, row_b)


@pytest.mark.parametrize("model", ["classic", "tiny-clip"])
def test_client_report_equals_match_images(live_server, token, tmp_path, tiny_clip, model):
    make_catalog(10)
    index_build_run(model="classic" if model == "classic" else str(tiny_clip), progress=False)
    folder = supplier_folder(tmp_path, range(4, 14))
    supplier_photos_match(source=folder, output=tmp_path / "server.csv", k=3, progress=False)

    summary = match_photos(folder, server=live_server.url, token=token,
                           output=tmp_path / "client.csv", k=3, batch_size=4,
                           cache_dir=tmp_path / "cache", progress=False)

    assert_same_report(tmp_path / "client.csv", tmp_path / "server.csv")
    assert summary.failed == 1 and summary.uploaded == 0 and summary.photos == 11
    if model == "tiny-clip":  # the model was fetched once, by checksum, into the cache
        assert len(list((tmp_path / "cache").glob("*.onnx"))) == 1


def test_client_vectors_equal_the_servers(live_server, token, tmp_path, tiny_clip):
    make_catalog(12)
    index_build_run(model=str(tiny_clip), progress=False)
    model = local_model(Server(live_server.url, token=token), cache_dir=tmp_path)
    images = [product_image(seed, size=90).resize((90 + 7 * seed, 80)) for seed in range(6)]
    mine = model.embed(images)
    loaded = get_store().get()
    theirs = np.stack([image_query_vector(loaded, image) for image in images])
    assert (mine * theirs).sum(axis=1).min() >= 0.99999


def test_a_rerun_resumes_and_a_changed_model_is_refused(live_server, token, tmp_path,
                                                        tiny_clip, monkeypatch):
    make_catalog(10)
    index_build_run(model=str(tiny_clip), progress=False)
    folder = supplier_folder(tmp_path, range(4, 8))
    report = tmp_path / "client.csv"
    first = match_photos(folder, server=live_server.url, token=token, output=report, k=2,
                         cache_dir=tmp_path / "cache", progress=False)
    again = match_photos(folder, server=live_server.url, token=token, output=report, k=2,
                         cache_dir=tmp_path / "cache", progress=False)
    assert first.photos == 5 and again.already_done == 4 and again.photos == 1  # the error

    # The server's model changes under a running client: it stops, keeping its rows.
    stale = local_model(Server(live_server.url, token=token), cache_dir=tmp_path / "cache")
    index_build_run(model="classic", full=True, progress=False)
    monkeypatch.setattr("lookalike_client.match.local_model", lambda *a, **kw: stale)
    with pytest.raises(ModelChanged, match="changed under this run"):
        match_photos(supplier_folder(tmp_path / "more", range(20, 24)), server=live_server.url,
                     token=token, output=tmp_path / "other.csv", k=2, progress=False)


def test_cli_writes_the_report_and_verify_uploads_only_similar_photos(
    live_server, token, tmp_path, capsys
):
    make_catalog(10)
    index_build_run(model="classic", progress=False)
    folder = supplier_folder(tmp_path, range(4, 9))
    output = tmp_path / "report.jsonl"
    code = client_main(["match", str(folder), "--server", live_server.url, "--token", token,
                        "--output", str(output), "--k", "2", "--no-progress",
                        "--cache-dir", str(tmp_path / "cache"), "--verify"])
    out = capsys.readouterr()
    assert code == 2  # one row failed (broken.png), as match_images exits
    assert "broken: " in out.err and "uploaded" in out.out
    assert len(output.read_text().splitlines()) == 6


def test_cli_refuses_a_server_without_a_token_clearly(live_server, tmp_path, capsys):
    make_catalog(4)
    index_build_run(model="classic", progress=False)
    code = client_main(["match", str(supplier_folder(tmp_path, range(1))), "--server",
                        live_server.url, "--output", str(tmp_path / "r.csv"), "--no-progress"])
    assert code == 1
    assert "/api/index/client/ answered 40" in capsys.readouterr().err


@pytest.fixture
def grocery() -> Path:
    if not (GROCERY / "labels.csv").is_file():
        pytest.skip(f"{GROCERY} is absent (set LOOKALIKE_REALPHOTOS to the realphotos folder)")
    return GROCERY


@pytest.mark.slow
def test_real_photos_client_equals_server(live_server, token, tmp_path, grocery):
    with (grocery / "labels.csv").open(newline="") as handle:
        labels = list(csv.DictReader(handle))
    images = grocery / "images"
    for row in labels:
        if row["kind"] == "packshot":
            article = Article.objects.create(article_id=row["product"],
                                             image_url=f"https://shop.example/{row['image_file']}")
            article_image_store(article=article, data=(images / row["image_file"]).read_bytes())
    index_build_run(model="efficientnet-lite0", progress=False)
    folder = tmp_path / "supplier"
    folder.mkdir()
    photos = [row["image_file"] for row in labels if row["kind"] == "store_photo"][:120]
    for name in photos:
        (folder / name).symlink_to(images / name)

    supplier_photos_match(source=folder, output=tmp_path / "server.csv", k=5, progress=False)
    match_photos(folder, server=live_server.url, token=token, output=tmp_path / "client.csv",
                 k=5, cache_dir=tmp_path / "cache", progress=False)
    assert_same_report(tmp_path / "client.csv", tmp_path / "server.csv", tolerance=1e-4)

    model = local_model(Server(live_server.url, token=token), cache_dir=tmp_path / "cache")
    loaded = get_store().get()
    for name in photos[:40]:
        image = to_rgb(image_decode_reduced((images / name).read_bytes(), max_pixels=64_000_000,
                                            min_side=model.image_size))
        mine = model.embed([image])[0]
        theirs = image_query_vector(loaded, image)
        assert float(mine @ theirs) >= 0.99999, name
