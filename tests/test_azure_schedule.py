"""Azure timers run in UTC; a Cron in a time zone is emulated (providers/azure/target.py).

The property: for every minute t around the clock changes of several years in
several zones (30-minute DST on Lord Howe, a +05:30 zone without DST, UTC),
the UTC NCRONTAB fires at t and the runtime's check passes at t exactly when
croniter in the zone fires at t (croniter started one minute before t names
t next). The NCRONTAB is evaluated by a small evaluator of the 6-field format
written here, independent of the code under test.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from deployer import Cron, Every, TriggerError
from deployer.providers.azure.target import local_schedule, timer_schedule
from deployer.runtimes.azure import is_fire_time
from deployer.triggers import parse_cron, unix_fields

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC")
YEARS = (2024, 2032)  # eight years of clock changes
MINUTE = timedelta(minutes=1)
WINDOW = timedelta(hours=3)  # each side of a clock change

# NCRONTAB fields: second minute hour day month day-of-week (Sunday 0).
NCRONTAB_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def ncrontab_fires(expression: str, moment: datetime) -> bool:
    """Whether a 6-field NCRONTAB fires at ``moment`` (UTC). Day fields AND, as NCrontab does."""
    fields = expression.split()
    assert len(fields) == 6, expression
    values = []
    for text, (low, high) in zip(fields, NCRONTAB_RANGES, strict=True):
        allowed: set[int] = set()
        for item in text.split(","):
            body, _, step = item.partition("/")
            if body == "*":
                first, last = low, high
            elif "-" in body:
                first, last = (int(part) for part in body.split("-"))
            else:
                first = last = int(body)
            assert low <= first <= last <= high, expression
            allowed.update(range(first, last + 1, int(step or 1)))
        values.append(allowed)
    utc = moment.astimezone(timezone.utc)
    return (
        utc.second in values[0]
        and utc.minute in values[1]
        and utc.hour in values[2]
        and utc.day in values[3]
        and utc.month in values[4]
        and utc.isoweekday() % 7 in values[5]
    )


def croniter_fires(expression: str, tz: str, moment: datetime) -> bool:
    started = (moment - MINUTE).astimezone(ZoneInfo(tz))
    following = croniter(expression, started).get_next(datetime)
    # Compared in UTC: an aware time in a repeated hour never equals one in another zone.
    return bool(following.astimezone(timezone.utc) == moment)


@cache
def clock_changes(tz: str) -> tuple[datetime, ...]:
    """The instants (UTC) at which ``tz`` changes its offset within YEARS."""
    zone = ZoneInfo(tz)
    changes = []
    moment = datetime(YEARS[0], 1, 1, tzinfo=timezone.utc)
    end = datetime(YEARS[1], 1, 1, tzinfo=timezone.utc)
    offset = moment.astimezone(zone).utcoffset()
    while moment < end:
        following = moment + timedelta(hours=1)
        if following.astimezone(zone).utcoffset() != offset:
            change = moment + MINUTE
            while change.astimezone(zone).utcoffset() == offset:
                change += MINUTE
            changes.append(change)
            offset = following.astimezone(zone).utcoffset()
        moment = following
    return tuple(changes)


minutes = st.sampled_from(["*", "0", "30", "45", "59", "0,30", "*/15", "*/7", "5-10", "15,45"])
hours = st.one_of(
    st.sampled_from(["*", "0", "1", "2", "3", "1-3", "2,14", "*/2", "0-5", "22-23"]),
    st.integers(0, 23).map(str),
)
days_of_month = st.sampled_from(["*", "*", "*", "1", "15", "28-31", "1-7", "25"])
months = st.sampled_from(["*", "*", "3", "10", "3,10", "4", "11", "9-12"])
days_of_week = st.sampled_from(["*", "*", "0", "1-5", "6", "0,6"])


@st.composite
def expressions(draw: st.DrawFn) -> str:
    day_of_month, day_of_week = draw(days_of_month), draw(days_of_week)
    if day_of_month != "*" and day_of_week != "*":
        day_of_week = "*"  # NCRONTAB ands the two: refused, tested below
    return " ".join([draw(minutes), draw(hours), day_of_month, draw(months), day_of_week])


@st.composite
def windows(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and the first minute of a window: around one of its clock changes, or anywhere."""
    tz = draw(st.sampled_from(ZONES))
    changes = clock_changes(tz)
    if changes and draw(st.booleans()):
        return tz, draw(st.sampled_from(changes)) - WINDOW
    span_minutes = int((datetime(YEARS[1], 1, 1) - datetime(YEARS[0], 1, 1)).total_seconds() // 60)
    start = datetime(YEARS[0], 1, 1, tzinfo=timezone.utc)
    return tz, start + draw(st.integers(0, span_minutes)) * MINUTE


# AZURE_SCHEDULE_EXAMPLES=5000 explores further (about 2 s per 100 examples).
EXAMPLES = int(os.environ.get("AZURE_SCHEDULE_EXAMPLES", "300"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(), windows())
def test_emulated_schedule_fires_exactly_when_croniter_in_the_zone_fires(
    expression: str, window: tuple[str, datetime]
) -> None:
    tz, start = window
    try:
        cron = Cron(expression, tz=tz)
    except TriggerError:
        assume(False)  # a day that never comes (the 31st of April)
    timer = timer_schedule(cron)
    checked = local_schedule(cron)
    assert checked is not None
    plain, zone = checked
    assert plain == " ".join(unix_fields(parse_cron(expression))) and zone == tz
    moment = start
    while moment < start + 2 * WINDOW:
        expected = croniter_fires(plain, tz, moment)
        timer_fires = ncrontab_fires(timer, moment)
        if expected:
            assert timer_fires, f"{timer!r} misses {moment} ({cron})"
        assert (timer_fires and is_fire_time(plain, tz, moment)) == expected, (
            f"{cron} at {moment} ({moment.astimezone(ZoneInfo(tz))}): croniter {expected}, "
            f"timer {timer!r} {timer_fires}"
        )
        moment += MINUTE


@pytest.mark.parametrize(
    "cron, timer",
    [
        (Cron("0 6 * * *"), "0 0 6 * * *"),
        (Cron("0 6 * * *", tz="Asia/Kolkata"), "0 30 0 * * *"),  # no DST: exact
        (Cron("0 6 * * *", tz="Europe/Berlin"), "0 0 4,5 * * *"),
        (Cron("30 2 * * *", tz="Europe/Berlin"), "0 */30 0,1 * * *"),  # + the gap's end, 01:00
        (Cron("0 23 * * 5", tz="America/New_York"), "0 0 3,4 * * 6"),  # Saturday in UTC
        (Cron("0 0 1 1 *", tz="Europe/Berlin"), "0 0 22,23 31 12 *"),  # New Year's Eve in UTC
        (Every(minutes=15), "0 */15 * * * *"),
        (Every(hours=6), "0 0 */6 * * *"),
    ],
)
def test_timer_schedules_read_plainly(cron: Cron | Every, timer: str) -> None:
    assert timer_schedule(cron) == timer


def test_every_needs_no_runtime_check_and_an_interval_cron_cannot_list_is_refused() -> None:
    assert local_schedule(Every(minutes=5)) is None
    with pytest.raises(TriggerError, match="Azure.*Every|every 45 minutes"):
        timer_schedule(Every(minutes=45))


def test_either_day_cron_is_refused_because_ncrontab_ands_the_day_fields() -> None:
    with pytest.raises(TriggerError) as raised:
        timer_schedule(Cron("0 6 1,15 * 5", tz="Europe/Berlin"))
    assert "Cron('0 6 1,15 * *')" in str(raised.value)


def test_a_skipped_time_runs_once_at_the_end_of_the_gap_and_a_repeated_one_twice() -> None:
    berlin = "Europe/Berlin"
    spring = [
        datetime(2026, 3, 29, 0, minute, tzinfo=timezone.utc) + hour * timedelta(hours=1)
        for hour in range(3)
        for minute in range(60)
    ]
    fired = [moment for moment in spring if is_fire_time("30 2 * * *", berlin, moment)]
    assert fired == [datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc)]  # 03:00 CEST
    assert not any(is_fire_time("30 * * * *", berlin, moment) for moment in spring[60:61])
    autumn = [
        datetime(2026, 10, 25, 0, 0, tzinfo=timezone.utc) + index * MINUTE for index in range(180)
    ]
    fired = [moment for moment in autumn if is_fire_time("30 2 * * *", berlin, moment)]
    assert [moment.hour for moment in fired] == [0, 1]  # 02:30 CEST, then 02:30 CET
