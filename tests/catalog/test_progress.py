"""Progress without a TTY: a log line every PROGRESS_LOG_SECONDS (fake clock), a bar on a TTY."""

from __future__ import annotations

import io
import logging

import pytest

from catalog.progress import progress_bar, progress_listener


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "catalog.progress"]


def test_without_a_tty_a_line_is_logged_every_interval(caplog):
    caplog.set_level(logging.INFO, logger="catalog.progress")
    clock, stream = FakeClock(), io.StringIO()
    bar = progress_bar(total=100, desc="Downloading images", unit="img", interval=10,
                       stream=stream, clock=clock)
    assert lines(caplog) == ["Downloading images: 0/100 img"]
    for _ in range(30):  # 30 updates within 9 s: no line
        clock.now += 0.3
        bar.update(1)
    assert len(lines(caplog)) == 1
    clock.now += 1.1  # 10.1 s since the start
    bar.update(10)
    assert lines(caplog)[-1] == "Downloading images: 40/100 img (40%), 4.0 img/s, ~15 s left"
    clock.now += 5
    bar.set_postfix(failed=3)
    bar.update(10)
    assert len(lines(caplog)) == 2  # 5 s later: not yet
    clock.now += 5
    bar.update(50)
    bar.close()
    assert lines(caplog)[-2:] == [
        "Downloading images: 100/100 img (100%), 5.0 img/s, failed=3",
        "Downloading images: 100/100 img (100%), 5.0 img/s, failed=3 in 20.1 s",
    ]
    assert stream.getvalue() == ""  # no bar drawn into a log file


def test_the_interval_comes_from_the_setting(settings, caplog):
    caplog.set_level(logging.INFO, logger="catalog.progress")
    settings.LOOKALIKE = {**settings.LOOKALIKE, "PROGRESS_LOG_SECONDS": 2.5}
    bar = progress_bar(total=3, desc="Embedding", stream=io.StringIO())
    assert bar.interval == 2.5
    settings.LOOKALIKE = {**settings.LOOKALIKE, "PROGRESS_LOG_SECONDS": 0}
    with pytest.raises(ValueError, match="interval must be > 0 seconds; got 0"):
        progress_bar(total=3, desc="Embedding", stream=io.StringIO())


def test_a_tty_gets_a_tqdm_bar_and_no_log_lines(caplog):
    caplog.set_level(logging.INFO, logger="catalog.progress")
    stream = Terminal()
    with progress_bar(total=5, desc="Neighbors", unit="article", interval=1,
                      stream=stream) as bar:
        bar.update(5)
    assert "Neighbors" in stream.getvalue() and "5/5" in stream.getvalue()
    assert lines(caplog) == []


def test_disabled_is_silent_but_listeners_still_hear_updates(caplog):
    caplog.set_level(logging.INFO, logger="catalog.progress")
    heard: list[int] = []
    with progress_listener(heard.append):
        bar = progress_bar(total=4, desc="Embedding", enabled=False, interval=1,
                           stream=Terminal())
        bar.update(3)
        bar.update(1)
        bar.close()
    bar = progress_bar(total=1, desc="Outside", enabled=False, interval=1)
    bar.update(1)  # no listener outside the context
    assert heard == [3, 1]
    assert lines(caplog) == []
