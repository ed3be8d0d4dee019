"""Index builds: download + embed + index as one recorded, single-flight run."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from similarity.conf import similarity_settings
from similarity.engine.threads import fork_safe_threads, mark_openmp_used
from similarity.errors import BuildAlreadyRunning
from similarity.models import IndexBuild
from similarity.services.embeddings import embeddings_update
from similarity.services.indexing import collect_inputs, index_update

logger = logging.getLogger(__name__)

MSG_NOTHING_TO_INDEX = (
    "nothing to index: no active article has a downloaded, decodable image "
    "(run manage.py download_images first)"
)
HEARTBEAT_SECONDS = 10.0


class BuildFailed(Exception):
    """A build could not complete; the message is for the shop's engineer."""


def index_build_create(
    *,
    model: str | None = None,
    index_type: str | None = None,
    full: bool = False,
    download: bool = False,
    trigger: str = "shell",
) -> IndexBuild:
    """Record a queued build with its options (defaults from settings)."""
    conf = similarity_settings()
    return IndexBuild.objects.create(
        model=model or conf.model,
        index_type=index_type or conf.index_type,
        full=full,
        download=download,
        trigger=trigger,
    )


def index_build_enqueue(
    *,
    model: str | None = None,
    index_type: str | None = None,
    full: bool = False,
    download: bool = True,
    trigger: str = "api",
) -> IndexBuild:
    """Queue a background build (django-q2) once the surrounding transaction commits."""
    from django_q.tasks import async_task

    build = index_build_create(
        model=model, index_type=index_type, full=full, download=download, trigger=trigger
    )

    def enqueue() -> None:
        task_id = async_task(
            "similarity.tasks.index_build_task", build.pk, task_name=f"index-build-{build.pk}"
        )
        IndexBuild.objects.filter(pk=build.pk, task_id="").update(task_id=str(task_id or ""))

    transaction.on_commit(enqueue)
    return build


def _acquire(build: IndexBuild) -> None:
    """Move ``build`` to running, or raise BuildAlreadyRunning (the database is the lock)."""
    now = timezone.now()
    stale_before = now - timezone.timedelta(seconds=similarity_settings().build_stale_seconds)
    abandoned = IndexBuild.objects.filter(
        status=IndexBuild.Status.RUNNING, heartbeat_at__lt=stale_before
    ).update(
        status=IndexBuild.Status.FAILED,
        error="abandoned: its process stopped sending heartbeats",
        finished_at=now,
    )
    if abandoned:
        logger.warning("Marked %d abandoned build(s) as failed", abandoned)
    try:
        with transaction.atomic():
            IndexBuild.objects.filter(pk=build.pk).update(
                status=IndexBuild.Status.RUNNING, started_at=now, heartbeat_at=now
            )
    except IntegrityError:
        running = IndexBuild.objects.filter(status=IndexBuild.Status.RUNNING).first()
        running_id = running.pk if running else None
        IndexBuild.objects.filter(pk=build.pk).update(
            status=IndexBuild.Status.SKIPPED,
            error=f"another build was running (#{running_id})",
            finished_at=now,
        )
        build.refresh_from_db()
        raise BuildAlreadyRunning(running_id) from None
    build.refresh_from_db()


class _Heartbeat:
    """Beats for a running build from a daemon thread, through every phase of the build.

    A beat inside one phase only (say, the embedding loop) would let a long download, index
    build or neighbour refresh look abandoned, and a second build would take over.
    """

    def __init__(self, build_pk: int, interval: float = HEARTBEAT_SECONDS) -> None:
        self.build_pk = build_pk
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"build-{build_pk}-heartbeat", daemon=True
        )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 30)

    def _run(self) -> None:
        from django.db import connection

        try:
            while not self._stop.wait(self.interval):
                try:
                    IndexBuild.objects.filter(
                        pk=self.build_pk, status=IndexBuild.Status.RUNNING
                    ).update(heartbeat_at=timezone.now())
                except Exception:  # a busy database: the next beat tries again
                    logger.warning("Heartbeat of build #%s failed", self.build_pk, exc_info=True)
        finally:
            connection.close()


# What a finished build writes back; never task_id (set by the enqueuer) or the lock fields.
FINISH_FIELDS = (
    "status",
    "error",
    *IndexBuild.SUMMARY_FIELDS,
    "timings",
    "failures",
    "manifest",
    "finished_at",
)


def _finish(build: IndexBuild) -> None:
    """Write the outcome, unless another process declared this build abandoned meanwhile."""
    values = {name: getattr(build, name) for name in FINISH_FIELDS}
    updated = IndexBuild.objects.filter(pk=build.pk, status=IndexBuild.Status.RUNNING).update(
        **values
    )
    if not updated:
        logger.error(
            "Build #%s was marked %s by another process before it finished; keeping that",
            build.pk,
            IndexBuild.objects.filter(pk=build.pk).values_list("status", flat=True).first(),
        )
        build.refresh_from_db()


def index_build_run(
    *,
    build: IndexBuild | None = None,
    model: str | None = None,
    index_type: str | None = None,
    full: bool = False,
    download: bool = False,
    reembed: bool = False,
    batch_size: int | None = None,
    trigger: str = "shell",
    progress: bool = True,
    runtime: str | None = None,
) -> IndexBuild:
    """Run a build: (download,) embed what is missing, update or rebuild the index, switch.

    The new index becomes current only when it is completely written; any failure leaves
    the previous index serving and the build recorded as failed with its error. Same inputs
    as the current index: nothing is written (status "unchanged"). ``runtime`` (default:
    the RUNTIME setting) is the embedding runtime; see ``select_build_runtime``.
    """
    if build is None:
        build = index_build_create(
            model=model, index_type=index_type, full=full, download=download, trigger=trigger
        )
    _acquire(build)
    timings: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        with _Heartbeat(build.pk):
            _run(
                build,
                timings,
                reembed=reembed,
                batch_size=batch_size,
                progress=progress,
                runtime=runtime,
            )
    except BaseException as exc:
        build.status = IndexBuild.Status.FAILED
        build.error = str(exc) if isinstance(exc, BuildFailed) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, KeyboardInterrupt):
            build.error = "interrupted"
        raise
    finally:
        timings["total_seconds"] = round(time.perf_counter() - started, 3)
        build.timings = timings
        build.finished_at = timezone.now()
        _finish(build)
    return build


def _load_embedder(model: str, threads: int) -> Any:
    """The embedder for ``model``; a model that cannot be loaded fails the build in one line."""
    from similarity.engine.embedders import EmbedderLoadError, load_embedder

    try:
        return load_embedder(model, threads=threads)
    except EmbedderLoadError as exc:
        raise BuildFailed(str(exc)) from exc


def select_build_runtime(
    embedder: Any, runtime: str | None = None, *, threads: int | None = None
) -> tuple[Any, Any]:
    """``embedder`` on ``runtime`` (default: the RUNTIME setting) once it passes the gate.

    Calibration images are generated (``engine.embedders.calibration``), so the gate is
    deterministic for a model. BuildFailed when an explicit runtime is unavailable or
    disagrees with torch fp32; ``auto`` falls back instead. The runtime does not change the
    model identity: vectors from runtimes that passed the gate may share one index.
    """
    from similarity.conf import runtime_settings
    from similarity.engine.embedders import EmbedderLoadError
    from similarity.engine.embedders.calibration import calibration_images
    from similarity.engine.embedders.runtimes import REFERENCE, select_runtime, validate_runtime

    conf = runtime_settings()
    name = validate_runtime(runtime or conf.runtime)
    count = conf.calibration_images if name != REFERENCE else 0
    calibration = calibration_images(count)
    try:
        chosen, choice = select_runtime(
            embedder,
            name,
            calibration=calibration,
            cache_dir=conf.onnx_cache_dir,
            threads=threads,
            min_cosine=conf.min_cosine,
            min_overlap=conf.min_overlap,
        )
    except EmbedderLoadError as exc:
        raise BuildFailed(str(exc)) from exc
    logger.info("Embedding runtime: %s (requested %s)", choice.runtime, choice.requested)
    return chosen, choice


def _run(
    build: IndexBuild,
    timings: dict[str, Any],
    *,
    reembed: bool,
    batch_size: int | None,
    progress: bool,
    runtime: str | None = None,
) -> None:
    from similarity.engine.index import Timeit, set_faiss_threads

    conf = similarity_settings()
    threads = fork_safe_threads(conf.threads)
    set_faiss_threads(threads)
    mark_openmp_used()

    if build.download:
        from catalog.services.downloads import images_download

        with Timeit("Downloading images", into=timings, key="download_seconds"):
            summary = images_download(progress=progress)
        logger.info("Download: %s", summary)

    with Timeit(f"Loading model {build.model}", into=timings, key="load_model_seconds"):
        embedder = _load_embedder(build.model, threads)

    with Timeit("Choosing the embedding runtime", into=timings, key="runtime_seconds"):
        embedder, runtime_choice = select_build_runtime(embedder, runtime, threads=threads)

    with Timeit("Embedding new and changed images", into=timings, key="embed_seconds"):
        embedded = embeddings_update(
            embedder=embedder,
            batch_size=batch_size or conf.batch_size,
            decode_workers=conf.decode_workers,
            reembed=reembed,
            progress=progress,
        )
    timings["embed"] = embedded.timings.as_dict()
    build.embedded_count = embedded.embedded
    build.reused_count = embedded.reused
    build.failed_count = len(embedded.failures)
    build.failures = [
        {"article_id": article_id, "reason": reason}
        for article_id, reason in embedded.failures[:1000]
    ]

    identity = embedder.identity()
    with Timeit("Collecting vectors", into=timings, key="collect_seconds"):
        inputs = collect_inputs(identity)
    if not len(inputs.ids):
        raise BuildFailed(MSG_NOTHING_TO_INDEX)
    outcome = index_update(
        inputs=inputs,
        model=build.model,
        identity=identity,
        index_type=build.index_type,
        full=build.full,
        extra_manifest={
            "build_id": build.pk,
            "supports_text": embedder.supports_text,
            **runtime_choice.as_manifest(),
        },
    )
    timings.update(outcome.timings)
    build.mode = outcome.mode
    build.build_name = outcome.build_name
    build.article_count = outcome.count
    build.added_count = outcome.added
    build.removed_count = outcome.removed
    build.recall_at_10 = outcome.recall_at_10
    build.manifest = outcome.manifest
    build.status = (
        IndexBuild.Status.UNCHANGED if outcome.mode == "unchanged" else IndexBuild.Status.SUCCEEDED
    )

    # --- Post-build: refresh stored neighbours (SimilarArticle; STORE_NEIGHBORS setting) ---
    from similarity.services.neighbors import neighbors_refresh_after_build

    neighbors_refresh_after_build(build=build, timings=timings, progress=progress)


def embeddings_run(
    *,
    model: str | None = None,
    runtime: str | None = None,
    batch_size: int | None = None,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
) -> Any:
    """Embed missing images without building an index (no build lock): one of several workers.

    Each worker takes the articles of its ``shard``; a later ``build_index`` reuses every
    stored vector. Returns the EmbedSummary.
    """
    conf = similarity_settings()
    threads = fork_safe_threads(conf.threads)
    mark_openmp_used()
    embedder = _load_embedder(model or conf.model, threads)
    embedder, _choice = select_build_runtime(embedder, runtime, threads=threads)
    return embeddings_update(
        embedder=embedder,
        batch_size=batch_size or conf.batch_size,
        decode_workers=conf.decode_workers,
        progress=progress,
        shard=shard,
    )
