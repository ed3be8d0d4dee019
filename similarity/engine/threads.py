"""Thread budgets for the OpenMP users (Faiss, torch) that stay safe in forked workers.

GNU libgomp, which the Faiss and torch wheels bundle, does not survive fork(): a child
process that starts a parallel region after its parent already ran one hangs forever
(measured here: a 2-thread Faiss search in a forked child never returned; 1 thread did).
django-q2 forks its workers, so a process forked after OpenMP was in use runs Faiss and
torch on one thread. Processes that never used OpenMP before forking keep all threads.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

_openmp_used = False
_forked_after_openmp = False


def mark_openmp_used() -> None:
    """Record that this process has (or is about to have) an OpenMP thread pool."""
    global _openmp_used
    _openmp_used = True


def _after_fork_in_child() -> None:
    global _forked_after_openmp
    if _openmp_used:
        _forked_after_openmp = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def fork_safe_threads(requested: int) -> int:
    """``requested``, or 1 in a process forked from a parent that had used OpenMP."""
    if requested <= 0:
        raise ValueError(f"threads must be > 0; got {requested}")
    if _forked_after_openmp and requested > 1:
        logger.warning(
            "Forked after OpenMP was initialised: using 1 thread instead of %d "
            "(more would hang in libgomp)",
            requested,
        )
        return 1
    return requested
