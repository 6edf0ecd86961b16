from datetime import UTC, datetime

import pytest

from kran.domain.schedules import (
    Trigger,
    check_cron,
    fire_times,
    next_fire_time,
    parse_duration_iso,
    parse_every,
    parse_time,
    plan_due,
    zone,
)


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


NOW = utc(2026, 11, 22, 12, 0)


def test_iso_repeating_intervals() -> None:
    assert parse_every("R5/2026-12-01T02:00:00Z/PT6H", NOW) == (utc(2026, 12, 1, 2), 5, "PT6H")
    assert parse_every("R/P1D", NOW) == (NOW, None, "P1D")
    assert parse_every("PT1H", NOW, start=utc(2027, 1, 1)) == (utc(2027, 1, 1), None, "PT1H")
    for bad in ("R0/PT1H", "Rx/PT1H", "PT", "P", "1H", "R5/x/PT1H", "PT0S", "R5/2026-12-01T02:00:00Z/PT6H/P1D"):
        with pytest.raises(ValueError):
            parse_every(bad, NOW)
    assert parse_duration_iso("P1Y2M").months == 14
    assert parse_duration_iso("P1W2DT3H4M5S").seconds == 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5


def test_every_with_repeat_start_in_past_and_future() -> None:
    t = Trigger("every", "PT6H", utc(2026, 12, 1, 2), repeat=5)
    assert fire_times(t, utc(2026, 1, 1), 10) == [
        utc(2026, 12, 1, 2),
        utc(2026, 12, 1, 8),
        utc(2026, 12, 1, 14),
        utc(2026, 12, 1, 20),
        utc(2026, 12, 2, 2),
    ]
    assert next_fire_time(t, utc(2026, 12, 2, 2)) is None  # no run after the last repetition
    past = Trigger("every", "PT1H", utc(2026, 11, 22, 9, 30))
    assert next_fire_time(past, NOW) == utc(2026, 11, 22, 12, 30)
    monthly = Trigger("every", "P1M", utc(2026, 1, 31, 2))
    assert fire_times(monthly, utc(2026, 1, 1), 3) == [utc(2026, 1, 31, 2), utc(2026, 2, 28, 2), utc(2026, 3, 31, 2)]


def test_cron_in_a_time_zone() -> None:
    t = Trigger("cron", "0 9 * * 1-5", utc(2026, 1, 1), tz="America/New_York")
    # Friday 2026-11-20 09:00 EST = 14:00 UTC, then Monday 23rd
    assert fire_times(t, utc(2026, 11, 20, 13), 2) == [utc(2026, 11, 20, 14), utc(2026, 11, 23, 14)]


def test_cron_spring_forward_runs_once_after_the_jump() -> None:
    t = Trigger("cron", "30 2 * * *", utc(2026, 1, 1), tz="Europe/Berlin")
    # 2026-03-29 02:30 does not exist in Berlin: it fires at 03:00 CEST (01:00 UTC)
    assert fire_times(t, utc(2026, 3, 28, 12), 2) == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]


def test_cron_fall_back_runs_a_repeated_time_once() -> None:
    t = Trigger("cron", "30 2 * * *", utc(2026, 1, 1), tz="Europe/Berlin")
    # 2026-10-25 02:30 happens twice; only the first (00:30 UTC) fires
    assert fire_times(t, utc(2026, 10, 24, 12), 2) == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    # asked from inside the repeated hour, the second 02:30 is not a new fire time
    assert next_fire_time(t, utc(2026, 10, 25, 1, 15)) == utc(2026, 10, 26, 1, 30)
    half_hourly = Trigger("cron", "*/30 * * * *", utc(2026, 1, 1), tz="Europe/Berlin")
    berlin = zone("Europe/Berlin")
    local = [x.astimezone(berlin).strftime("%H:%M%z") for x in fire_times(half_hourly, utc(2026, 10, 24, 23, 10), 5)]
    assert local == ["01:30+0200", "02:00+0200", "02:30+0200", "03:00+0100", "03:30+0100"]


def test_cron_repeat_and_start() -> None:
    t = Trigger("cron", "0 * * * *", utc(2026, 11, 22, 15, 0), repeat=3)
    assert fire_times(t, NOW, 10) == [utc(2026, 11, 22, 15), utc(2026, 11, 22, 16), utc(2026, 11, 22, 17)]
    assert next_fire_time(t, utc(2026, 11, 22, 17), fired=3) is None
    check_cron("*/5 * * * *")
    for bad in ("* * * *", "61 * * * *", "a b c d e"):
        with pytest.raises(ValueError):
            check_cron(bad)


def test_parse_time_and_zones() -> None:
    assert parse_time("2026-12-01T02:00:00Z") == utc(2026, 12, 1, 2)
    assert parse_time("2026-12-01T03:00:00", "Europe/Berlin") == utc(2026, 12, 1, 2)
    with pytest.raises(ValueError):
        parse_time("tomorrow")
    with pytest.raises(ValueError):
        zone("Mars/Olympus")


def test_plan_due_lateness_and_catch_up() -> None:
    due = [utc(2026, 11, 22, 9), utc(2026, 11, 22, 10), utc(2026, 11, 22, 11), utc(2026, 11, 22, 11, 59, 30)]
    runs = lambda plan: [d.fire_time.hour for d in plan if d.run]  # noqa: E731
    plan = plan_due(due, NOW, max_lateness_s=7200, catch_up="all")
    assert runs(plan) == [10, 11, 11] and "max lateness 7200s" in (plan[0].reason or "")
    assert runs(plan_due(due, NOW, 7200, "last")) == [11] and plan_due(due, NOW, 7200, "last")[-1].run
    none = plan_due(due, NOW, None, "none")
    assert [d.run for d in none] == [False, False, False, True]
    assert [d.run for d in plan_due(due[:3], NOW, None, "none")] == [False, False, False]
