"""Stored embeddings (per article, model and image hash) and the record of each index build."""

from __future__ import annotations

from django.db import models

from catalog.models import Article


class Embedding(models.Model):
    """One image's vector under one model; reused by every rebuild while the image is unchanged.

    ``article_id`` here is Django's foreign-key attribute: the Article's primary key, not the
    shop's ``Article.article_id``; code names such values ``*_pk`` (``catalog.models.ArticlePk``).
    """

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="embeddings")
    model = models.CharField(max_length=255, help_text="Embedder identity (name + weights).")
    image_sha256 = models.CharField(max_length=64)
    dimension = models.PositiveIntegerField()
    vector = models.BinaryField(help_text="float32, L2-normalised, little-endian.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["article", "model", "image_sha256"], name="embedding_unique_key"
            )
        ]
        indexes = [models.Index(fields=["model", "article"], name="embedding_model_article")]

    def __str__(self) -> str:
        return f"{self.article_id} @ {self.model}"


class IndexBuild(models.Model):
    """One run of the build (download + embed + index), from the shell, a task or the API."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        UNCHANGED = "unchanged", "Unchanged (same inputs as the current index)"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (another build was running)"

    # Summary of what a build found and did: shown by the admin and the API.
    SUMMARY_FIELDS = (
        "mode",
        "build_name",
        "article_count",
        "embedded_count",
        "reused_count",
        "failed_count",
        "added_count",
        "removed_count",
        "recall_at_10",
    )

    class ModelSource(models.TextChoices):
        EXPLICIT = "explicit", "Asked for (--model)"
        SETTING = "setting", "LOOKALIKE_MODEL setting"
        CURRENT = "current index", "Model of the current index"
        DEFAULT = "default", "Default (no index yet, no setting)"
        FALLBACK = "fallback", "Fallback (the default model could not be loaded)"

    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    trigger = models.CharField(max_length=32, default="shell")
    model = models.CharField(max_length=255)
    model_source = models.CharField(
        max_length=16, choices=ModelSource.choices, blank=True, help_text="Why this model."
    )
    index_type = models.CharField(max_length=64)
    full = models.BooleanField(default=False)
    download = models.BooleanField(default=False)
    mode = models.CharField(max_length=16, blank=True, help_text="full, incremental or unchanged")
    build_name = models.CharField(max_length=128, blank=True)
    article_count = models.PositiveIntegerField(default=0)
    embedded_count = models.PositiveIntegerField(default=0)
    reused_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    added_count = models.PositiveIntegerField(default=0)
    removed_count = models.PositiveIntegerField(default=0)
    recall_at_10 = models.FloatField(null=True, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    failures = models.JSONField(default=list, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    progress_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time the build moved on (a batch, a phase)."
    )
    phase = models.CharField(max_length=32, blank=True, help_text="Step running or last done.")
    process = models.CharField(
        max_length=128, blank=True, help_text="host:pid of the process running the build."
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # The single-flight lock: at most one running build, enforced by the database.
            models.UniqueConstraint(
                fields=["status"],
                condition=models.Q(status="running"),
                name="indexbuild_single_running",
            ),
            # At most one queued rebuild: further requests join it (services.builds).
            models.UniqueConstraint(
                fields=["status"],
                condition=models.Q(status="queued"),
                name="indexbuild_single_queued",
            ),
        ]

    def __str__(self) -> str:
        return f"Build #{self.pk} ({self.status})"

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    def describe(self) -> str:
        """One summary line for a finished build."""
        text = (
            f"Build #{self.pk} {self.status}"
            f"{f' ({self.mode})' if self.mode and self.mode != self.status else ''}: "
            f"{self.article_count} articles "
            f"indexed, {self.embedded_count} embedded, {self.reused_count} reused, "
            f"{self.failed_count} failed"
        )
        if self.mode == "incremental":
            text += f", {self.added_count} added, {self.removed_count} removed"
        if self.recall_at_10 is not None:
            text += f", recall@10 {self.recall_at_10:.3f}"
        total = self.timings.get("total_seconds")
        if total is not None:
            text += f" in {total:.1f} s"
        return text

    def runtime_summary(self) -> str:
        """Which embedding runtime ran and why (from the manifest; "" before the index step)."""
        manifest = self.manifest or {}
        if not manifest.get("runtime"):
            return ""
        reason = manifest.get("runtime_reason") or f"requested {manifest.get('runtime_requested')}"
        return f"Embedding runtime {manifest['runtime']}: {reason}"


class CurrentIndex(models.Model):
    """The build every web node serves: one row (pk 1), written only by ``index_publish``.

    Web processes read ``build_name`` (one primary-key query at most every
    ``INDEX_CHECK_SECONDS``) and fetch that build from the "indexes" storage when it changes.
    """

    SINGLETON_PK = 1

    build_name = models.CharField(max_length=128)
    published_at = models.DateTimeField()
    build = models.ForeignKey(
        IndexBuild, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The build record that published it (empty for a switch back to an old build).",
    )

    class Meta:
        verbose_name = "current index"
        verbose_name_plural = "current index"

    def __str__(self) -> str:
        return f"{self.build_name} (published {self.published_at:%Y-%m-%d %H:%M:%S})"


class BuildShard(models.Model):
    """One slice of a distributed build's downloads or embeddings, claimed by one worker at a time.

    A worker holds a shard through a lease it renews while it progresses; a shard whose lease
    expired (its worker died or hung) is claimed again by another worker. Re-running a shard
    is harmless: embeddings are keyed (article, model identity, image sha256).
    """

    class Kind(models.TextChoices):
        DOWNLOAD = "download", "Download"
        EMBED = "embed", "Embed"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        CLAIMED = "claimed", "Claimed (a worker holds its lease)"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    build = models.ForeignKey(IndexBuild, on_delete=models.CASCADE, related_name="shards")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    first_pk = models.BigIntegerField(help_text="Article pk range, inclusive.")
    last_pk = models.BigIntegerField()
    article_count = models.PositiveIntegerField(default=0, help_text="Articles planned.")
    reembed = models.BooleanField(default=False)
    options = models.JSONField(
        default=dict, blank=True, help_text="Build options a worker needs (runtime, batch size)."
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    worker_host = models.CharField(max_length=128, blank=True)
    worker_pid = models.PositiveIntegerField(null=True, blank=True)
    device = models.CharField(max_length=32, blank=True, help_text="torch device (embed).")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Claims so far.")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="Last task sent.")
    started_at = models.DateTimeField(null=True, blank=True, help_text="Last claim.")
    finished_at = models.DateTimeField(null=True, blank=True)
    done_count = models.PositiveIntegerField(default=0, help_text="Embedded or downloaded.")
    reused_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    failures = models.JSONField(default=list, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["build", "kind", "first_pk"]
        indexes = [models.Index(fields=["build", "kind", "state"], name="buildshard_claim")]

    def __str__(self) -> str:
        return f"{self.kind} shard #{self.pk} of build #{self.build_id} ({self.state})"

    @property
    def worker(self) -> str:
        return f"{self.worker_host}:{self.worker_pid}" if self.worker_pid else ""

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class SimilarArticle(models.Model):
    """A stored top-k neighbor of an article (itself excluded), refreshed after each build.

    Lets storefronts read "similar items" from the database without touching Faiss.
    ``article_id`` and ``neighbor_id`` are primary keys (foreign-key attributes), as on
    Embedding; the shop's ids are ``article.article_id`` and ``neighbor.article_id``.
    """

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="+")
    neighbor = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="+")
    rank = models.PositiveSmallIntegerField(help_text="1 = nearest.")
    distance = models.FloatField(help_text="Cosine distance.")
    build_name = models.CharField(max_length=128)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["article", "rank"], name="similararticle_unique_rank")
        ]

    def __str__(self) -> str:
        return f"{self.article_id} #{self.rank} -> {self.neighbor_id}"


class DuplicateDecision(models.Model):
    """A reviewer's verdict on a pair of articles, keyed by shop ids so it survives re-imports.

    ``article_a < article_b`` in code-point order (``selectors.duplicates.pair_key``; written
    only by ``services.duplicates``; not a database check, whose collation may order strings
    differently), one row per pair.
    """

    class Verdict(models.TextChoices):
        NOT_DUPLICATE = "not_duplicate", "Not duplicates"
        DUPLICATE = "duplicate", "Duplicates (one article kept)"

    article_a = models.CharField(max_length=255)
    article_b = models.CharField(max_length=255)
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    kept = models.CharField(max_length=255, blank=True, help_text="Shop id of the kept article.")
    deactivated = models.BooleanField(
        default=False,
        help_text="This decision deactivated the pair's other article (not the kept one); "
        "undoing the decision reactivates it.",
    )
    decided_by = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-decided_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["article_a", "article_b"], name="duplicatedecision_pair"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.article_a} / {self.article_b}: {self.verdict}"


class DuplicateGroupReview(DuplicateDecision):
    """Proxy giving the admin its "Duplicate groups" review page (similarity.admin.duplicates)."""

    class Meta:
        proxy = True
        verbose_name = "duplicate group"
        verbose_name_plural = "duplicate groups"


class MatchRun(models.Model):
    """One supplier matching job started from the admin: its upload, progress and report.

    The uploaded file and the report live in ``<DATA_DIR>/matching/<pk>/`` (not served);
    the supplier photos' thumbnails in ``<MEDIA_ROOT>/matching/<pk>/`` (shown on review).
    Written only by similarity.services.matching.runs.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    class SourceKind(models.TextChoices):
        FEED = "feed", "Supplier feed (CSV / JSON Lines)"
        ZIP = "zip", "Zip of photos"

    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    source_name = models.CharField(max_length=255, help_text="The uploaded file's name.")
    source_kind = models.CharField(max_length=8, choices=SourceKind.choices)
    source_file = models.CharField(max_length=255, help_text="The upload's name in the folder.")
    folder = models.CharField(
        max_length=128, blank=True,
        help_text="The run's folder in the matching storage (its pk and a random part).",
    )
    report_file = models.CharField(
        max_length=64, blank=True,
        help_text="The latest published report's name in the folder (empty before one).",
    )
    k = models.PositiveSmallIntegerField(default=5, help_text="Nearest articles per photo.")
    model = models.CharField(max_length=255, blank=True)
    index_build = models.CharField(max_length=128, blank=True)
    duplicate_threshold = models.FloatField(null=True, blank=True)
    similar_threshold = models.FloatField(null=True, blank=True)
    verified = models.BooleanField(
        default=False,
        help_text="Candidates were verified with local features (evidence in the report).",
    )
    same_count = models.PositiveIntegerField(default=0)
    similar_count = models.PositiveIntegerField(default=0)
    new_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    timings = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, help_text="Why the run as a whole failed.")
    task_id = models.CharField(max_length=64, blank=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "supplier match run"

    def __str__(self) -> str:
        return f"Match run #{self.pk} ({self.status})"

    @property
    def total_count(self) -> int:
        return self.same_count + self.similar_count + self.new_count + self.error_count


class MatchDecision(models.Model):
    """A buyer's decision on one supplier photo of a run: "this is article X", "new" or
    "skipped". Keyed by (run, supplier_ref), so it outlives re-published reports and retried
    runs; the article is kept by its shop id, like duplicate decisions. Written only by
    similarity.services.matching.decisions.
    """

    class Decision(models.TextChoices):
        CONFIRMED = "confirmed", "Confirmed: this is the article"
        NEW = "new", "New: not in the catalog"
        SKIPPED = "skipped", "Skipped"

    run = models.ForeignKey(MatchRun, on_delete=models.CASCADE, related_name="decisions")
    supplier_ref = models.CharField(max_length=1000)
    decision = models.CharField(max_length=16, choices=Decision.choices)
    article_id = models.CharField(
        max_length=255, blank=True, help_text="Shop id of the confirmed article."
    )
    verdict = models.CharField(
        max_length=16, blank=True, help_text="The photo's verdict when the decision was made."
    )
    decided_by = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["run", "supplier_ref"]
        constraints = [
            models.UniqueConstraint(fields=["run", "supplier_ref"], name="matchdecision_ref"),
        ]

    def __str__(self) -> str:
        target = f" {self.article_id}" if self.article_id else ""
        return f"run #{self.run_id} {self.supplier_ref}: {self.decision}{target}"


class PhotoSearch(Article):
    """Proxy giving the admin its "Search by photo" page (similarity.admin.photo_search);
    its view permission is the page's."""

    class Meta:
        proxy = True
        verbose_name = "search by photo"
        verbose_name_plural = "search by photo"
