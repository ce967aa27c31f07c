"""Readiness checks: what a source or a destination lacks for CDC, and the exact fix.

The checklist's types live here; a source's checks in postgres/checks.py, a destination's in
destination.py. No request and no ORM: the checks connect, look and report. The areas' services
store the result and the pages, the API and the CLI show it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..errors import DomainError
from ..formatting import from_iso
from ..timeutil import as_utc, isoformat, utcnow

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
STATUSES = (PASS, WARN, FAIL, SKIP)


@dataclass(frozen=True)
class Check:
    """One check's outcome: what was seen and, when it does not pass, how to fix it."""

    id: str
    status: str
    title: str
    observed: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "title": self.title,
            "observed": self.observed,
            "fix": self.fix,
        }


@dataclass
class Readiness:
    """A whole checklist, as run at one moment."""

    checks: list[Check]
    checked_at: datetime = field(default_factory=utcnow)

    @property
    def ready(self) -> bool:
        """Ready when no check fails (warnings are the operator's call)."""
        return not self.failing

    @property
    def failing(self) -> list[str]:
        return [check.id for check in self.checks if check.status == FAIL]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "checked_at": isoformat(self.checked_at),
            "checks": [check.to_dict() for check in self.checks],
        }

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Readiness:
        """Read a stored result back (the JSON column keeps what to_dict gave)."""
        return cls(
            checks=[Check(**check) for check in stored.get("checks", [])],
            checked_at=from_iso(stored["checked_at"]) or utcnow(),
        )


def summary(stored: dict[str, Any] | None) -> str:
    """Say a stored result in one sentence, naming the checks that fail or warn."""
    if not stored:
        return "Not checked yet."
    by_status: dict[str, list[str]] = {}
    for check in stored["checks"]:
        by_status.setdefault(check["status"], []).append(check["id"])
    if by_status.get(FAIL):
        return f"Not ready: {', '.join(by_status[FAIL])} failed."
    if by_status.get(WARN):
        return f"Ready, with warnings: {', '.join(by_status[WARN])}."
    return "Ready: every check passed."


def skipped(checks: list[tuple[str, str]], why: str) -> list[Check]:
    """Mark checks that could not run, saying why."""
    return [Check(check_id, SKIP, title, why) for check_id, title in checks]


def fresh(
    stored: dict[str, Any] | None, check_again: Callable[[], Readiness], max_age: timedelta
) -> Readiness:
    """Return a stored result that passed within `max_age`, or else `check_again()`'s: a
    failing result is never reused, since what failed (a source restarting, a grant) may be
    back or fixed by now."""
    kept = Readiness.from_dict(stored) if stored else None
    if kept is None or not kept.ready or utcnow() - as_utc(kept.checked_at) > max_age:
        return check_again()
    return kept


class NotReady(DomainError):
    """A pipeline cannot start or refresh while its source or destination fails a check."""

    def __init__(self, kind: str, entity: Any, purpose: str, readiness: Readiness) -> None:
        failing = readiness.failing
        super().__init__(
            f"{kind} '{entity.name}' is not ready {purpose}: {', '.join(failing)} failed. "
            "Its page says how to fix each."
        )
        self.details = {f"{kind.lower()}_id": entity.id, "failing": failing}
