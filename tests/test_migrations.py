"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from rosetta_web import create_app
from rosetta_web.extensions import db as _db
from rosetta_web.models import Server, WalRollup
from rosetta_web.timeutil import as_utc


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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_keeps_the_monitor_history(backend, tmp_path, pg_cluster):
    """An installation that has sampled upgrades: its two sources of one server share one
    server, the slot they both stored is kept once, rounds and accounts carry over, its
    samples are rolled up by the hour and the day; and the whole way down works too."""
    from flask_migrate import downgrade, upgrade

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    elif pg_cluster is None:
        pytest.skip("needs a disposable cluster to create a database in")
    else:
        url = pg_cluster.create_database(f"upgrade_{tmp_path.name[-8:].lower()}")
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True})
    with app.app_context():
        upgrade(revision="0003")
        for statement in (
            "INSERT INTO users (id, username, password_hash, session_nonce, created_at) "
            "VALUES (1, 'alice', 'x', 'n', CURRENT_TIMESTAMP)",
            "INSERT INTO sources (id, name, pg_host, pg_port, pg_database, pg_username, "
            "pg_password_encrypted, publication_name, replication_id, created_at, updated_at) "
            "VALUES (1, 'a', 'db', 5432, 'shop', 'u', 'x', 'p', 0, CURRENT_TIMESTAMP, "
            "CURRENT_TIMESTAMP), (2, 'b', 'db', 5432, 'shop2', 'u', 'x', 'p', 0, "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            "INSERT INTO wal_metrics (id, source_id, recorded_at, current_lsn, "
            "wal_position_bytes, slot_count, inactive_slot_count) VALUES "
            "(1, 1, '2026-03-01 12:00:00+00', '0/0', 0, 1, 1), "
            "(2, 2, '2026-03-01 12:00:00+00', '0/0', 0, 1, 1)",
            "INSERT INTO source_states (source_id, status, consecutive_failures, "
            "latest_wal_metric_id) VALUES (1, 'OK', 0, 1), (2, 'OK', 0, 2)",
            "INSERT INTO slot_metrics (wal_metric_id, source_id, recorded_at, slot_name, "
            "slot_type, database, active, retained_bytes) VALUES "
            "(1, 1, '2026-03-01 12:00:00+00', 'orders', 'logical', 'shop', false, 42), "
            "(2, 2, '2026-03-01 12:00:00+00', 'orders', 'logical', 'shop', false, 42)",
            "INSERT INTO monitor_rounds (started_at, duration_ms, sources, failures, skipped, "
            "sampler) VALUES ('2026-03-01 12:00:00+00', 10, 2, 0, 0, 'host:1')",
        ):
            _db.session.execute(_db.text(statement))
        _db.session.commit()
        upgrade()

        def rows(sql: str) -> list:
            return [tuple(row) for row in _db.session.execute(_db.text(sql))]

        assert rows("SELECT address FROM servers") == [("db:5432",)]
        assert rows("SELECT count(DISTINCT server_id) FROM source_states") == [(1,)]
        assert rows("SELECT slot_name, retained_bytes FROM slot_metrics") == [("orders", 42)]
        assert rows("SELECT manual FROM monitor_rounds") in ([(False,)], [(0,)])
        assert rows("SELECT id FROM installation") == [(1,)]
        # 0018 built the roll-ups of the history kept: it does not vanish from long charts.
        assert rows(
            "SELECT source_id, bucket_seconds, sample_count, retained_bytes, error_count "
            "FROM wal_rollups ORDER BY 1, 2"
        ) == [
            (1, 3600, 1, None, 0),
            (1, 86400, 1, None, 0),
            (2, 3600, 1, None, 0),
            (2, 86400, 1, None, 0),
        ]
        assert rows(
            "SELECT slot_name, bucket_seconds, sample_count, retained_bytes, retained_bytes_min, "
            "retained_bytes_max, database FROM slot_rollups ORDER BY 2"
        ) == [("orders", 3600, 1, 42, 42, 42, "shop"), ("orders", 86400, 1, 42, 42, 42, "shop")]
        starts = {as_utc(row.bucket_start) for row in _db.session.scalars(_db.select(WalRollup))}
        assert starts == {datetime(2026, 3, 1, 12, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)}
        _db.session.rollback()  # the reads above must not hold locks the downgrade waits on
        downgrade(revision="base")
        assert _db.inspect(_db.engine).get_table_names() == ["alembic_version"]
        _db.engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_summarizes_the_slots_each_server_has_stored(backend, tmp_path, pg_cluster):
    """A server whose slots were stored before the summary was kept gets it on upgrade: how
    many slots, how many inactive, the worst, the growing ones; the dashboard counts them
    before the next round."""
    from flask_migrate import upgrade

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    elif pg_cluster is None:
        pytest.skip("needs a disposable cluster to create a database in")
    else:
        url = pg_cluster.create_database(f"summary_{tmp_path.name[-8:].lower()}")
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True})

    def trend(retained: int, active: bool, growth: float | None) -> dict:
        slot = {"database": "shop", "active": active, "retained_bytes": retained}
        return {"growth": growth, "at": 1.0, "slot": {**slot, "wal_status": "reserved"}}

    trends = {"a": trend(5, True, None), "b": trend(900, False, 3.0), "c": trend(7, False, 0)}
    with app.app_context():
        upgrade(revision="0015")
        _db.session.execute(
            _db.text(
                "INSERT INTO servers (id, address, slot_trends, created_at) VALUES "
                "(1, 'db:5432', :trends, CURRENT_TIMESTAMP), (2, 'idle:5432', NULL, "
                "CURRENT_TIMESTAMP)"
            ),
            {"trends": json.dumps(trends)},
        )
        _db.session.commit()
        upgrade()
        summary = _db.session.scalars(_db.select(Server).order_by(Server.id)).all()
        assert (summary[0].slot_count, summary[0].inactive_slot_count) == (3, 2)
        assert summary[0].worst_slot["slot_name"] == "b"
        assert list(summary[0].growing_slot_trends) == ["b"]
        assert summary[1].slot_count is None and summary[1].worst_slot is None
        _db.session.rollback()
        _db.engine.dispose()
