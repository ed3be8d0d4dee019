"""Progress of long loops: a tqdm bar on a terminal, a log line every N seconds elsewhere.

Downloads, embedding and neighbor refreshes run from cron, systemd and django-q2 workers,
where nobody sees a terminal bar. ``progress_bar`` draws tqdm when stderr is a TTY and
otherwise logs "desc: done/total unit (pct), rate, ETA" every ``PROGRESS_LOG_SECONDS``.
``progress_listener`` lets a caller (an index build) hear every update of every bar opened
in its context, to record that work is moving. similarity imports this module; it imports
nothing from similarity.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm import tqdm

logger = logging.getLogger("catalog.progress")

Listener = Callable[[int], object]
_listeners: contextvars.ContextVar[tuple[Listener, ...]] = contextvars.ContextVar(
    "progress_listeners", default=()
)


@contextmanager
def progress_listener(callback: Listener) -> Iterator[None]:
    """Call ``callback(n)`` on each update of any bar opened or updated in this context."""
    token = _listeners.set((*_listeners.get(), callback))
    try:
        yield
    finally:
        _listeners.reset(token)


class ProgressBar:
    """The subset of tqdm the services use: update, set_postfix, close, context manager."""

    def __init__(
        self,
        *,
        total: int,
        desc: str,
        unit: str = "it",
        enabled: bool = True,
        interval: float | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
    ) -> None:
        if interval is None:
            from catalog.conf import catalog_settings

            interval = catalog_settings().progress_log_seconds
        if interval <= 0:
            raise ValueError(f"progress log interval must be > 0 seconds; got {interval}")
        stream = stream if stream is not None else sys.stderr
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self.interval = interval
        self._clock = clock
        self._log = log or logger
        self._postfix = ""
        self._closed = False
        tty = bool(getattr(stream, "isatty", lambda: False)())
        self._bar: Any = (
            tqdm(total=total, desc=desc, unit=unit, file=stream) if enabled and tty else None
        )
        self._logging = enabled and not tty
        self._started = self._last = clock()
        if self._logging and total:
            self._log.info("%s: 0/%d %s", desc, total, unit)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._logging:
            now = self._clock()
            if now - self._last >= self.interval:
                self._last = now
                self._log.info("%s", self.line(now))
        for listener in _listeners.get():
            listener(n)

    def set_postfix(self, refresh: bool = False, **values: object) -> None:
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())
        if self._bar is not None:
            self._bar.set_postfix(refresh=refresh, **values)

    def line(self, now: float | None = None) -> str:
        """One progress line: done/total, percentage, rate and time left."""
        elapsed = max((self._clock() if now is None else now) - self._started, 1e-9)
        rate = self.n / elapsed
        text = f"{self.desc}: {self.n}/{self.total} {self.unit}"
        if self.total:
            text += f" ({100 * self.n / self.total:.0f}%)"
        text += f", {rate:.1f} {self.unit}/s"
        if rate > 0 and self.total > self.n:
            text += f", ~{(self.total - self.n) / rate:.0f} s left"
        if self._postfix:
            text += f", {self._postfix}"
        return text

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._logging and self.total:
            now = self._clock()
            self._log.info("%s in %.1f s", self.line(now), now - self._started)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    *, total: int, desc: str, unit: str = "it", enabled: bool = True, **options: Any
) -> ProgressBar:
    """A bar on a terminal, log lines every PROGRESS_LOG_SECONDS otherwise; nothing if disabled."""
    return ProgressBar(total=total, desc=desc, unit=unit, enabled=enabled, **options)
