"""Settings are read from the environment and refused with a reason when wrong."""

from __future__ import annotations

import pytest

from rosetta_web.config import ConfigError, load_config


def test_defaults_use_embedded_sqlite_and_keep_a_dev_key(tmp_path):
    """With nothing set, the app uses a SQLite file and a key kept in the instance folder."""
    config = load_config(str(tmp_path), {})
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'rosetta.db'}"
    assert config["WAL_MONITOR_INTERVAL_SECONDS"] == 300
    assert (config["WAL_METRICS_RETENTION_DAYS"], config["WAL_ROLLUP_RETENTION_DAYS"]) == (30, 400)
    assert load_config(str(tmp_path), {})["SECRET_KEY"] == config["SECRET_KEY"]  # survives restarts


def test_postgres_url_gets_pool_settings(tmp_path):
    """A PostgreSQL URL (as operators write it) uses psycopg2 with the pool settings."""
    env = {"DATABASE_URL": "postgresql+asyncpg://u:p@db:5432/meta", "DB_POOL_SIZE": "50"}
    config = load_config(str(tmp_path), env)
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://u:p@db:5432/meta"
    options = config["SQLALCHEMY_ENGINE_OPTIONS"]
    assert options["pool_size"] == 50 and options["max_overflow"] == 10
    assert options["pool_pre_ping"] is True and options["pool_use_lifo"] is True
    assert options["pool_timeout"] == 30 and options["pool_recycle"] == 3600


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APP_ENV": "production"}, "SECRET_KEY is missing or still the example value"),
        ({"APP_ENV": "production", "SECRET_KEY": "change-me"}, "SECRET_KEY is missing"),
        ({"APP_ENV": "staging"}, "APP_ENV must be development or production"),
        ({"DB_POOL_SIZE": "many"}, "DB_POOL_SIZE must be a whole number"),
        ({"WAL_MONITOR_INTERVAL_SECONDS": "2"}, "WAL_MONITOR_INTERVAL_SECONDS must be at least 5"),
        ({"DEBUG": "maybe"}, "DEBUG must be true or false"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL must be a PostgreSQL URL"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
        (
            {"WAL_METRICS_RETENTION_DAYS": "60", "WAL_ROLLUP_RETENTION_DAYS": "45"},
            r"WAL_ROLLUP_RETENTION_DAYS \(45\) must be at least WAL_METRICS_RETENTION_DAYS \(60\)",
        ),
        ({"WAL_ROLLUP_RETENTION_DAYS": "0"}, "WAL_ROLLUP_RETENTION_DAYS must be at least 1"),
    ],
)
def test_bad_settings_refuse_to_start(tmp_path, env, message):
    """A wrong setting stops start-up with a message naming it."""
    with pytest.raises(ConfigError, match=message):
        load_config(str(tmp_path), {"DATABASE_URL": "postgresql://u@h/d", **env})


def test_production_refuses_a_missing_database_url(tmp_path):
    """In production an unset DATABASE_URL stops start-up, not a SQLite file made in passing."""
    env = {"APP_ENV": "production", "SECRET_KEY": "a-long-random-production-key"}
    with pytest.raises(ConfigError, match="DATABASE_URL is missing; with APP_ENV=production"):
        load_config(str(tmp_path), env)
    assert not (tmp_path / "rosetta.db").exists()
    sqlite_url = f"sqlite:///{tmp_path / 'kept.db'}"
    config = load_config(str(tmp_path), {**env, "DATABASE_URL": sqlite_url})
    assert config["SQLALCHEMY_DATABASE_URI"] == sqlite_url


@pytest.mark.slow
def test_production_refusal_from_the_command_line(tmp_path):
    """`flask` itself refuses to start in production without a real SECRET_KEY."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "APP_ENV": "production", "SECRET_KEY": "change-me", "FLASK_APP": "wsgi"}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "routes"],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert result.returncode != 0
    assert "SECRET_KEY is missing or still the example value" in result.stderr


def test_bad_encryption_key_refuses_to_start(database_url):
    """An ENCRYPTION_KEY that is not a Fernet key stops start-up with a message."""
    from rosetta_web.crypto import fernet_for

    with pytest.raises(ConfigError, match="ENCRYPTION_KEY must be a Fernet key"):
        fernet_for("x", "not-a-key")


@pytest.mark.slow
def test_json_logs_are_one_object_per_line(tmp_path):
    """LOG_FORMAT=json makes every log line a JSON object with time, level and message."""
    import json
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "LOG_FORMAT": "json",
        "FLASK_APP": "wsgi",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "flask", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.strip().splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any("Running upgrade" in line["message"] for line in lines)
