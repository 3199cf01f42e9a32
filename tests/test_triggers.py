"""Triggers: validation, fire times, and exact translation into each provider's syntax.

Translations are checked by evaluating the translated text with small evaluators written
here from each provider's documentation (EventBridge Scheduler's 6-field cron with `?`,
1-7 = SUN-SAT and a year; Cloud Scheduler's unix cron; NCrontab's 6-field syntax, which ANDs
the day fields), never by reading it back through deployer.triggers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from croniter.croniter import CroniterBadDateError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from deployer.errors import TriggerError
from deployer.providers.aws.target import to_eventbridge
from deployer.providers.azure.target import to_ncrontab
from deployer.providers.gcp.target import to_cloud_scheduler
from deployer.triggers import (
    Cron,
    Every,
    Http,
    Trigger,
    describe,
    next_fire_times,
    trigger_from_dict,
    trigger_to_dict,
    validate_triggers,
)

FIRE_TIMES = 50
UTC = timezone.utc
MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
PROPERTY_SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# --- generating unix cron expressions ----------------------------------------------------------


@st.composite
def field_items(
    draw: st.DrawFn,
    low: int,
    high: int,
    *,
    names: list[str] | None = None,
    step_top: int | None = None,
    star_steps: bool = True,
) -> str:
    """A comma list of 1-3 cron items for a field whose values run low..high."""
    step_top = high if step_top is None else step_top

    def value(number: int) -> str:
        if names is not None and number - low < len(names) and draw(st.booleans()):
            name = names[number - low]
            return draw(st.sampled_from([name, name.lower(), name.capitalize()]))
        return str(number)

    kinds = ["number", "range", "range-step", "start-step"] + (["star-step"] if star_steps else [])
    items = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(kinds))
        if kind == "number":
            items.append(value(draw(st.integers(low, high))))
        elif kind in ("range", "range-step"):
            # strictly increasing: croniter reads 'a-a' as the whole field, unlike cron
            start = draw(st.integers(low, high - 1))
            end = draw(st.integers(start + 1, high))
            item = f"{value(start)}-{value(end)}"
            if kind == "range-step":
                item += f"/{draw(st.integers(1, high - low))}"
            items.append(item)
        elif kind == "start-step":
            start = draw(st.integers(low, step_top))
            items.append(f"{value(start)}/{draw(st.integers(1, step_top - low + 1))}")
        else:
            items.append(f"*/{draw(st.integers(2, step_top - low))}")
    return ",".join(items)


@st.composite
def time_field(draw: st.DrawFn, low: int, high: int, names: list[str] | None = None) -> str:
    if draw(st.integers(0, 3)) == 0:
        return "*"
    return draw(field_items(low, high, names=names))


@st.composite
def cron_expressions(draw: st.DrawFn) -> str:
    minute = draw(time_field(0, 59))
    hour = draw(time_field(0, 23))
    month = draw(time_field(1, 12, MONTH_NAMES))
    day_fields = draw(st.sampled_from(["neither", "day-of-month", "day-of-week", "both"]))
    # Both restricted and one written with '*' is refused as ambiguous (Vixie ANDs, croniter ORs)
    star_steps = day_fields != "both"
    day_of_month = "*"
    day_of_week = "*"
    if day_fields in ("day-of-month", "both"):
        day_of_month = draw(field_items(1, 31, star_steps=star_steps))
    if day_fields in ("day-of-week", "both"):
        day_of_week = draw(field_items(0, 7, names=DAY_NAMES, step_top=6, star_steps=star_steps))
    return f"{minute} {hour} {day_of_month} {month} {day_of_week}"


def croniter_can_schedule(expression: str) -> bool:
    try:
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:
        return False
    return True


start_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2060, 12, 31), timezones=st.just(UTC)
)


def croniter_fire_times(
    expression: str, after: datetime, count: int = FIRE_TIMES, tz: str = "UTC"
) -> list[datetime]:
    iterator = croniter(expression, after.astimezone(ZoneInfo(tz)))
    return [iterator.get_next(datetime).astimezone(UTC) for _ in range(count)]


def croniter_restricts_both_day_fields(expression: str) -> bool:
    """True when croniter fires on either day field, and neither alone says which days."""
    expanded = croniter(expression).expanded
    days_of_month, days_of_week = expanded[2], expanded[4]
    if days_of_month == ["*"] or days_of_week == ["*"]:
        return False
    return len(set(days_of_month)) < 31 and len({int(day) % 7 for day in days_of_week}) < 7


# --- independent evaluators of each provider's syntax -------------------------------------------


def parse_values(
    text: str,
    low: int,
    high: int,
    *,
    names: list[str] | None = None,
    start_steps: bool = False,
) -> set[int]:
    """Values of one field in plain cron syntax: '*', lists, 'a', 'a-b', '*/n', 'a-b/n'."""
    values: set[int] = set()
    for item in text.split(","):
        match = re.fullmatch(r"(\*|(\w+)(?:-(\w+))?)(?:/(\d+))?", item)
        assert match is not None, f"{item!r} is not valid syntax"
        whole, start_text, end_text, step_text = match.groups()
        step = int(step_text) if step_text else 1
        assert step > 0

        def number(word: str) -> int:
            if word.isdigit():
                return int(word)
            assert names is not None, f"{word!r} is not a number"
            return names.index(word.upper()) + low

        if whole == "*":
            start, end = low, high
        else:
            start = number(start_text)
            if end_text is not None:
                end = number(end_text)
            else:
                assert step_text is None or start_steps, f"{item!r}: 'a/n' is not in this syntax"
                end = high if step_text else start
        assert low <= start <= end <= high, f"{item!r} is outside {low}-{high}"
        values.update(range(start, end + 1, step))
    return values


def fire_times(
    day_matches: Callable[[date], bool],
    hours: set[int],
    minutes: set[int],
    after: datetime,
    count: int = FIRE_TIMES,
) -> list[datetime]:
    found: list[datetime] = []
    day = after.date()
    for _ in range(366 * 300):
        if day_matches(day):
            for hour in sorted(hours):
                for minute in sorted(minutes):
                    moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                    if moment > after:
                        found.append(moment)
                        if len(found) == count:
                            return found
        day += timedelta(days=1)
    raise AssertionError("no fire times within 300 years")


def unix_day_of_week(day: date) -> int:
    return day.isoweekday() % 7  # Sunday 0 .. Saturday 6


def eventbridge_fire_times(expression: str, after: datetime) -> list[datetime]:
    """EventBridge Scheduler: cron(minutes hours day-of-month month day-of-week year).

    Per its docs: exactly one of day-of-month/day-of-week is '?'; day-of-week is 1-7 or
    SUN-SAT with 1 = Sunday and takes no '/'; the year runs 1970-2199.
    """
    match = re.fullmatch(r"cron\((\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\)", expression)
    assert match is not None, f"{expression!r} is not cron(6 fields)"
    minute, hour, day_of_month, month, day_of_week, year = match.groups()
    assert (day_of_month == "?") != (day_of_week == "?"), "exactly one day field must be '?'"
    assert "/" not in day_of_week
    assert not set(day_of_month + day_of_week) & set("LW#")
    minutes = parse_values(minute, 0, 59, start_steps=True)
    hours = parse_values(hour, 0, 23, start_steps=True)
    months = parse_values(month, 1, 12, names=MONTH_NAMES, start_steps=True)
    years = parse_values(year, 1970, 2199, start_steps=True)
    if day_of_month == "?":
        weekdays = parse_values(day_of_week, 1, 7, names=DAY_NAMES)

        def day_matches(day: date) -> bool:
            return unix_day_of_week(day) + 1 in weekdays
    else:
        month_days = parse_values(day_of_month, 1, 31, start_steps=True)

        def day_matches(day: date) -> bool:
            return day.day in month_days

    return fire_times(
        lambda day: day.year in years and day.month in months and day_matches(day),
        hours,
        minutes,
        after,
    )


def cloud_scheduler_fire_times(expression: str, after: datetime) -> list[datetime]:
    """Cloud Scheduler unix-cron: day-of-week 0-7 (0 and 7 Sunday); the day fields are ORed
    unless one of them is '*' (its docs)."""
    fields = expression.split(" ")
    assert len(fields) == 5, f"{expression!r} does not have 5 fields"
    minute, hour, day_of_month, month, day_of_week = fields
    for day_field in (day_of_month, day_of_week):
        # a starred step is where crons disagree about "restricted"; our output must avoid it
        assert day_field == "*" or "*" not in day_field
    minutes = parse_values(minute, 0, 59)
    hours = parse_values(hour, 0, 23)
    months = parse_values(month, 1, 12, names=MONTH_NAMES)
    month_days = parse_values(day_of_month, 1, 31)
    weekdays = {day % 7 for day in parse_values(day_of_week, 0, 7, names=DAY_NAMES)}
    either = day_of_month != "*" and day_of_week != "*"

    def day_matches(day: date) -> bool:
        if day.month not in months:
            return False
        by_month_day = day.day in month_days
        by_weekday = unix_day_of_week(day) in weekdays
        return by_month_day or by_weekday if either else by_month_day and by_weekday

    return fire_times(day_matches, hours, minutes, after)


def ncrontab_fire_times(expression: str, after: datetime) -> list[datetime]:
    """NCrontab with seconds: {second} {minute} {hour} {day} {month} {day-of-week}.

    Day-of-week is 0-6 (Sunday 0; 7 is rejected); a day must match day AND day-of-week
    (CrontabSchedule.TryGetNextOccurrence checks the weekday after the day).
    """
    fields = expression.split(" ")
    assert len(fields) == 6, f"{expression!r} does not have 6 fields"
    second, minute, hour, day_of_month, month, day_of_week = fields
    assert parse_values(second, 0, 59) == {0}, "fires once a minute at most, at second 0"
    minutes = parse_values(minute, 0, 59, start_steps=True)
    hours = parse_values(hour, 0, 23, start_steps=True)
    month_days = parse_values(day_of_month, 1, 31, start_steps=True)
    months = parse_values(month, 1, 12, start_steps=True)
    weekdays = parse_values(day_of_week, 0, 6, start_steps=True)
    return fire_times(
        lambda day: (
            day.month in months and day.day in month_days and unix_day_of_week(day) in weekdays
        ),
        hours,
        minutes,
        after,
    )


def epoch_aligned_fire_times(seconds: int, after: datetime, count: int) -> list[datetime]:
    first = int(after.timestamp()) // seconds + 1
    return [datetime.fromtimestamp((first + n) * seconds, UTC) for n in range(count)]


# --- Cron: what it accepts and when it fires -----------------------------------------------------


@PROPERTY_SETTINGS
@given(cron_expressions())
def test_cron_accepts_exactly_the_expressions_croniter_can_schedule(expression: str) -> None:
    if croniter_can_schedule(expression):
        Cron(expression)
    else:
        with pytest.raises(TriggerError, match="never fire"):
            Cron(expression)


@PROPERTY_SETTINGS
@given(
    cron_expressions(),
    start_times,
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
)
def test_next_fire_times_match_croniter_in_the_cron_time_zone(
    expression: str, after: datetime, tz: str
) -> None:
    assume(croniter_can_schedule(expression))
    expected = croniter_fire_times(expression, after, 20, tz)
    assert next_fire_times(Cron(expression, tz=tz), after, 20) == expected


def test_next_fire_times_follow_daylight_saving_in_berlin() -> None:
    daily = Cron("30 2 * * *", tz="Europe/Berlin")
    spring = next_fire_times(daily, datetime(2024, 3, 29, 12, tzinfo=UTC), 3)
    # 02:30 does not exist on 2024-03-31; croniter runs it when the gap ends, 03:00 CEST
    assert spring == [
        datetime(2024, 3, 30, 1, 30, tzinfo=UTC),
        datetime(2024, 3, 31, 1, 0, tzinfo=UTC),
        datetime(2024, 4, 1, 0, 30, tzinfo=UTC),
    ]
    autumn = next_fire_times(daily, datetime(2024, 10, 26, 12, tzinfo=UTC), 2)
    # 02:30 happens twice on 2024-10-27 (CEST, then CET)
    assert autumn == [
        datetime(2024, 10, 27, 0, 30, tzinfo=UTC),
        datetime(2024, 10, 27, 1, 30, tzinfo=UTC),
    ]
    summer = next_fire_times(
        Cron("0 6 * * *", tz="Europe/Berlin"), datetime(2024, 7, 1, tzinfo=UTC), 1
    )
    assert summer == [datetime(2024, 7, 1, 4, 0, tzinfo=UTC)]


def test_next_fire_times_are_strictly_after_and_in_utc() -> None:
    after = datetime(2024, 1, 1, 7, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # 06:00 UTC
    times = next_fire_times(Cron("0 6 * * *"), after, 2)
    assert times == [datetime(2024, 1, 2, 6, tzinfo=UTC), datetime(2024, 1, 3, 6, tzinfo=UTC)]
    assert all(time.tzinfo == UTC for time in times)


def test_next_fire_times_need_an_aware_start() -> None:
    with pytest.raises(TriggerError, match="timezone-aware"):
        next_fire_times(Cron("0 6 * * *"), datetime(2024, 1, 1), 1)
    with pytest.raises(TriggerError, match="count"):
        next_fire_times(Every(minutes=5), datetime(2024, 1, 1, tzinfo=UTC), -1)


def test_equal_range_is_one_value_not_the_whole_field() -> None:
    # croniter alone reads '5-5' as every minute; standard cron means minute 5
    times = next_fire_times(Cron("5-5 * * * *"), datetime(2024, 1, 1, tzinfo=UTC), 2)
    assert times == [datetime(2024, 1, 1, 0, 5, tzinfo=UTC), datetime(2024, 1, 1, 1, 5, tzinfo=UTC)]


@pytest.mark.parametrize(
    "macro, expression",
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@ANNUALLY", "0 0 1 1 *"),
    ],
)
def test_macros_mean_their_usual_five_fields(macro: str, expression: str) -> None:
    after = datetime(2024, 5, 17, 13, 7, tzinfo=UTC)
    assert next_fire_times(Cron(macro), after, 5) == croniter_fire_times(expression, after, 5)


def test_day_fields_fire_when_either_matches_if_both_are_restricted() -> None:
    times = next_fire_times(Cron("0 0 13 * FRI"), datetime(2024, 9, 1, tzinfo=UTC), 4)
    # Fridays of September 2024 plus the 13th (itself a Friday)
    assert [time.day for time in times] == [6, 13, 20, 27]
    times = next_fire_times(Cron("0 0 1 * MON"), datetime(2024, 9, 28, tzinfo=UTC), 3)
    assert [(time.month, time.day) for time in times] == [(9, 30), (10, 1), (10, 7)]


# --- Cron: bad input names the field ----------------------------------------------------------


@pytest.mark.parametrize(
    "expression, fragments",
    [
        ("60 * * * *", ["minute", "0-59"]),
        ("0 24 * * *", ["hour", "0-23"]),
        ("0 0 0 * *", ["day-of-month", "1-31"]),
        ("0 0 32 * *", ["day-of-month", "1-31"]),
        ("0 0 * 13 *", ["month", "1-12 or JAN-DEC"]),
        ("0 0 * FOO *", ["month", "JAN-DEC"]),
        ("0 0 * * 8", ["day-of-week", "0-7 or SUN-SAT"]),
        ("0 0 * * FUNDAY", ["day-of-week", "SUN-SAT"]),
        ("0 0 ? * *", ["day-of-month", "'?'", "write '*'"]),
        ("0 0 * * ?", ["day-of-week", "'?'"]),
        ("0 0 L * *", ["day-of-month", "'L'"]),
        ("0 0 15W * *", ["day-of-month", "'W'"]),
        ("0 0 * * 5L", ["day-of-week", "'L'"]),
        ("0 0 * * 5#2", ["day-of-week", "'#'"]),
        ("*/0 * * * *", ["minute", "step", "> 0"]),
        ("0 */x * * *", ["hour", "step"]),
        ("0 */\u00b2 * * *", ["hour", "step"]),
        ("*/60 * * * *", ["minute", "Every("]),
        ("0 10-5 * * *", ["hour", "backwards", "22-23,0-2"]),
        ("0 0 * * SAT-SUN", ["day-of-week", "backwards", "SAT,SUN"]),
        ("0 0 * DEC-JAN *", ["month", "backwards"]),
        ("*,5 * * * *", ["minute", "'*'"]),
        ("1,,2 * * * *", ["minute", "empty"]),
        ("0 0 * * 7/2", ["day-of-week", "Sunday as 0"]),
        ("0 0 * * -1", ["day-of-week", "not valid"]),
        ("0 0 31 2 *", ["never fire", "month", "day-of-month"]),
        ("0 0 30,31 2 *", ["never fire"]),
        ("0 0 */2 * 1", ["day-of-month", "day-of-week", "disagree", "1-31/2"]),
        ("0 0 1 * */2", ["day-of-month", "day-of-week", "disagree"]),
    ],
)
def test_invalid_cron_fields_name_the_field_and_what_it_takes(
    expression: str, fragments: list[str]
) -> None:
    with pytest.raises(TriggerError) as raised:
        Cron(expression)
    for fragment in fragments:
        assert fragment in str(raised.value)


@pytest.mark.parametrize(
    "expression", ["0 6 * *", "0 6 * * * *", "0 0 6 * * ? 2030", "", "@reboot"]
)
def test_wrong_number_of_fields_is_refused_with_the_field_names(expression: str) -> None:
    with pytest.raises(TriggerError) as raised:
        Cron(expression)
    message = str(raised.value)
    assert "5 fields" in message or "'0 6 * * *'" in message
    if not expression.startswith("@"):
        assert "minute hour day-of-month month day-of-week" in message


@pytest.mark.parametrize(
    "tz", ["Mars/Olympus", "Europe/Berln", "utc", "", "../etc/passwd", "localtime"]
)
def test_unknown_time_zone_is_named_with_an_iana_hint(tz: str) -> None:
    with pytest.raises(TriggerError) as raised:
        Cron("0 6 * * *", tz=tz)
    assert repr(tz) in str(raised.value)
    assert "'Europe/Berlin'" in str(raised.value)


def test_cron_parts_must_be_strings() -> None:
    with pytest.raises(TriggerError, match="expr"):
        Cron(6)  # type: ignore[arg-type]
    with pytest.raises(TriggerError, match="tz"):
        Cron("0 6 * * *", tz=None)  # type: ignore[arg-type]


# --- Every ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, field",
    [
        ({}, "minutes"),
        ({"minutes": 0}, "minutes"),
        ({"minutes": -5}, "minutes"),
        ({"hours": -1}, "hours"),
        ({"days": -1, "hours": 30}, "days"),
        ({"hours": 1.5}, "hours"),
        ({"minutes": "5"}, "minutes"),
        ({"days": True}, "days"),
    ],
)
def test_every_refuses_zero_negative_and_non_integer_intervals(
    arguments: dict[str, object], field: str
) -> None:
    with pytest.raises(TriggerError, match=field):
        Every(**arguments)  # type: ignore[arg-type]


def test_every_seconds_is_the_whole_interval() -> None:
    assert Every(minutes=5).seconds == 300
    assert Every(hours=1, minutes=30).seconds == 5400
    assert Every(days=2, hours=1).seconds == 2 * 86400 + 3600


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 200), st.integers(0, 50), st.integers(0, 10), start_times, st.integers(1, 5))
def test_every_fires_on_multiples_of_its_interval_since_the_epoch(
    minutes: int, hours: int, days: int, after: datetime, count: int
) -> None:
    assume(minutes + hours + days > 0)
    every = Every(minutes=minutes, hours=hours, days=days)
    times = next_fire_times(every, after, count)
    assert times == epoch_aligned_fire_times(every.seconds, after, count)
    assert times[0] > after >= times[0] - timedelta(seconds=every.seconds)


def test_every_fire_times_do_not_depend_on_when_you_ask() -> None:
    quarter_hour = Every(minutes=15)
    early = next_fire_times(quarter_hour, datetime(2024, 1, 1, 6, 1, 59, 999, tzinfo=UTC), 3)
    assert [time.minute for time in early] == [15, 30, 45]
    on_the_dot = next_fire_times(quarter_hour, datetime(2024, 1, 1, 6, 15, tzinfo=UTC), 1)
    assert on_the_dot == [datetime(2024, 1, 1, 6, 30, tzinfo=UTC)]


# --- Translations of Cron -------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(cron_expressions(), start_times)
def test_eventbridge_cron_fires_at_the_same_instants(expression: str, after: datetime) -> None:
    assume(croniter_can_schedule(expression))
    try:
        translated, tz = to_eventbridge(Cron(expression))
    except TriggerError as error:
        assert croniter_restricts_both_day_fields(expression)
        assert "AWS EventBridge Scheduler" in str(error)
        return
    assert tz == "UTC"
    assert len(translated) <= 256  # EventBridge Scheduler's limit on ScheduleExpression
    assert eventbridge_fire_times(translated, after) == croniter_fire_times(expression, after)


@PROPERTY_SETTINGS
@given(cron_expressions(), start_times)
def test_cloud_scheduler_cron_fires_at_the_same_instants(expression: str, after: datetime) -> None:
    assume(croniter_can_schedule(expression))
    translated, tz = to_cloud_scheduler(Cron(expression))
    assert tz == "UTC"
    assert cloud_scheduler_fire_times(translated, after) == croniter_fire_times(expression, after)


@PROPERTY_SETTINGS
@given(cron_expressions(), start_times)
def test_ncrontab_cron_fires_at_the_same_instants(expression: str, after: datetime) -> None:
    assume(croniter_can_schedule(expression))
    try:
        translated, tz = to_ncrontab(Cron(expression))
    except TriggerError as error:
        assert croniter_restricts_both_day_fields(expression)
        assert "NCRONTAB" in str(error)
        return
    assert tz == "UTC"
    assert ncrontab_fire_times(translated, after) == croniter_fire_times(expression, after)


@pytest.mark.parametrize(
    "expression, eventbridge, cloud_scheduler, ncrontab",
    [
        ("0 6 * * MON-FRI", "cron(0 6 ? * 2-6 *)", "0 6 * * 1-5", "0 0 6 * * 1-5"),
        ("*/15 * * * *", "cron(0,15,30,45 * * * ? *)", "*/15 * * * *", "0 */15 * * * *"),
        ("0 0 * * 0", "cron(0 0 ? * 1 *)", "0 0 * * 0", "0 0 0 * * 0"),
        ("0 0 * * 7", "cron(0 0 ? * 1 *)", "0 0 * * 0", "0 0 0 * * 0"),
        ("0 0 * * 5-7", "cron(0 0 ? * 1,6,7 *)", "0 0 * * 0,5,6", "0 0 0 * * 0,5,6"),
        ("0 12 1 JAN,jul *", "cron(0 12 1 1,7 ? *)", "0 12 1 1,7 *", "0 0 12 1 1,7 *"),
        ("0 0 1-31 * 1", "cron(0 0 * * ? *)", "0 0 * * *", "0 0 0 * * *"),
    ],
)
def test_translations_read_plainly(
    expression: str, eventbridge: str, cloud_scheduler: str, ncrontab: str
) -> None:
    cron = Cron(expression, tz="Asia/Tokyo")
    assert to_eventbridge(cron) == (eventbridge, "Asia/Tokyo")
    assert to_cloud_scheduler(cron) == (cloud_scheduler, "Asia/Tokyo")
    assert to_ncrontab(cron) == (ncrontab, "Asia/Tokyo")


def test_either_day_field_cron_is_refused_where_the_provider_ands_them() -> None:
    cron = Cron("0 0 1,15 * 5")
    for translate, provider in [(to_eventbridge, "AWS"), (to_ncrontab, "Azure")]:
        with pytest.raises(TriggerError) as raised:
            translate(cron)
        message = str(raised.value)
        assert provider in message and "day-of-month" in message and "day-of-week" in message
        assert "Cron('0 0 1,15 * *')" in message and "Cron('0 0 * * 5')" in message
    assert to_cloud_scheduler(cron) == ("0 0 1,15 * 5", "UTC")


@pytest.mark.parametrize("translate", [to_eventbridge, to_cloud_scheduler, to_ncrontab])
@pytest.mark.parametrize("expression", ["30 2 * * *", "*/15 * * * *", "0 2 * * SUN"])
def test_cron_inside_a_clock_change_window_is_refused(
    translate: Callable[[Cron], tuple[str, str]], expression: str
) -> None:
    with pytest.raises(TriggerError) as raised:
        translate(Cron(expression, tz="Europe/Berlin"))
    message = str(raised.value)
    assert "Europe/Berlin" in message and "tz='UTC'" in message and "02:00-03:00" in message


@pytest.mark.parametrize("translate", [to_eventbridge, to_cloud_scheduler, to_ncrontab])
@pytest.mark.parametrize("expression", ["0 6 * * *", "30 2 10 * *", "0 1,3-23 * * *"])
def test_cron_outside_clock_change_windows_keeps_its_time_zone(
    translate: Callable[[Cron], tuple[str, str]], expression: str
) -> None:
    # Berlin changes clocks on the last Sunday of March and October, between 02:00 and 03:00
    assert translate(Cron(expression, tz="Europe/Berlin"))[1] == "Europe/Berlin"


def test_cron_in_a_zone_without_clock_changes_translates_at_any_hour() -> None:
    assert to_eventbridge(Cron("30 2 * * *", tz="Asia/Kolkata")) == (
        "cron(30 2 * * ? *)",
        "Asia/Kolkata",
    )


@pytest.mark.parametrize("translate", [to_eventbridge, to_cloud_scheduler, to_ncrontab])
def test_http_has_no_schedule_to_translate(translate: Callable[[object], object]) -> None:
    with pytest.raises(TriggerError, match="http"):
        translate(Http())


# --- Translations of Every --------------------------------------------------------------------

RATE = re.compile(r"rate\((?:1 (minute|hour|day)|([1-9][0-9]*) (minutes|hours|days))\)")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 72), st.integers(0, 30))
def test_eventbridge_rate_has_one_unit_and_the_same_interval(
    minutes: int, hours: int, days: int
) -> None:
    assume(minutes + hours + days > 0)
    every = Every(minutes=minutes, hours=hours, days=days)
    expression, tz = to_eventbridge(every)
    match = RATE.fullmatch(expression)
    assert match is not None, f"{expression!r} is not valid AWS rate syntax"
    singular, count, plural = match.groups()
    assert count != "1", "AWS wants 'rate(1 minute)', not 'rate(1 minutes)'"
    unit = singular or plural.rstrip("s")
    value = 1 if singular else int(count)
    assert value * {"minute": 60, "hour": 3600, "day": 86400}[unit] == every.seconds
    assert tz == "UTC"


@pytest.mark.parametrize(
    "every, expected",
    [
        (Every(minutes=1), "rate(1 minute)"),
        (Every(minutes=5), "rate(5 minutes)"),
        (Every(minutes=60), "rate(1 hour)"),
        (Every(hours=1, minutes=30), "rate(90 minutes)"),
        (Every(hours=24), "rate(1 day)"),
        (Every(days=2, hours=12), "rate(60 hours)"),
    ],
)
def test_eventbridge_rate_examples(every: Every, expected: str) -> None:
    assert to_eventbridge(every) == (expected, "UTC")


def cron_can_list_every(every: Every) -> bool:
    minutes = every.seconds // 60
    return (
        60 % minutes == 0
        or (minutes % 60 == 0 and 1440 % minutes == 0)
        or minutes == 7 * 1440  # the epoch fell on a Thursday
    )


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 200), st.integers(0, 30), st.integers(0, 8), start_times)
def test_every_as_cloud_scheduler_and_ncrontab_fires_on_the_epoch_grid(
    minutes: int, hours: int, days: int, after: datetime
) -> None:
    assume(minutes + hours + days > 0)
    every = Every(minutes=minutes, hours=hours, days=days)
    count = 10
    expected = epoch_aligned_fire_times(every.seconds, after, count)
    for translate, evaluate, provider in [
        (to_cloud_scheduler, cloud_scheduler_fire_times, "GCP Cloud Scheduler"),
        (to_ncrontab, ncrontab_fire_times, "NCRONTAB"),
    ]:
        try:
            expression, tz = translate(every)
        except TriggerError as error:
            assert not cron_can_list_every(every)
            assert provider in str(error) and "Cron('" in str(error)
            continue
        assert cron_can_list_every(every)
        assert tz == "UTC"
        assert evaluate(expression, after)[:count] == expected


def test_every_that_cron_cannot_list_names_crons_that_would_work() -> None:
    with pytest.raises(TriggerError) as raised:
        to_cloud_scheduler(Every(minutes=45))
    message = str(raised.value)
    assert "every 45 minutes" in message
    assert "Cron('*/30 * * * *')" in message and "Cron('0 * * * *')" in message


# --- validate_triggers ------------------------------------------------------------------------


def test_validate_triggers_accepts_one_trigger_or_a_list_or_tuple() -> None:
    cron, http = Cron("0 6 * * *"), Http()
    assert validate_triggers(cron) == (cron,)
    assert validate_triggers([cron, http]) == (cron, http)
    assert validate_triggers((cron, Every(minutes=5))) == (cron, Every(minutes=5))
    assert validate_triggers([]) == ()


@pytest.mark.parametrize(
    "triggers, fragments",
    [
        ("0 6 * * *", ["str", "Cron('0 6 * * *')"]),
        (None, ["None"]),
        ({Http()}, ["set"]),
        ([Cron("0 6 * * *"), "0 7 * * *"], ["triggers[1]", "'0 7 * * *'", "Cron("]),
        ([Http(), 5], ["triggers[1]", "5", "int"]),
        ([Http(), Http(public=True)], ["triggers[1]", "second Http", "triggers[0]"]),
        ([Cron("0 6 * * 1-5"), Cron("0 6 * * MON-FRI")], ["triggers[1]", "triggers[0]", "same"]),
        ([Every(minutes=90), Every(hours=1, minutes=30)], ["triggers[1]", "same"]),
        ([Every(minutes=15), Cron("*/15 * * * *")], ["triggers[1]", "every 15 minutes"]),
    ],
)
def test_validate_triggers_names_the_offending_item(triggers: object, fragments: list[str]) -> None:
    with pytest.raises(TriggerError) as raised:
        validate_triggers(triggers)
    for fragment in fragments:
        assert fragment in str(raised.value)


def test_same_cron_in_different_time_zones_is_not_a_duplicate() -> None:
    berlin, tokyo = Cron("0 6 * * *", tz="Europe/Berlin"), Cron("0 6 * * *", tz="Asia/Tokyo")
    assert validate_triggers([berlin, tokyo]) == (berlin, tokyo)


def test_http_is_authenticated_unless_public_is_explicit() -> None:
    assert Http().public is False
    assert Http(public=True).public is True
    with pytest.raises(TriggerError, match="public"):
        Http(public="yes")  # type: ignore[arg-type]


# --- manifest dicts and descriptions -----------------------------------------------------------

triggers_strategy = st.one_of(
    st.builds(Http, public=st.booleans()),
    st.builds(Every, minutes=st.integers(1, 500), hours=st.integers(0, 48), days=st.integers(0, 9)),
    st.builds(
        Cron,
        expr=cron_expressions().filter(croniter_can_schedule),
        tz=st.sampled_from(["UTC", "Europe/Berlin", "America/Sao_Paulo"]),
    ),
)


@settings(max_examples=100, deadline=None)
@given(triggers_strategy)
def test_trigger_dicts_are_json_and_round_trip(trigger: Trigger) -> None:
    data = trigger_to_dict(trigger)
    assert trigger_from_dict(json.loads(json.dumps(data))) == trigger


def test_trigger_dicts_have_a_type() -> None:
    assert trigger_to_dict(Cron("0 6 * * *", tz="Europe/Berlin")) == {
        "type": "cron",
        "expr": "0 6 * * *",
        "tz": "Europe/Berlin",
    }
    assert trigger_to_dict(Every(minutes=5)) == {
        "type": "every",
        "minutes": 5,
        "hours": 0,
        "days": 0,
    }
    assert trigger_to_dict(Http()) == {"type": "http", "public": False}


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"type": "cron", "expr": "0 25 * * *", "tz": "UTC"}, "hour"),
        ({"type": "cron", "tz": "UTC"}, "expr"),
        ({"type": "cron", "expr": 5}, "expr"),
        ({"type": "cron", "expr": "0 6 * * *", "tz": "Nowhere/City"}, "Nowhere/City"),
        ({"type": "every", "minutes": "5"}, "minutes"),
        ({"type": "every", "minutes": 0}, "minutes"),
        ({"type": "http", "public": "yes"}, "public"),
        ({"type": "http", "auth": "none"}, "auth"),
        ({"type": "webhook"}, "webhook"),
        ({}, "type"),
        (["cron"], "mapping"),
    ],
)
def test_trigger_from_dict_refuses_bad_data(data: object, fragment: str) -> None:
    with pytest.raises(TriggerError, match=re.escape(fragment)):
        trigger_from_dict(data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "trigger, line",
    [
        (Cron("0 6 * * *", tz="Europe/Berlin"), "cron '0 6 * * *' (Europe/Berlin)"),
        (Cron("@daily"), "cron '@daily' (UTC)"),
        (Every(minutes=5), "every 5 minutes"),
        (Every(minutes=1), "every minute"),
        (Every(minutes=60), "every hour"),
        (Every(hours=1, minutes=30), "every 1 hour 30 minutes"),
        (Every(days=1), "every day"),
        (Every(days=2, minutes=5), "every 2 days 5 minutes"),
        (Http(), "http (authenticated)"),
        (Http(public=True), "http (public)"),
    ],
)
def test_describe_is_one_human_line(trigger: Trigger, line: str) -> None:
    assert describe(trigger) == line


# --- import cost ------------------------------------------------------------------------------


def test_importing_triggers_loads_neither_croniter_nor_heavy_modules() -> None:
    script = (
        "import json, sys, deployer.triggers\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    )
    loaded = set(json.loads(result.stdout))
    assert loaded & {"croniter", "pandas", "pyarrow", "boto3", "google", "azure"} == set()


@pytest.mark.parametrize(
    "given, hint",
    [
        ("daily", 'write Cron("0 6 * * *") (every day at 06:00) or Every(days=1)'),
        ("0 6 * * *", "write Cron('0 6 * * *')"),
        ("whenever", 'write Cron("<minute hour day month weekday>")'),
    ],
)
def test_a_string_given_as_a_trigger_gets_a_hint_that_is_itself_valid(
    given: str, hint: str
) -> None:
    with pytest.raises(TriggerError) as refused:
        validate_triggers(given)
    assert hint in str(refused.value)
    suggested = str(refused.value).split("write ", 1)[1].split(" (", 1)[0].split(", e.g.")[0]
    if "<" not in suggested:
        validate_triggers(eval(suggested, {"Cron": Cron, "Every": Every}))  # noqa: S307


def test_an_out_of_range_field_says_the_range_once_per_sentence() -> None:
    with pytest.raises(TriggerError) as refused:
        Cron("61 * * * *")
    message = str(refused.value)
    assert "minute '61' is outside 0-59." in message
    assert "(61)" not in message and message.count("0-59") == 2
