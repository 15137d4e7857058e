"""Cron patterns as people read them: in words, as fire times, and the seconds-first trap.

Patterns are croniter's: five fields (minute hour day-of-month month weekday), or six with
seconds LAST. Other schedulers (Quartz, Spring, node-cron) put seconds FIRST, so
``"*/2 * * * * *"`` written for "every 2 seconds" runs every second during even minutes
here. `seconds_first_warning` spots the patterns that look written that way.

The words come from cron-descriptor, which reads six fields the other way (seconds first,
or a year last). So a six-field pattern is handed to it as its seven-field form
``second minute hour day month weekday *``, which it reads field by field; the words then
describe what croniter fires. Where it cannot describe a pattern croniter accepts, the
words name each field as croniter reads it (`fields_in_words`), which is always true.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

FIELD_NAMES = ("minute", "hour", "day of month", "month", "weekday", "second")
_EVERY_VALUE = ("*", "*/1")
_EVERY_SECOND = (*_EVERY_VALUE, "0-59")
_EVERY_MINUTE = (*_EVERY_VALUE, "0-59")


def fields_in_words(pattern: str) -> str:
    """Each field of PATTERN named as croniter reads it (seconds, when given, first)."""
    named = list(zip(FIELD_NAMES, pattern.split(), strict=False))
    if len(named) == 6:
        named = [named[5], *named[:5]]
    return ", ".join(f"{name} {value}" for name, value in named)


def _descriptor_words(pattern: str) -> str | None:
    """cron-descriptor's words for croniter's reading of PATTERN, or None if it has none."""
    try:
        from cron_descriptor import ExpressionDescriptor
    except ImportError:  # pragma: no cover - a dependency; the fallback stays true without it
        return None
    fields = pattern.split()
    if len(fields) == 6:  # croniter's seconds last -> cron-descriptor's 7-field form
        fields = [fields[5], *fields[:5], "*"]
    try:
        # a fixed locale: its default reads the environment's and warns when there is none
        return str(ExpressionDescriptor(" ".join(fields), locale_code="en_US",
                                        use_24hour_time_format=True).get_description())
    except Exception:  # noqa: BLE001 - any failure of the words falls back to the fields
        return None


def describe_pattern(pattern: str, tz: str) -> str:
    """PATTERN in words, with its time zone: ``"At 09:00, Monday through Friday (UTC)"``."""
    words = _descriptor_words(pattern) or f"cron fields: {fields_in_words(pattern)}"
    return f"{words} ({tz})"


def next_fire_times(pattern: str, tz: str, after_ms: int, count: int) -> list[int]:
    """The next COUNT ticks of PATTERN in zone TZ strictly after AFTER_MS (epoch ms)."""
    start = datetime.fromtimestamp(after_ms / 1000, UTC).astimezone(ZoneInfo(tz))
    it = croniter(pattern, start)
    return [int(it.get_next(datetime).timestamp() * 1000) for _ in range(count)]


def fire_time_text(epoch_ms: int, tz: str) -> str:
    """EPOCH_MS as a wall-clock time of zone TZ: ``"Tue 2024-07-02 09:00:00 CEST"``."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC).astimezone(ZoneInfo(tz))
    return moment.strftime("%a %Y-%m-%d %H:%M:%S %Z")


def seconds_first_warning(pattern: str) -> str | None:
    """Why six-field PATTERN looks written seconds first, and its seconds-last form; None
    when it does not: croniter would run it every second, but only in some minutes."""
    fields = pattern.split()
    if len(fields) != 6 or fields[5] not in _EVERY_SECOND or fields[0] in _EVERY_MINUTE:
        return None
    warning = (f"cron pattern {pattern!r} has six fields, and croniter reads the sixth as the "
               f"seconds (seconds LAST): it runs every second during the minutes that "
               f"{fields[0]!r} matches")
    rewrite = " ".join([*fields[1:], fields[0]])
    try:
        croniter(rewrite, datetime.now(UTC)).get_next(datetime)
    except (CroniterError, ValueError, KeyError, TypeError):
        return warning  # read seconds first it is no valid pattern either: no rewrite to offer
    meant = describe_pattern(rewrite, "UTC").removesuffix(" (UTC)")
    return f"{warning}. If you meant seconds first ({meant[:1].lower()}{meant[1:]}), " \
           f"write {rewrite!r}"
