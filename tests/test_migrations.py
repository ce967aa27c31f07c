"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from rosetta_web.extensions import db as _db


def test_models_and_migrations_agree(app):
    """Autogenerate finds nothing to add: no model change is missing a migration."""
    with app.app_context(), _db.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), _db.metadata
        )
    assert diff == []


def test_downgrade_and_upgrade_again(sqlite_app):
    """The migrations run down to empty and back up on a fresh database."""
    from flask_migrate import downgrade, upgrade

    with sqlite_app.app_context():
        downgrade(revision="base")
        assert _db.inspect(_db.engine).get_table_names() == ["alembic_version"]
        upgrade()
        assert "sources" in _db.inspect(_db.engine).get_table_names()
