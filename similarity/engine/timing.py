"""Phase timer: `with Timeit("Building index", into=timings, key="index_seconds"): ...`.

Logs the phase start and its duration, keeps `.seconds`, and (with ``into``) records the
rounded seconds under ``key`` in a timings dict, so a build's phases are timed one way.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Protocol

logger = logging.getLogger("similarity.engine.index")


class Timings(Protocol):
    """Where Timeit records a phase: any str-keyed dict that takes a float."""

    def __setitem__(self, key: str, value: float, /) -> None: ...


class Timeit:
    """Context manager that logs how long a phase took and exposes it as `.seconds`."""

    def __init__(
        self,
        name: str,
        *,
        into: Timings | None = None,
        key: str = "",
        log: logging.Logger | None = None,
        level: int = logging.INFO,
    ):
        if into is not None and not key:
            raise ValueError(f"Timeit({name!r}, into=...) needs a key to record the seconds under")
        self.name = name
        self._into = into
        self._key = key
        self.seconds: float = 0.0
        self._log = log or logger
        self._level = level
        self._start = 0.0

    def __enter__(self) -> Timeit:
        self._log.log(self._level, "%s ...", self.name)
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.seconds = time.perf_counter() - self._start
        if self._into is not None:
            self._into[self._key] = round(self.seconds, 3)
        outcome = "failed after" if exc_type else "took"
        self._log.log(self._level, "%s %s %.3f s", self.name, outcome, self.seconds)
