"""librdkafka's repeated lines: the first written, repeats held back for a while and then counted."""

from __future__ import annotations

import logging

from lotlens_common.logs import RepeatedLines

REFUSED = ("FAIL [rdkafka#consumer-2] [thrd:kafka:9092/bootstrap]: kafka:9092/bootstrap: Connect to "
           "ipv4#10.0.0.7:9092 failed: Connection refused (after {ms}ms in state CONNECT{more})")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("librdkafka", level, __file__, 1, message, None, None)


def written(lines: RepeatedLines, *messages: str, level: int = logging.ERROR) -> list[str]:
    return [r.getMessage() for r in map(lambda m: record(m, level), messages) if lines.filter(r)]


def test_a_failure_repeated_at_each_try_is_written_once_a_minute_with_the_count_held_back() -> None:
    clock = Clock()
    lines = RepeatedLines(every_s=60.0, clock=clock)
    tries = [REFUSED.format(ms=n % 3, more="" if n % 2 else ", 1 identical error(s) suppressed")
             for n in range(1200)]
    assert written(lines, *tries) == [tries[0]]  # the details of each try make no new line
    clock.now += 59.9
    assert written(lines, tries[1]) == []
    clock.now += 0.1
    assert written(lines, tries[2]) == [f"{tries[2]} (1200 more like it in the last 60 s)"]
    clock.now += 1
    assert written(lines, tries[3]) == []


def test_other_lines_and_levels_are_not_held_back_by_a_repeated_one() -> None:
    lines = RepeatedLines(every_s=60.0, clock=Clock())
    refused = REFUSED.format(ms=0, more="")
    other_broker = refused.replace("kafka:9092", "kafka-2:9092")
    assert written(lines, refused, other_broker, refused) == [refused, other_broker]
    assert written(lines, refused, level=logging.WARNING) == [refused]


def test_lines_that_never_repeat_do_not_grow_its_memory_for_ever() -> None:
    lines = RepeatedLines(every_s=60.0, clock=Clock(), max_lines=10)
    assert len(written(lines, *(f"broker {n} is down" for n in range(25)))) == 25
    assert len(lines._seen) <= 10
