"""Which engine processes are alive, and what the engine does with each pipeline, as the
operator sees it. No area is imported here: the pipelines' pages, the alert rules and the
engine's own Verify runs all read it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from flask import g
from sqlalchemy import select

from .extensions import db
from .models import ENGINE_STATES, EngineProcess, Pipeline
from .shapes import Declared, Described
from .timeutil import as_utc, utcnow

# An engine process not seen for this long has stopped (it beats every few seconds).
ENGINE_SEEN_WITHIN = timedelta(seconds=30)
NO_ENGINE = "No engine process is running: start `flask rosetta engine` (make run starts it)."
INSTALL_JAVA = "Install a Java runtime (`apt-get install openjdk-17-jre-headless`), then restart"


@dataclass(frozen=True)
class EngineState(Declared):
    """What the engine does with a pipeline: the row its engine writes while it owns it, or
    `stopped` (`paused` when PAUSE is wanted) with why when no live engine does."""

    api_name = "EngineState"

    state: Annotated[
        str, Described("What the engine is doing", {"type": "string", "enum": list(ENGINE_STATES)})
    ]
    reason: Annotated[str | None, Described("Why, when it is not streaming")]
    owner: Annotated[str | None, Described("The engine process that owns it: host:pid")]
    since: Annotated[datetime | None, Described("Since when it has been in this state")]
    updated_at: Annotated[datetime | None, Described("When its engine last wrote it")]
    next_try_at: Annotated[datetime | None, Described("When retrying: the next attempt")]
    last_lsn: Annotated[
        int | None, Described("The last source WAL position loaded, bytes since 0/0")
    ]

    @property
    def retrying(self) -> bool:
        """Tell whether the engine waits to try again."""
        return self.state == "retrying"


@dataclass(frozen=True)
class Engines:
    """The engine processes seen within ENGINE_SEEN_WITHIN of `now`."""

    now: datetime
    live: dict[str, str | None]  # id (host:pid) → its problem, None when it can run pipelines


def live_engines(now: datetime | None = None) -> Engines:
    """Read which engine processes are alive; once per app context (a request) unless `now`
    is given, so a list of pipelines asks once."""
    if now is None and "rosetta_engines" in g:
        cached: Engines = g.rosetta_engines
        return cached
    at = now or utcnow()
    rows = db.session.execute(
        select(EngineProcess.id, EngineProcess.problem).where(
            EngineProcess.seen_at >= at - ENGINE_SEEN_WITHIN
        )
    )
    engines = Engines(at, {row.id: row.problem for row in rows})
    if now is None:
        g.rosetta_engines = engines
    return engines


def _with_fix(problem: str) -> str:
    """Add how to fix the problems the engine is known to report."""
    text = problem.rstrip()
    if "java" in text.lower() and "apt-get" not in text:
        text = f"{text.rstrip('.')}. {INSTALL_JAVA} `flask rosetta engine`."
    return text


def engine_state(pipeline: Pipeline, engines: Engines | None = None) -> EngineState:
    """Say what the engine does with the pipeline: its run while a live engine owns it (or
    its engine wrote it within ENGINE_SEEN_WITHIN), else paused or stopped with why."""
    engines = engines or live_engines()
    run = pipeline.run
    last_lsn = run.last_lsn if run is not None else None
    if run is not None and (
        run.owner in engines.live or as_utc(run.updated_at) >= engines.now - ENGINE_SEEN_WITHIN
    ):
        return EngineState(
            state=run.state,
            reason=run.reason,
            owner=run.owner,
            since=as_utc(run.since),
            updated_at=as_utc(run.updated_at),
            next_try_at=as_utc(run.next_try_at) if run.next_try_at is not None else None,
            last_lsn=last_lsn,
        )
    if pipeline.status == "PAUSE":
        state, reason = "paused", "PAUSE requested: no engine reads its slot."
    elif not engines.live:
        state, reason = "stopped", NO_ENGINE
    elif all(problem for problem in engines.live.values()):
        problems = dict.fromkeys(_with_fix(str(p)) for p in engines.live.values())
        state, reason = "stopped", " ".join(problems)
    else:
        count = len(engines.live)
        state = "stopped"
        reason = (
            f"No engine has taken it up yet ({count} engine process"
            f"{'es' if count != 1 else ''} running): one takes it within seconds."
        )
    return EngineState(state, reason, None, None, None, None, last_lsn)
