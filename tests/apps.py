"""Apps for the tests: one on a given metadata database, its tables emptied."""

from __future__ import annotations

from typing import Any

from flask import Flask
from psycopg2.errors import DeadlockDetected
from sqlalchemy.exc import DBAPIError

from rosetta_web import create_app
from rosetta_web.extensions import db


def make_app(url: str, **config: Any) -> Flask:
    """Create a test app on `url` with a clean set of tables."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True, **config})
    with app.app_context():
        tables = [table.name for table in reversed(db.metadata.sorted_tables)]
        if db.engine.dialect.name != "postgresql":
            for table in tables:
                db.session.execute(db.text(f"DELETE FROM {table}"))
            db.session.commit()
            return app
        # The engine tests' engine process, shared by a module's tests, keeps writing (its
        # heartbeat, its runs) while the next test empties the tables: PostgreSQL may end the
        # TRUNCATE as a deadlock's victim, and it is tried again.
        for attempt in range(3):
            try:
                _empty(tables)
                break
            except DBAPIError as exc:
                db.session.rollback()
                if attempt == 2 or not isinstance(exc.orig, DeadlockDetected):
                    raise
    return app


def _empty(tables: list[str]) -> None:
    # audit_log refuses TRUNCATE by a trigger; a replica session fires no triggers.
    db.session.execute(db.text("SET LOCAL session_replication_role = replica"))
    db.session.execute(db.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    # Pipelines' offsets, kept by the engine in tables of their own.
    for (offsets,) in db.session.execute(
        db.text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'rosetta\\_offsets\\_%'")
    ):
        db.session.execute(db.text(f'DROP TABLE "{offsets}"'))
    db.session.commit()
