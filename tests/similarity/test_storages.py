"""Images and index builds through Django storages: a shared directory, a non-local storage,
the published build as a database row, and a web process's cache of it."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, InMemoryStorage, default_storage
from django.db import connection

from catalog.models import Article
from catalog.services.images import STAGING_DIR
from demo.sample_images import product_image
from similarity.conf import similarity_settings
from similarity.engine.index import current_build
from similarity.models import CurrentIndex, IndexBuild
from similarity.selectors.store import IndexStore, current_index_name, get_store
from similarity.services.builds.runs import index_build_run
from similarity.storages import (
    build_fetch,
    build_upload,
    cached_builds_prune,
    index_storage,
    index_storage_is_local,
    stored_build_names,
    stored_builds_prune,
)
from tests.similarity.helpers import make_catalog, store_image

pytestmark = pytest.mark.django_db

FS = "django.core.files.storage.FileSystemStorage"


def build(**kwargs) -> IndexBuild:
    result = index_build_run(model="classic", progress=False, **kwargs)
    assert result.status in (IndexBuild.Status.SUCCEEDED, IndexBuild.Status.UNCHANGED), result.error
    return result


@pytest.fixture
def shared(settings, tmp_path: Path) -> Path:
    """Images and builds in a directory standing for a volume every node mounts."""
    root = tmp_path / "shared"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": FS, "OPTIONS": {"location": root / "media"}},
        "indexes": {"BACKEND": FS, "OPTIONS": {"location": root / "index"}},
    }
    settings.LOOKALIKE = {**settings.LOOKALIKE, "INDEX_CHECK_SECONDS": 0}
    return root


def test_default_index_storage_is_the_data_dir_and_builds_serve_in_place(settings):
    make_catalog(4)
    result = build()
    assert index_storage_is_local()
    assert Path(index_storage().location) == Path(settings.DATA_DIR) / "index"
    assert current_index_name() == result.build_name  # the database fact, also when local
    assert CurrentIndex.objects.get().build_id == result.pk
    store = get_store()
    assert not store.shared
    assert store.get().path == similarity_settings().index_root / "builds" / result.build_name
    assert not similarity_settings().index_cache_root.exists()


def test_images_and_builds_go_to_the_shared_directory(shared, settings):
    articles = make_catalog(5)
    image = articles[0].image.name
    assert (shared / "media" / image).is_file()
    assert not (Path(settings.MEDIA_ROOT) / image).exists()

    result = build()  # the embedder reads the images through the storage

    assert result.embedded_count == 5
    assert stored_build_names(storage=index_storage()) == [result.build_name]
    assert {p.name for p in (shared / "index" / "builds" / result.build_name).iterdir()} == {
        "index.faiss", "members.npy", "manifest.json"}
    assert current_index_name() == result.build_name


def test_a_web_process_fetches_caches_and_swaps_published_builds(shared):
    make_catalog(6)
    first = build().build_name
    store = get_store()
    assert store.shared
    cache = similarity_settings().index_cache_root
    loaded = store.get()
    assert (loaded.name, loaded.path) == (first, cache / first)
    assert loaded.index.ntotal == 6

    make_catalog(2, start=6)
    second = build().build_name
    assert store.get().name == second and store.get().index.ntotal == 8
    make_catalog(1, start=8)
    third = build().build_name
    assert store.get().name == third
    # The cache keeps the served build and the one before (requests may still hold it).
    assert sorted(p.name for p in cache.iterdir()) == [second, third]


def test_the_hot_path_makes_no_query_between_checks(shared, django_assert_num_queries):
    make_catalog(3)
    build()
    store = IndexStore(similarity_settings().index_root, shared=True, check_seconds=3600)
    first = store.get()
    with django_assert_num_queries(0):
        for _ in range(100):
            assert store.get() is first


def test_a_failed_fetch_keeps_serving_the_old_build_and_retries(shared, caplog):
    make_catalog(3)
    good = build().build_name
    store = get_store()
    assert store.get().name == good
    CurrentIndex.objects.update(build_name="20990101T000000000000Z-missing")

    with caplog.at_level(logging.ERROR, logger="similarity.selectors.store"):
        assert store.get().name == good
    assert "the published one is unavailable" in caplog.text
    assert "no complete build '20990101T000000000000Z-missing'" in caplog.text

    CurrentIndex.objects.update(build_name=good)
    make_catalog(1, start=3)
    newer = build().build_name
    assert store.get().name == newer


def test_a_half_uploaded_build_is_never_fetched(tmp_path: Path):
    storage = FileSystemStorage(location=tmp_path / "store")
    storage.save("builds/B1/index.faiss", ContentFile(b"partial"))  # no manifest: incomplete

    with pytest.raises(FileNotFoundError, match="no complete build 'B1'"):
        build_fetch(storage=storage, name="B1", cache_dir=tmp_path / "cache")
    assert stored_build_names(storage=storage) == []
    assert not (tmp_path / "cache" / "B1").exists()


def test_builds_round_trip_through_a_non_local_storage(settings, tmp_path: Path):
    """InMemoryStorage stands for S3: no paths, only save/open/listdir/delete."""
    make_catalog(4)
    build()
    info = current_build(similarity_settings().index_root)
    storage = InMemoryStorage()
    assert not index_storage_is_local(storage)

    assert build_upload(storage=storage, build_path=info.path) is True
    assert build_upload(storage=storage, build_path=info.path) is False  # already complete
    fetched = build_fetch(storage=storage, name=info.name, cache_dir=tmp_path / "cache")

    for name in ("index.faiss", "members.npy", "manifest.json"):
        assert (fetched / name).read_bytes() == (info.path / name).read_bytes()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [info.name]  # no temp left


def test_storage_pruning_keeps_the_newest_and_the_current(tmp_path: Path):
    storage = FileSystemStorage(location=tmp_path / "store")
    for name in ("B1", "B2", "B3", "B4"):
        for file_name in ("index.faiss", "manifest.json"):
            storage.save(f"builds/{name}/{file_name}", ContentFile(b"x"))

    removed = stored_builds_prune(storage=storage, keep=2, current="B1")  # rolled back to B1

    assert removed == ["B2"]
    assert stored_build_names(storage=storage) == ["B1", "B3", "B4"]
    assert not (tmp_path / "store" / "builds" / "B2").exists()


def test_a_builder_on_another_machine_starts_from_the_published_build(shared, settings, tmp_path):
    make_catalog(5)
    published = build().build_name
    settings.DATA_DIR = tmp_path / "other-worker"  # same database and storage, empty disk
    settings.DATA_DIR.mkdir()

    again = build()

    assert (again.mode, again.build_name) == ("unchanged", published)
    make_catalog(1, start=5)
    assert build().mode == "incremental"  # updated from the fetched build, not rebuilt


class OverwritingMemoryStorage(InMemoryStorage):
    """Stands for S3 with file_overwrite=True: saving an existing name replaces it."""

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return name


def test_images_through_a_non_local_storage(settings):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "tests.similarity.test_storages.OverwritingMemoryStorage"}}
    article = make_catalog(2)[0]
    name = article.image.name
    assert default_storage.exists(name)

    store_image(article, product_image(99, size=64))  # replaced under the same name

    assert Article.objects.get(pk=article.pk).image.name == name
    assert build().embedded_count == 2  # the embedder reads bytes through the storage
    staging = Path(settings.DATA_DIR) / STAGING_DIR
    assert not [p for p in staging.rglob("*") if p.is_file()]  # temp files uploaded, gone


def test_a_storage_that_renames_instead_of_replacing_is_refused(settings):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.InMemoryStorage"}}
    article = make_catalog(1)[0]
    before = default_storage.open(article.image.name).read()

    with pytest.raises(OSError, match="configure it to overwrite files"):
        store_image(article, product_image(99, size=64))

    assert default_storage.open(article.image.name).read() == before
    assert default_storage.listdir(str(Path(article.image.name).parent))[1] == [
        Path(article.image.name).name]  # the renamed copy was removed


class GatedStorage(FileSystemStorage):
    """A shared directory whose reads wait for ``release`` once ``gate`` is armed: a slow fetch."""

    gate = threading.Event()
    entered = threading.Event()
    release = threading.Event()

    def open(self, name: str, mode: str = "rb"):  # type: ignore[override]
        if self.gate.is_set():
            self.entered.set()
            assert self.release.wait(30), "the test never released the fetch"
        return super().open(name, mode)


@pytest.mark.django_db(transaction=True)  # the fetching thread reads on its own connection
def test_requests_keep_the_old_build_while_a_new_one_is_fetched(shared, settings):
    settings.STORAGES = {**settings.STORAGES, "indexes": {
        "BACKEND": "tests.similarity.test_storages.GatedStorage",
        "OPTIONS": {"location": shared / "index"}}}
    GatedStorage.gate.clear(), GatedStorage.entered.clear(), GatedStorage.release.clear()
    make_catalog(4)
    old = build().build_name
    store = get_store()
    assert store.get().name == old
    make_catalog(1, start=4)
    new = build().build_name
    GatedStorage.gate.set()
    def fetch() -> None:
        try:
            store.get()
        finally:
            connection.close()

    fetcher = threading.Thread(target=fetch)
    fetcher.start()
    try:
        assert GatedStorage.entered.wait(30)  # the fetcher is mid-download, holding the lock
        for _ in range(50):
            assert store.get().name == old  # other requests neither wait nor see a half build
    finally:
        GatedStorage.release.set()
        fetcher.join(30)
    assert store.get().name == new


def test_cache_pruning_removes_dead_fetches_but_not_live_ones(tmp_path: Path):
    cache = tmp_path / "cache"
    for name in ("B1", "B2", "B3", ".tmp-B4-1-dead", ".tmp-B4-2-live"):
        (cache / name).mkdir(parents=True)
    old = time.time() - 2 * 3600
    os.utime(cache / ".tmp-B4-1-dead", (old, old))

    removed = cached_builds_prune(cache_dir=cache, keep={"B2", "B3"})

    assert removed == ["B1"]
    assert sorted(p.name for p in cache.iterdir()) == [".tmp-B4-2-live", "B2", "B3"]
