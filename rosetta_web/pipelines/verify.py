"""Verify a pipeline: ask an engine process to compare its destination with its source, and
read what it found. The comparison itself is rosetta_web/engine/verify.py; it never runs in a
web request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from sqlalchemy import delete, select

from ..audit import services as audit
from ..engines import live_engines
from ..errors import DomainError
from ..extensions import db
from ..models import VERIFY_STATES, Pipeline, PipelineVerification
from ..shapes import Declared, Described
from ..timeutil import as_utc, utcnow

SAMPLE_KEYS = 1000
MAX_SAMPLE_KEYS = 100_000
KEPT = 20  # Verify runs kept per pipeline


class NoEngine(DomainError):
    """No engine process runs: Verify runs in one."""

    error = "NoEngineError"

    def __init__(self) -> None:
        super().__init__(
            "No engine process is running, and Verify runs in one: start `flask rosetta "
            "engine`, then ask again."
        )


@dataclass(frozen=True)
class VerifyDiffering(Declared):
    """One key whose row differs."""

    key: Annotated[
        dict[str, Any],
        Described("The row's primary key: column, value", {"type": "object"}),
    ]
    columns: Annotated[list[str], Described("The columns whose values differ")]
    problem: Annotated[
        str,
        Described(
            "values differ, missing at the destination, or only at the destination",
            {
                "type": "string",
                "enum": ["values differ", "missing at the destination", "only at the destination"],
            },
        ),
    ]


@dataclass(frozen=True)
class VerifyTable(Declared):
    """What Verify found of one table."""

    table: Annotated[str, Described("The source table: schema.table")]
    source_rows: Annotated[int | None, Described("Rows at the source (count(*))")]
    destination_rows: Annotated[
        int | None, Described("Rows at the destination; null when it has no table for it")
    ]
    sampled: Annotated[int, Described("Keys compared value by value")]
    differing: Annotated[
        list[VerifyDiffering], Described("Up to 20 keys that differ after being read again")
    ]
    differing_keys: Annotated[int, Described("How many of the keys compared differ")]
    ok: Annotated[bool, Described("Same counts, and no key differs (true when not compared)")]
    note: Annotated[str | None, Described("What to know: what was not compared, and why")]


@dataclass(frozen=True)
class Verification(Declared):
    """A Verify of a pipeline: under way, done, or failed."""

    api_name = "Verification"

    id: int
    state: Annotated[
        str,
        Described(
            "running (asked for, or under way in an engine process), done, or failed",
            {"type": "string", "enum": list(VERIFY_STATES)},
        ),
    ]
    ok: Annotated[
        bool | None,
        Described("Every table the same at both ends; null until done"),
    ]
    started_at: Annotated[datetime, Described("When it was asked for")]
    finished_at: Annotated[datetime | None, Described("When it ended")]
    sample_keys: Annotated[
        int, Described("Keys compared per table (every key of a table under 10,000 rows)")
    ]
    owner: Annotated[str | None, Described("The engine process doing it: host:pid")]
    message: Annotated[str | None, Described("Why it failed")]
    tables: Annotated[list[VerifyTable], Described("Each table, as far as it got")]


def shown(verification: PipelineVerification) -> Verification:
    """Return a Verify as the API shows it."""
    return Verification(
        id=verification.id,
        state=verification.state,
        ok=verification.ok,
        started_at=as_utc(verification.started_at),
        finished_at=as_utc(verification.finished_at) if verification.finished_at else None,
        sample_keys=verification.sample_keys,
        owner=verification.owner,
        message=verification.message,
        tables=[
            VerifyTable(
                table=t["table"],
                source_rows=t.get("source_rows"),
                destination_rows=t.get("destination_rows"),
                sampled=t.get("sampled", 0),
                differing=[VerifyDiffering(**d) for d in t.get("differing", [])],
                differing_keys=t.get("differing_keys", 0),
                ok=t.get("ok", False),
                note=t.get("note"),
            )
            for t in verification.tables or []
        ],
    )


def latest(pipeline: Pipeline) -> PipelineVerification | None:
    """Return the pipeline's last Verify, or None."""
    return db.session.scalars(
        select(PipelineVerification)
        .where(PipelineVerification.pipeline_id == pipeline.id)
        .order_by(PipelineVerification.id.desc())
        .limit(1)
    ).first()


def request_verify(
    pipeline: Pipeline, sample_keys: int = SAMPLE_KEYS
) -> tuple[PipelineVerification, bool]:
    """Ask the engine processes to verify the pipeline; return the Verify and whether it is
    new (one already under way is returned as it is). Raise NoEngine when none runs."""
    running = latest(pipeline)
    if running is not None and running.state == "running":
        return running, False
    if not live_engines().live:
        with audit.change("verify", pipeline):
            raise NoEngine()
    verification = PipelineVerification(
        pipeline_id=pipeline.id,
        state="running",
        sample_keys=sample_keys,
        started_at=utcnow(),
        tables=[],
    )
    db.session.add(verification)
    audit.record(
        "verify", audit.target_of(pipeline), message=f"{sample_keys} keys sampled per table"
    )
    db.session.flush()
    kept = (
        select(PipelineVerification.id)
        .where(PipelineVerification.pipeline_id == pipeline.id)
        .order_by(PipelineVerification.id.desc())
        .limit(KEPT)
    )
    db.session.execute(
        delete(PipelineVerification).where(
            PipelineVerification.pipeline_id == pipeline.id,
            PipelineVerification.id.not_in(kept.scalar_subquery()),
        )
    )
    db.session.commit()
    return verification, True
