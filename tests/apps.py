"""Apps for the tests: one on a given metadata database, its tables emptied."""

from __future__ import annotations

from typing import Any

from flask import Flask

from rosetta_web import create_app
from rosetta_web.extensions import db


def make_app(url: str, **config: Any) -> Flask:
    """Create a test app on `url` with a clean set of tables."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True, **config})
    with app.app_context():
        tables = [table.name for table in reversed(db.metadata.sorted_tables)]
        if db.engine.dialect.name == "postgresql":
            # audit_log refuses TRUNCATE by a trigger; a replica session fires no triggers.
            db.session.execute(db.text("SET LOCAL session_replication_role = replica"))
            db.session.execute(db.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            # Pipelines' offsets, kept by the engine in tables of their own.
            for (offsets,) in db.session.execute(
                db.text(
                    "SELECT tablename FROM pg_tables WHERE tablename LIKE 'rosetta\\_offsets\\_%'"
                )
            ):
                db.session.execute(db.text(f'DROP TABLE "{offsets}"'))
        else:
            for table in tables:
                db.session.execute(db.text(f"DELETE FROM {table}"))
        db.session.commit()
    return app
