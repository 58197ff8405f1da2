"""The lifecycle's decisions about time, with the clock moved instead of waited for."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgbatten.errors import UsageError
from pgbatten.lifecycle.timeline import (
    CertState,
    OverlapStage,
    Validity,
    Window,
    cert_state,
    crl_resign_at,
    crl_resign_due,
    format_duration,
    leaf_end,
    overlap_ended,
    overlap_stage,
    parse_duration,
    renew_at,
    renewal_due,
    worse,
)

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
YEAR = Validity(START, START + dt.timedelta(days=366))
DAY = dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", dt.timedelta(days=30)),
        ("12h", dt.timedelta(hours=12)),
        ("2w", dt.timedelta(weeks=2)),
        ("1d12h", dt.timedelta(days=1, hours=12)),
        (" 90m ", dt.timedelta(minutes=90)),
        ("1D 6H", dt.timedelta(days=1, hours=6)),
        ("45s", dt.timedelta(seconds=45)),
    ],
)
def test_parse_duration(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "30x", "-3d", "3d-", "0d", "1.5d", "d30", "999999999w"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from("smhdw"))
def test_parse_duration_round_trips_single_units(n: int, unit: str) -> None:
    value = parse_duration(f"{n}{unit}")
    assert value.total_seconds() > 0
    assert parse_duration(f"{n}{unit}0s") == value


@given(st.text(max_size=12))
def test_parse_duration_never_crashes(text: str) -> None:
    with contextlib.suppress(UsageError):
        assert parse_duration(text) > dt.timedelta()


def test_format_duration() -> None:
    assert format_duration(dt.timedelta(days=121, hours=15, minutes=3)) == "121d 15h"
    assert format_duration(dt.timedelta(days=3)) == "3d"
    assert format_duration(dt.timedelta(hours=3, minutes=20)) == "3h 20m"
    assert format_duration(dt.timedelta(seconds=45)) == "45s"
    assert format_duration(-dt.timedelta(days=2)) == "-2d"


def test_renewal_due_at_a_third_of_life_left() -> None:
    due = renew_at(YEAR)
    assert due == YEAR.end - dt.timedelta(days=122)
    assert not renewal_due(YEAR, START)
    assert not renewal_due(YEAR, due - dt.timedelta(seconds=1))
    assert renewal_due(YEAR, due)
    # An expired certificate is due as well, however long ago.
    assert renewal_due(YEAR, YEAR.end + dt.timedelta(days=400))


def test_renewal_due_with_before() -> None:
    before = dt.timedelta(days=7)
    assert renew_at(YEAR, before) == YEAR.end - before
    assert not renewal_due(YEAR, YEAR.end - dt.timedelta(days=8), before)
    assert renewal_due(YEAR, YEAR.end - dt.timedelta(days=6), before)
    # --before longer than the whole life makes it due at once.
    assert renewal_due(YEAR, START, dt.timedelta(days=400))


def test_short_lived_certificates_follow_the_same_rule() -> None:
    hour = Validity(START, START + dt.timedelta(hours=3))
    assert not renewal_due(hour, START + dt.timedelta(hours=1, minutes=59))
    assert renewal_due(hour, START + dt.timedelta(hours=2))


def test_crl_resign_half_way() -> None:
    crl = Validity(START, START + 30 * DAY)
    assert crl_resign_at(crl) == START + 15 * DAY
    assert not crl_resign_due(crl, START + 14 * DAY)
    assert crl_resign_due(crl, START + 15 * DAY)
    assert crl_resign_due(crl, START + 40 * DAY)
    assert crl_resign_due(crl, START + 2 * DAY, before=29 * DAY)
    assert not crl_resign_due(None, START + 1000 * DAY)


def test_window_levels() -> None:
    window = Window(30 * DAY, 7 * DAY)
    end = START + 100 * DAY
    assert window.level(end, START) == "ok"
    assert window.level(end, end - 30 * DAY) == "warning"
    assert window.level(end, end - 8 * DAY) == "warning"
    assert window.level(end, end - 7 * DAY) == "critical"
    assert window.level(end, end + DAY) == "critical"


def test_window_refuses_inverted_thresholds() -> None:
    with pytest.raises(UsageError, match="critical threshold"):
        Window(7 * DAY, 30 * DAY)


def test_cert_state() -> None:
    window = Window(30 * DAY, 7 * DAY)
    assert cert_state(YEAR, START + DAY, window) is CertState.VALID
    assert cert_state(YEAR, YEAR.end - 10 * DAY, window) is CertState.EXPIRING
    assert cert_state(YEAR, YEAR.end, window) is CertState.EXPIRED
    assert cert_state(YEAR, START - DAY, window) is CertState.NOT_YET_VALID
    assert cert_state(YEAR, START + DAY, window, revoked=True) is CertState.REVOKED


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        renewal_due(YEAR, dt.datetime(2026, 6, 1))


def test_overlap_stages_in_order() -> None:
    assert overlap_stage(rotating=False, servers_on_old_ca=3, old_client_certificates=3) is OverlapStage.NONE
    assert (
        overlap_stage(rotating=True, servers_on_old_ca=1, old_client_certificates=5)
        is OverlapStage.SWITCHING_SERVERS
    )
    assert (
        overlap_stage(rotating=True, servers_on_old_ca=0, old_client_certificates=5)
        is OverlapStage.MOVING_CLIENTS
    )
    assert (
        overlap_stage(rotating=True, servers_on_old_ca=0, old_client_certificates=0)
        is OverlapStage.READY_TO_RETIRE
    )


def test_overlap_ended_moves_with_the_clock() -> None:
    end = START + 30 * DAY
    assert not overlap_ended(end, end - dt.timedelta(seconds=1))
    assert overlap_ended(end, end)


def test_no_leaf_outlives_its_ca() -> None:
    assert leaf_end(START + 400 * DAY, START + 100 * DAY) == START + 100 * DAY
    assert leaf_end(START + 10 * DAY, START + 100 * DAY) == START + 10 * DAY


def test_worse() -> None:
    assert worse("ok", "warning") == "warning"
    assert worse("critical", "warning") == "critical"
    assert worse("ok", "ok") == "ok"
