"""Time in the lifecycle: every decision about "due", "expiring", "expired" and "overlap ended".

Pure. Each function takes the current time as a parameter (``now``, timezone-aware), so the tests move the
clock instead of waiting, and ``status`` and ``renew`` judge one certificate the same way.

The defaults, as the README's "Lifecycle" section states them:

* a certificate is **due for renewal** when less than a third of its life remains (CloudNativePG renews its
  90-day certificates a week before, Crunchy PGO at a third of the remaining life; a third leaves a
  one-year certificate four months of daily retries), or, with ``--before DURATION``, when less than that
  remains;
* a CRL is **due for re-signing** when less than half of its validity remains: a 30-day CRL is re-signed
  after 15 days, so a daily schedule that fails for two weeks still leaves time before PostgreSQL starts
  refusing every client certificate;
* status **warns** 30 days (CRL: 7 days, CA: 365 days) before an end and turns **critical** 7 days (CRL: 2
  days, CA: 90 days) before it, and at it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pgbatten.errors import UsageError

RENEW_FRACTION = 1 / 3
"""A certificate is due for renewal once less than this fraction of its lifetime remains."""
CRL_RESIGN_FRACTION = 1 / 2
"""A CRL is due for re-signing once less than this fraction of its validity remains."""

_UNITS = {
    "s": dt.timedelta(seconds=1),
    "m": dt.timedelta(minutes=1),
    "h": dt.timedelta(hours=1),
    "d": dt.timedelta(days=1),
    "w": dt.timedelta(weeks=1),
}
_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_DURATION_WHOLE = re.compile(r"(?:\d{1,9}\s*[smhdw]\s*)+")


def parse_duration(text: str) -> dt.timedelta:
    """``"30d"``, ``"12h"``, ``"2w"``, ``"1d12h"`` (s, m, h, d, w); ``UsageError`` for anything else."""
    cleaned = text.strip().lower()
    if cleaned.isdigit():
        raise UsageError(f"duration {text!r} needs a unit: s, m, h, d or w (e.g. 30d)")
    if not _DURATION_WHOLE.fullmatch(cleaned):
        raise UsageError(f"invalid duration {text!r}: use a number and a unit, e.g. 30d, 12h, 2w or 1d12h")
    try:
        total = sum((int(n) * _UNITS[unit] for n, unit in _DURATION.findall(cleaned)), dt.timedelta())
    except OverflowError:
        raise UsageError(f"duration {text!r} is too long") from None
    if total <= dt.timedelta():
        raise UsageError(f"duration {text!r} must be longer than zero")
    return total


def format_duration(delta: dt.timedelta) -> str:
    """A short human form: ``"121d 15h"``, ``"3h 20m"``, ``"45s"``; negative values get a minus sign."""
    sign = "-" if delta < dt.timedelta() else ""
    seconds = int(abs(delta).total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h" if hours else f"{sign}{days}d"
    if hours:
        return f"{sign}{hours}h {minutes}m" if minutes else f"{sign}{hours}h"
    if minutes:
        return f"{sign}{minutes}m"
    return f"{sign}{secs}s"


def _aware(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("'now' must be a timezone-aware datetime")
    return now.astimezone(dt.UTC)


@dataclass(frozen=True)
class Validity:
    """A validity period (a certificate's notBefore/notAfter, a CRL's lastUpdate/nextUpdate)."""

    start: dt.datetime
    end: dt.datetime

    @property
    def lifetime(self) -> dt.timedelta:
        return self.end - self.start

    def remaining(self, now: dt.datetime) -> dt.timedelta:
        """Time left at ``now`` (negative once over)."""
        return self.end - _aware(now)


def renew_at(validity: Validity, before: dt.timedelta | None = None) -> dt.datetime:
    """The moment a certificate becomes due: a third of its life before its end, or ``before`` before it."""
    if before is not None:
        return validity.end - before
    return validity.end - validity.lifetime * RENEW_FRACTION


def renewal_due(validity: Validity, now: dt.datetime, before: dt.timedelta | None = None) -> bool:
    """Whether a certificate should be re-issued at ``now`` (an expired one always is)."""
    return _aware(now) >= renew_at(validity, before)


def crl_resign_at(validity: Validity, before: dt.timedelta | None = None) -> dt.datetime:
    """When a CRL should be re-signed: half way through its validity, or ``before`` its next update."""
    if before is not None:
        return validity.end - before
    return validity.end - validity.lifetime * CRL_RESIGN_FRACTION


def crl_resign_due(validity: Validity | None, now: dt.datetime, before: dt.timedelta | None = None) -> bool:
    """Whether a CRL should be re-signed at ``now``; one without a next update never lapses."""
    if validity is None:
        return False
    return _aware(now) >= crl_resign_at(validity, before)


Level = Literal["ok", "warning", "critical"]
LEVELS: tuple[Level, ...] = ("ok", "warning", "critical")


def worse(a: Level, b: Level) -> Level:
    """The worse of two levels."""
    return a if LEVELS.index(a) >= LEVELS.index(b) else b


@dataclass(frozen=True)
class Window:
    """How long before an end status warns, and when it turns critical."""

    warning: dt.timedelta
    critical: dt.timedelta

    def __post_init__(self) -> None:
        if self.critical > self.warning:
            raise UsageError(
                f"the critical threshold ({format_duration(self.critical)}) must not be longer than the "
                f"warning threshold ({format_duration(self.warning)})"
            )

    def level(self, end: dt.datetime, now: dt.datetime) -> Level:
        """``critical`` past ``end`` or inside the critical window, ``warning`` inside the warning one."""
        left = end - _aware(now)
        if left <= self.critical or left <= dt.timedelta():
            return "critical"
        if left <= self.warning:
            return "warning"
        return "ok"


@dataclass(frozen=True)
class Thresholds:
    """Every threshold ``status`` applies; each is settable on its command line."""

    certificate: Window = Window(dt.timedelta(days=30), dt.timedelta(days=7))
    crl: Window = Window(dt.timedelta(days=7), dt.timedelta(days=2))
    ca: Window = Window(dt.timedelta(days=365), dt.timedelta(days=90))
    renew_before: dt.timedelta | None = None
    """``--before``: the renewal rule's alternative to "a third of its life"."""


class CertState(StrEnum):
    """Where a certificate stands at ``now``."""

    VALID = "valid"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    REVOKED = "revoked"
    NOT_YET_VALID = "not-yet-valid"


def cert_state(validity: Validity, now: dt.datetime, window: Window, *, revoked: bool = False) -> CertState:
    """Revoked, expired, not yet valid, expiring (inside the warning window) or valid."""
    now = _aware(now)
    if revoked:
        return CertState.REVOKED
    if now >= validity.end:
        return CertState.EXPIRED
    if now < validity.start:
        return CertState.NOT_YET_VALID
    if validity.end - now <= window.warning:
        return CertState.EXPIRING
    return CertState.VALID


class OverlapStage(StrEnum):
    """The stages of a CA rotation, in order (see ``lifecycle.rotation``)."""

    NONE = "none"
    """No rotation: one CA."""
    SWITCHING_SERVERS = "switching-servers"
    """The new CA exists; some server still serves a certificate of the old one: run ``renew``."""
    MOVING_CLIENTS = "moving-clients"
    """Every server serves the new CA's certificate with the cross certificate; clients still hold
    unexpired, unrevoked certificates of the old CA: re-issue them (``renew --client``) and hand them out."""
    READY_TO_RETIRE = "ready-to-retire"
    """Nothing depends on the old CA any more: ``ca retire`` ends the overlap."""


def overlap_stage(*, rotating: bool, servers_on_old_ca: int, old_client_certificates: int) -> OverlapStage:
    """The stage of a rotation from what still depends on the old CA."""
    if not rotating:
        return OverlapStage.NONE
    if servers_on_old_ca:
        return OverlapStage.SWITCHING_SERVERS
    if old_client_certificates:
        return OverlapStage.MOVING_CLIENTS
    return OverlapStage.READY_TO_RETIRE


def overlap_ended(planned_end: dt.datetime, now: dt.datetime) -> bool:
    """Whether the overlap period the operator chose at ``ca rotate`` is over at ``now``."""
    return _aware(now) >= planned_end


def leaf_end(requested: dt.datetime, issuer_end: dt.datetime) -> dt.datetime:
    """No leaf outlives its CA: the end of a certificate to issue, cut to its issuer's end."""
    return min(requested, issuer_end)


__all__ = [
    "CRL_RESIGN_FRACTION",
    "LEVELS",
    "RENEW_FRACTION",
    "CertState",
    "Level",
    "OverlapStage",
    "Thresholds",
    "Validity",
    "Window",
    "cert_state",
    "crl_resign_at",
    "crl_resign_due",
    "format_duration",
    "leaf_end",
    "overlap_ended",
    "overlap_stage",
    "parse_duration",
    "renew_at",
    "renewal_due",
    "worse",
]
