"""Match runs from the admin: upload -> django-q2 task (sync) -> review page, export; safe zips."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from lookalike_core.sources import MatchSourceError, zip_extract_safe

from similarity.models import MatchRun
from similarity.selectors.matching import (
    REVIEW_COLUMNS,
    match_run_rows,
    match_run_thumbnail_name,
)
from similarity.services.builds.runs import index_build_run
from similarity.services.matching.runs import match_run_create
from tests.similarity.helpers import make_catalog
from tests.similarity.services.matching.test_photos import near_copy, unrelated

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog() -> list:
    articles = make_catalog(12, size=160)
    index_build_run(model="classic", progress=False)
    return articles


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def upload(admin_client, name: str, data: bytes, callbacks) -> MatchRun:
    with callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:similarity_matchrun_add"),
            {"upload": SimpleUploadedFile(name, data), "k": 3},
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    run = MatchRun.objects.get()
    assert response["Location"] == reverse("admin:similarity_matchrun_review", args=[run.pk])
    return run


def test_zip_upload_runs_as_a_task_and_the_review_page_lists_it(
    admin_client, catalog, settings, django_capture_on_commit_callbacks
):
    data = zip_bytes({"shoes/copy-3.jpg": near_copy(3), "noise.jpg": unrelated(2),
                      "broken.jpg": b"not an image", "readme.txt": b"ignored"})
    run = upload(admin_client, "supplier.zip", data, django_capture_on_commit_callbacks)
    run.refresh_from_db()
    assert run.status == MatchRun.Status.SUCCEEDED, run.error
    assert (run.same_count, run.similar_count, run.new_count, run.error_count) == (
        1, 0, 1, 1)
    assert run.created_by == "admin" and run.model == "classic" and run.task_id
    folder = Path(settings.DATA_DIR) / "matching" / run.folder  # the default storage
    assert (folder / run.report_file).is_file() and (folder / "source.zip").is_file()
    name = match_run_thumbnail_name(run=run, supplier_ref="shoes/copy-3")
    assert (folder / "thumbnails" / name).is_file()
    assert not (Path(settings.DATA_DIR) / "matching-work" / run.folder).exists()  # cleaned up

    review = reverse("admin:similarity_matchrun_review", args=[run.pk])
    page = admin_client.get(review).content.decode()
    assert page.count('class="match-row"') == 3
    thumbnail_url = reverse("admin:similarity_matchrun_thumbnail", args=[run.pk, name])
    assert thumbnail_url in page
    served = admin_client.get(thumbnail_url)
    assert served.status_code == 200 and served["Content-Type"] == "image/jpeg"
    assert b"".join(served.streaming_content)[:2] == b"\xff\xd8"
    copy_of = catalog[3]
    assert reverse("admin:catalog_article_change", args=[copy_of.pk]) in page
    assert copy_of.image.url in page

    same = admin_client.get(review, {"verdict": "same"}).content.decode()
    assert same.count('class="match-row"') == 1 and "shoes/copy-3" in same
    assert "noise" not in same.split('id="match-results"')[1]

    export = admin_client.get(review, {"verdict": "new", "export": "csv"})
    assert export["Content-Type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert rows[0][:3] == ["supplier_ref", "verdict", "match_1"]
    assert [row[:2] for row in rows[1:]] == [["noise", "new"]]

    changelist = admin_client.get(reverse("admin:similarity_matchrun_changelist"))
    assert "1 / 0 / 1 / 1" in changelist.content.decode()
    detail = admin_client.get(reverse("admin:similarity_matchrun_change", args=[run.pk]))
    assert detail.status_code == 200 and b'name="status"' not in detail.content  # read-only

    response = admin_client.post(reverse("admin:similarity_matchrun_delete", args=[run.pk]),
                                 {"post": "yes"})
    assert response.status_code == 302 and not MatchRun.objects.exists()
    assert not folder.exists()


def test_feed_upload_keeps_extra_columns(
    admin_client, catalog, loopback, django_capture_on_commit_callbacks
):
    url = loopback.add("/p.jpg", near_copy(7))
    data = f"supplier_ref,image_url,price\nP-7,{url},12.50\nGONE,{loopback.url('/x')},1\n"
    run = upload(admin_client, "feed.csv", data.encode(), django_capture_on_commit_callbacks)
    run.refresh_from_db()
    assert run.status == MatchRun.Status.SUCCEEDED
    assert (run.same_count, run.error_count) == (1, 1)
    export = admin_client.get(reverse("admin:similarity_matchrun_review", args=[run.pk]),
                              {"export": "csv"})
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    extra = -1 - len(REVIEW_COLUMNS)  # the review's columns come last
    assert rows[0][extra] == "price" and rows[1][0] == "P-7" and rows[1][extra] == "12.50"
    assert rows[1][2] == catalog[7].article_id


def test_wrong_upload_type_is_refused_on_the_form(admin_client, catalog):
    response = admin_client.post(reverse("admin:similarity_matchrun_add"),
                                 {"upload": SimpleUploadedFile("x.pdf", b"%PDF"), "k": 5})
    assert response.status_code == 200
    assert "upload a supplier feed" in response.content.decode()
    assert not MatchRun.objects.exists()


def test_a_zip_that_climbs_out_fails_the_run_and_writes_nothing_outside(
    admin_client, catalog, settings, tmp_path, django_capture_on_commit_callbacks
):
    data = zip_bytes({"ok.jpg": near_copy(1), "../../escaped.jpg": near_copy(2)})
    run = upload(admin_client, "evil.zip", data, django_capture_on_commit_callbacks)
    run.refresh_from_db()
    assert run.status == MatchRun.Status.FAILED
    assert "'../../escaped.jpg' would be written outside the folder" in run.error
    assert not list(Path(settings.DATA_DIR).rglob("escaped.jpg"))
    assert not (Path(settings.DATA_DIR) / "matching-work" / run.folder / "photos").exists()
    page = admin_client.get(reverse("admin:similarity_matchrun_review", args=[run.pk]))
    assert "would be written outside" in page.content.decode()


@pytest.mark.parametrize("name", ["/etc/evil.jpg", "a/../../evil.jpg", "C:/evil.jpg"])
def test_zip_entries_outside_the_folder_are_refused(tmp_path, name):
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({name: b"x"}))
    with pytest.raises(MatchSourceError, match="outside the folder"):
        zip_extract_safe(archive=archive, destination=tmp_path / "out", max_files=10,
                         max_bytes=1000)
    assert not (tmp_path / "out").exists()


def test_zip_symlinks_and_limits_are_refused(tmp_path):
    link = zipfile.ZipInfo("link.jpg")
    link.external_attr = 0o120777 << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr(link, "/etc/passwd")
    archive = tmp_path / "a.zip"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(MatchSourceError, match="symbolic link"):
        zip_extract_safe(archive=archive, destination=tmp_path / "o", max_files=10,
                         max_bytes=1000)

    archive.write_bytes(zip_bytes({f"{i}.jpg": b"x" for i in range(4)}))
    with pytest.raises(MatchSourceError, match="more than 3 files"):
        zip_extract_safe(archive=archive, destination=tmp_path / "o", max_files=3,
                         max_bytes=1000)

    archive.write_bytes(zip_bytes({"a.jpg": b"x" * 600, "b.jpg": b"y" * 600}))
    with pytest.raises(MatchSourceError, match="more than 1000 bytes"):
        zip_extract_safe(archive=archive, destination=tmp_path / "o", max_files=10,
                         max_bytes=1000)
    assert not (tmp_path / "o").exists()

    archive.write_bytes(b"PK not really")
    with pytest.raises(MatchSourceError, match="not a readable zip"):
        zip_extract_safe(archive=archive, destination=tmp_path / "o", max_files=10,
                         max_bytes=1000)

    archive.write_bytes(zip_bytes({"dir/a.jpg": b"x", "b.jpg": b"y"}))
    assert zip_extract_safe(archive=archive, destination=tmp_path / "o", max_files=10,
                            max_bytes=1000) == 2
    assert (tmp_path / "o" / "dir" / "a.jpg").read_bytes() == b"x"


def test_run_without_an_index_fails_with_the_reason(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = match_run_create(upload=SimpleUploadedFile("f.csv", b"supplier_ref,image_url\n"))
    run.refresh_from_db()
    assert run.status == MatchRun.Status.FAILED and "no index has been built" in run.error


def test_supplier_thumbnails_are_refused_to_anonymous_clients_by_any_name(
    admin_client, client, catalog, settings, django_capture_on_commit_callbacks
):
    """Issue 18, item 2: no public URL, no guessable name; only staff who may view runs."""
    import hashlib

    from django.contrib.auth import get_user_model

    data = zip_bytes({"SKU-0001.jpg": near_copy(3)})
    run = upload(admin_client, "supplier.zip", data, django_capture_on_commit_callbacks)
    run.refresh_from_db()
    name = match_run_thumbnail_name(run=run, supplier_ref="SKU-0001")
    guessable = hashlib.sha256(b"SKU-0001").hexdigest()[:32] + ".jpg"
    assert name != guessable and run.folder.startswith(f"{run.pk}-") and len(run.folder) > 20
    real = reverse("admin:similarity_matchrun_thumbnail", args=[run.pk, name])
    assert admin_client.get(real).status_code == 200

    old = f"/{settings.MEDIA_URL.strip('/')}/matching/{run.pk}/{guessable}"
    assert client.get(old).status_code == 404  # nothing under MEDIA_ROOT any more
    refused = client.get(real)
    assert refused.status_code == 302 and reverse("admin:login") in refused["Location"]
    assert not list(Path(settings.MEDIA_ROOT).rglob("*.jpg")) or all(
        "matching" not in path.parts for path in Path(settings.MEDIA_ROOT).rglob("*.jpg"))

    staff = get_user_model().objects.create_user("clerk", password="pw", is_staff=True)
    client.force_login(staff)  # staff, but without the permission to view match runs
    assert client.get(real).status_code == 403
    for other in (guessable, "source.zip", "report.csv", name.upper()):
        assert admin_client.get(f"{real.rsplit('/', 1)[0]}/{other}").status_code == 404


@pytest.fixture
def shared(catalog, settings, tmp_path) -> Path:
    """Index builds and match runs in a directory every node mounts (docs/scaling.md)."""
    root = tmp_path / "shared"
    settings.STORAGES = {**settings.STORAGES, **{alias: {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": root / alias},
    } for alias in ("indexes", "matching")}}
    index_build_run(model="classic", progress=False)  # unchanged: published to the storage
    return root


def test_a_run_uploaded_on_one_node_runs_on_another_through_the_shared_storage(
    admin_client, shared, settings, tmp_path, django_capture_on_commit_callbacks
):
    """docs/scaling.md: web and worker nodes share the "matching" storage, not their disks."""
    from similarity.tasks import match_run_task

    with django_capture_on_commit_callbacks(execute=False):  # the web node: store and queue
        run = match_run_create(upload=SimpleUploadedFile(
            "photos.zip", zip_bytes({"copy-5.jpg": near_copy(5), "noise.jpg": unrelated(4)})))
    web_data = Path(settings.DATA_DIR)
    assert (shared / "matching" / run.folder / "source.zip").is_file()

    settings.DATA_DIR = tmp_path / "worker-node"  # another machine's disk, same storage
    settings.DATA_DIR.mkdir()
    assert match_run_task(run.pk) == MatchRun.Status.SUCCEEDED
    run.refresh_from_db()
    assert not (settings.DATA_DIR / "matching-work" / run.folder).exists()

    settings.DATA_DIR = web_data  # the web node reads the report and thumbnails back
    verdicts = {row.supplier_ref: row.verdict for row in match_run_rows(run=run)}
    assert verdicts == {"copy-5": "same", "noise": "new"}
    name = match_run_thumbnail_name(run=run, supplier_ref="copy-5")
    thumbnail = admin_client.get(reverse("admin:similarity_matchrun_thumbnail",
                                         args=[run.pk, name]))
    assert thumbnail.status_code == 200
    assert not (web_data / "matching").exists() and not (web_data / "matching-work").exists()


def test_a_retried_run_resumes_from_the_published_report(
    shared, settings, tmp_path, django_capture_on_commit_callbacks, monkeypatch
):
    """A worker that died after publishing part of the report: the next one (another node)
    keeps the rows already matched and matches the others."""
    from similarity.services.matching import runs
    from similarity.tasks import match_run_task

    with django_capture_on_commit_callbacks(execute=False):
        run = match_run_create(upload=SimpleUploadedFile("photos.zip", zip_bytes(
            {f"copy-{i}.jpg": near_copy(i) for i in range(4)})), k=2)
    settings.LOOKALIKE = {**settings.LOOKALIKE, "MATCH_BATCH_SIZE": 2}
    monkeypatch.setattr(runs, "REPORT_PUBLISH_SECONDS", 0.0)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the worker dies after the first batch was published

    batches = []
    real_done = runs._batch_done
    monkeypatch.setattr(runs, "_batch_done", lambda *a: (real_done(*a), batches.append(1),
                                                         killed() if len(batches) == 1 else 0))
    with pytest.raises(KeyboardInterrupt):
        match_run_task(run.pk)
    run.refresh_from_db()
    assert len(list(match_run_rows(run=run))) == 2  # the first batch reached the storage

    monkeypatch.setattr(runs, "_batch_done", real_done)
    settings.DATA_DIR = tmp_path / "other-node"
    settings.DATA_DIR.mkdir()
    matched = []
    real_match = runs.supplier_photos_match
    monkeypatch.setattr(runs, "supplier_photos_match",
                        lambda **kw: matched.append(real_match(**kw)) or matched[-1])
    assert match_run_task(run.pk) == MatchRun.Status.SUCCEEDED
    assert matched[0].already_done == 2  # resumed, not started over
    run.refresh_from_db()
    assert run.same_count == 4 and len(list(match_run_rows(run=run))) == 4


def test_a_failed_run_publishes_the_rows_it_matched(
    catalog, settings, django_capture_on_commit_callbacks, monkeypatch
):
    from similarity.services.matching import runs
    from similarity.tasks import match_run_task

    with django_capture_on_commit_callbacks(execute=False):
        run = match_run_create(upload=SimpleUploadedFile("photos.zip", zip_bytes(
            {f"copy-{i}.jpg": near_copy(i) for i in range(4)})), k=2)
    settings.LOOKALIKE = {**settings.LOOKALIKE, "MATCH_BATCH_SIZE": 2}
    monkeypatch.setattr(runs, "REPORT_PUBLISH_SECONDS", 3600.0)  # only the end publishes

    def broken(*args):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(runs, "_batch_done", broken)
    assert match_run_task(run.pk) == MatchRun.Status.FAILED
    run.refresh_from_db()
    assert "the database went away" in run.error
    assert [row.supplier_ref for row in match_run_rows(run=run)] == ["copy-0", "copy-1"]
