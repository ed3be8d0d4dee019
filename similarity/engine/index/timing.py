"""Phase timer: `with Timeit("Building index") as t: ...` logs the phase and keeps `t.seconds`."""

from __future__ import annotations

import logging
import time
from types import TracebackType

logger = logging.getLogger("similarity.engine.index")


class Timeit:
    """Context manager that logs how long a phase took and exposes it as `.seconds`."""

    def __init__(self, name: str, *, log: logging.Logger | None = None, level: int = logging.INFO):
        self.name = name
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
        outcome = "failed after" if exc_type else "took"
        self._log.log(self._level, "%s %s %.3f s", self.name, outcome, self.seconds)
