"""Queued builds: at most one waits (further requests join it), its django-q2 task, and the
periodic check that fails dead builds and hands a waiting one to a worker again."""

from __future__ import annotations

import functools
import logging
import pickle
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from similarity.conf import similarity_settings
from similarity.errors import TaskQueueUnavailable
from similarity.models import IndexBuild
from similarity.services.builds.distributed.plan import distributed_builds_watch
from similarity.services.builds.lock import Reaped, running_builds_reap
from similarity.services.builds.model_choice import build_fields

logger = logging.getLogger(__name__)

ENQUEUE_ATTEMPTS = 5  # create-or-join races lost in a row before giving up (never in practice)
MSG_BROKER_DOWN = (
    "the task queue is unreachable ({error}); nothing was queued: retry once it is back"
)
MSG_BROKER_DOWN_BUILD = "never queued: the task queue was unreachable ({error})"


def index_build_create(
    *,
    model: str | None = None,
    index_type: str | None = None,
    full: bool = False,
    download: bool = False,
    trigger: str = "shell",
) -> IndexBuild:
    """Record a queued build with its options (model: see build_model_choose).

    IntegrityError when a build is already queued (at most one; index_build_enqueue joins it).
    """
    return IndexBuild.objects.create(
        **build_fields(
            model=model, index_type=index_type, full=full, download=download, trigger=trigger
        )
    )


@dataclass(frozen=True)
class BuildRequest:
    """A rebuild request's answer: the queued build, and whether it joined one already queued."""

    build: IndexBuild
    joined: bool


def index_build_enqueue(
    *,
    model: str | None = None,
    index_type: str | None = None,
    full: bool = False,
    download: bool = True,
    trigger: str = "api",
) -> BuildRequest:
    """Queue a background build (django-q2) once the surrounding transaction commits.

    At most one build is queued (a database constraint): a request while one is queued joins
    it, widening its options (``full``/``download`` when asked) and gets its id. A build is
    left queued only with its task: when the broker refuses the task the build is marked
    failed with the reason and TaskQueueUnavailable is raised (outside a transaction, as in
    a request, at once; inside one, when it commits).
    """
    running_builds_reap()
    for _attempt in range(ENQUEUE_ATTEMPTS):
        queued = IndexBuild.objects.filter(status=IndexBuild.Status.QUEUED).first()
        if queued is not None:
            if _join(queued, full=full, download=download):
                queued.refresh_from_db()
                return BuildRequest(queued, joined=True)
            continue  # it started meanwhile: queue a new one
        try:
            with transaction.atomic():
                build = index_build_create(
                    model=model, index_type=index_type, full=full, download=download,
                    trigger=trigger,
                )
        except IntegrityError:
            continue  # another request queued one meanwhile: join it
        transaction.on_commit(functools.partial(_send_task_or_fail, build))
        return BuildRequest(build, joined=False)
    raise RuntimeError(f"could not queue or join a build after {ENQUEUE_ATTEMPTS} attempts")


def _join(queued: IndexBuild, *, full: bool, download: bool) -> bool:
    """Widen the queued build's options; False when it is no longer queued."""
    return bool(
        IndexBuild.objects.filter(pk=queued.pk, status=IndexBuild.Status.QUEUED).update(
            full=Case(When(full=True, then=Value(True)), default=Value(full)),
            download=Case(When(download=True, then=Value(True)), default=Value(download)),
        )
    )


def _send_task_or_fail(build: IndexBuild) -> None:
    """Send the build's task; when the broker is unreachable, fail the build and say so."""
    try:
        _send_task(build)
    except Exception as exc:  # redis, ORM or any broker's connection error
        logger.error("Could not queue build #%s: %s", build.pk, exc)
        error = f"{type(exc).__name__}: {exc}"
        IndexBuild.objects.filter(pk=build.pk, status=IndexBuild.Status.QUEUED).update(
            status=IndexBuild.Status.FAILED, finished_at=timezone.now(),
            error=MSG_BROKER_DOWN_BUILD.format(error=error),
        )
        raise TaskQueueUnavailable(MSG_BROKER_DOWN.format(error=error)) from exc


def _send_task(build: IndexBuild) -> None:
    from django_q.tasks import async_task

    task_id = async_task(
        "similarity.tasks.index_build_task", build.pk, task_name=f"index-build-{build.pk}"
    )
    # By pk alone: with sync tasks (tests) the build has already run by now.
    IndexBuild.objects.filter(pk=build.pk).update(task_id=str(task_id or ""))


@dataclass
class ReapReport:
    reaped: list[Reaped] = field(default_factory=list)
    requeued: int | None = None  # id of a queued build handed to a worker again
    resent: int = 0  # shard tasks of distributed builds sent again (expired leases)

    def __str__(self) -> str:
        lines = [f"build #{r.build_id} marked failed ({r.reason}): {r.error}" for r in self.reaped]
        if self.resent:
            lines.append(f"{self.resent} shard task(s) of distributed builds sent again")
        if self.requeued is not None:
            lines.append(f"queued build #{self.requeued} handed to a worker again")
        return "\n".join(lines) or "nothing to do: no dead, hung or waiting build"


def builds_reap() -> ReapReport:
    """The periodic check: fail dead and hung builds; restart a queued build left waiting.

    A queued build is handed to a worker again when no build runs and its task has ended
    without running it (it found another build running) or, after the stale time, it never
    reached the task queue.
    """
    report = ReapReport(reaped=running_builds_reap())
    report.resent = distributed_builds_watch()
    if IndexBuild.objects.filter(status=IndexBuild.Status.RUNNING).exists():
        return report
    queued = IndexBuild.objects.filter(status=IndexBuild.Status.QUEUED).first()
    if queued is not None and _waiting(queued):
        _send_task(queued)
        report.requeued = queued.pk
    return report


def _waiting(build: IndexBuild) -> bool:
    """True when nothing will run ``build`` unless its task is sent again: its task ended
    without running it, or, after the stale time, it never reached the broker or the broker
    lost it (a Redis restarted without persistence, a worker killed holding it)."""
    from django_q.models import Task

    if build.task_id and Task.objects.filter(id=build.task_id).exists():
        return True
    age = (timezone.now() - build.created_at).total_seconds()
    if age <= similarity_settings().build_stale_seconds:
        return False
    return not build.task_id or not task_in_broker(build.task_id)


def task_in_broker(task_id: str) -> bool:
    """Whether the task queue still holds task ``task_id`` (waiting, or taken and not yet
    acknowledged on the ORM broker). True when the broker cannot tell or cannot be reached:
    only a task known to be gone is sent again."""
    from django_q.brokers import get_broker
    from django_q.brokers.orm import ORM
    from django_q.brokers.redis_broker import Redis
    from django_q.models import OrmQ

    broker = get_broker()
    try:
        if isinstance(broker, Redis):
            payloads = broker.connection.lrange(broker.list_key, 0, -1)
        elif isinstance(broker, ORM):
            payloads = list(OrmQ.objects.filter(key=broker.list_key)
                            .values_list("payload", flat=True))
        else:
            return True
    except Exception as exc:  # the broker is down: nothing to conclude
        logger.warning("Could not list the task queue: %s", exc)
        return True
    return any(_payload_id(payload) == task_id for payload in payloads)


def _payload_id(payload: str | bytes) -> str | None:
    """The id of a queued task's signed payload; None for another cluster's or a damaged one."""
    from django_q.signing import BadSignature, SignedPackage

    try:
        return SignedPackage.loads(payload).get("id")
    except (BadSignature, pickle.UnpicklingError, ValueError, TypeError, EOFError) as exc:
        logger.debug("Unreadable task payload: %s", exc)
        return None
