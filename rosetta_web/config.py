"""Settings from the environment (and `.env`), validated once when the app is created."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from . import fastjson

EXAMPLE_SECRET_KEYS = {"", "change-me", "changeme", "dev", "secret", "<generate-secure-key>"}
LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message says which and why."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def normalize_database_url(url: str) -> str:
    """Return a SQLAlchemy URL for the sync psycopg2 driver from the forms operators write."""
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; Rosetta ships psycopg2.
    for prefix in (
        "postgres://",
        "postgresql://",
        "postgresql+asyncpg://",
        "postgresql+psycopg://",
    ):
        if url.startswith(prefix):
            url = "postgresql+psycopg2://" + url[len(prefix) :]
    if url.startswith(("postgresql+psycopg2://", "sqlite:")):
        try:
            make_url(url).port  # noqa: B018 - reading the port is what fails on a stray ':'
        except ValueError:
            # Never echo the URL: it holds the password.
            raise ConfigError(
                "DATABASE_URL cannot be read: percent-encode special characters in the user "
                "name and password (@ as %40, : as %3A, / as %2F, # as %23, % as %25)"
            ) from None
        return url
    raise ConfigError(
        "DATABASE_URL must be a PostgreSQL URL (postgresql://user:pass@host:5432/db) "
        "or a sqlite: URL; leave it unset for the embedded SQLite file"
    )


def _dev_secret_key(instance_path: Path) -> str:
    """Return a per-installation development key, kept in the instance folder across restarts."""
    key_file = instance_path / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


def engine_options(database_url: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Return the connection pool settings for the metadata database at `database_url`."""
    # A database error's text leaves out the statement's values: they hold encrypted secrets
    # and password hashes, and such a text reaches the log.
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "hide_parameters": True,
        "json_deserializer": fastjson.loads,
    }
    if database_url.startswith("postgresql"):
        options.update(
            pool_size=_int(env, "DB_POOL_SIZE", 20, minimum=1),
            max_overflow=_int(env, "DB_MAX_OVERFLOW", 10, minimum=0),
            pool_timeout=_int(env, "DB_POOL_TIMEOUT", 30, minimum=1),
            pool_recycle=_int(env, "DB_POOL_RECYCLE", 3600, minimum=-1),
            pool_use_lifo=True,
            # An UPDATE of many rows (the alerts an evaluation touches) in pages of statements,
            # not a round trip per row.
            executemany_mode="values_plus_batch",
            connect_args={
                "connect_timeout": _int(env, "DB_CONNECT_TIMEOUT", 10, minimum=1),
                # Rosetta's queries are short; JIT compiling one, as PostgreSQL may when it
                # overestimates rows, costs more than running it (100 ms on a chart's query).
                "options": "-c jit=off",
            },
        )
    return options


def load_config(instance_path: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read every setting from `env` (default: the process environment) and validate it."""
    env = os.environ if env is None else env
    instance = Path(instance_path)

    app_env = env.get("APP_ENV", "development").strip().lower() or "development"
    if app_env not in {"development", "production"}:
        raise ConfigError(f"APP_ENV must be development or production, got {app_env!r}")

    secret_key = env.get("SECRET_KEY", "").strip()
    if secret_key in EXAMPLE_SECRET_KEYS:
        if app_env == "production":
            raise ConfigError(
                "SECRET_KEY is missing or still the example value; with APP_ENV=production "
                "set it to a long random string, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        secret_key = _dev_secret_key(instance)

    log_level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(sorted(LOG_LEVELS))}")

    log_format = env.get("LOG_FORMAT", "text").strip().lower() or "text"
    if log_format not in {"text", "json"}:
        raise ConfigError(f"LOG_FORMAT must be text or json, got {log_format!r}")

    raw_url = env.get("DATABASE_URL", "").strip()
    if raw_url:
        database_url = normalize_database_url(raw_url)
    elif app_env == "production":
        raise ConfigError(
            "DATABASE_URL is missing; with APP_ENV=production set it to the metadata "
            "database, e.g. postgresql://rosetta:secret@db.internal:5432/rosetta_metadata "
            "(or a sqlite: URL to keep a file on purpose)"
        )
    else:
        instance.mkdir(parents=True, exist_ok=True)
        database_file = instance / "rosetta.db"
        # It holds password hashes and encrypted secrets: readable by Rosetta's user alone.
        os.close(os.open(database_file, os.O_CREAT | os.O_WRONLY, 0o600))
        database_url = f"sqlite:///{database_file}"

    interval_s = _int(env, "WAL_MONITOR_INTERVAL_SECONDS", 300, minimum=5)
    timeout_s = _int(env, "WAL_MONITOR_TIMEOUT_SECONDS", 30, minimum=1)
    if timeout_s >= interval_s:
        raise ConfigError(
            f"WAL_MONITOR_TIMEOUT_SECONDS ({timeout_s}) must be shorter than "
            f"WAL_MONITOR_INTERVAL_SECONDS ({interval_s}): a source must be given up on before "
            "its next round is due"
        )

    retention_days = _int(env, "WAL_METRICS_RETENTION_DAYS", 30, minimum=1)
    rollup_days = _int(env, "WAL_ROLLUP_RETENTION_DAYS", 400, minimum=1)
    if rollup_days < retention_days:
        raise ConfigError(
            f"WAL_ROLLUP_RETENTION_DAYS ({rollup_days}) must be at least "
            f"WAL_METRICS_RETENTION_DAYS ({retention_days}): charts of ranges longer than a day "
            "are drawn from the roll-ups"
        )

    public_url = env.get("PUBLIC_URL", "").strip() or "http://localhost:5000"
    parts = urlsplit(public_url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(
            f"PUBLIC_URL must be the http(s) address operators open Rosetta at, e.g. "
            f"https://rosetta.example.com; got {public_url!r}"
        )

    return {
        "APP_ENV": app_env,
        "PUBLIC_URL": public_url,
        "ALERT_REPEAT_MINUTES": _int(env, "ALERT_REPEAT_MINUTES", 60, minimum=1),
        # Whether channels may send to loopback and private addresses (a local relay).
        "ALERT_PRIVATE_TARGETS": _bool(env, "ALERT_PRIVATE_TARGETS", True),
        "DEBUG": _bool(env, "DEBUG", False),
        "SECRET_KEY": secret_key,
        "ENCRYPTION_KEY": env.get("ENCRYPTION_KEY", "").strip() or None,
        "LOG_LEVEL": log_level,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(database_url, env),
        "WAL_MONITOR_ENABLED": _bool(env, "WAL_MONITOR_ENABLED", True),
        "WAL_MONITOR_INTERVAL_SECONDS": interval_s,
        "WAL_MONITOR_TIMEOUT_SECONDS": timeout_s,
        "WAL_MONITOR_MAX_RETRIES": _int(env, "WAL_MONITOR_MAX_RETRIES", 3, minimum=0),
        "WAL_MONITOR_CONCURRENCY": _int(env, "WAL_MONITOR_CONCURRENCY", 32, minimum=1),
        # One connection per server kept open between rounds (false: one per round).
        "WAL_MONITOR_KEEP_CONNECTIONS": _bool(env, "WAL_MONITOR_KEEP_CONNECTIONS", True),
        # The engine (flask rosetta engine): how often it looks at the pipelines, how it
        # batches changes into one Snowflake load, how it retries, the JVM's heap.
        "ENGINE_POLL_SECONDS": _int(env, "ENGINE_POLL_SECONDS", 2, minimum=1),
        "ENGINE_BATCH_SECONDS": _int(env, "ENGINE_BATCH_SECONDS", 2, minimum=1),
        "ENGINE_BATCH_ROWS": _int(env, "ENGINE_BATCH_ROWS", 10000, minimum=1),
        "ENGINE_QUEUE_MB": _int(env, "ENGINE_QUEUE_MB", 16, minimum=1),
        "ENGINE_RETRY_MIN_SECONDS": _int(env, "ENGINE_RETRY_MIN_SECONDS", 30, minimum=1),
        "ENGINE_RETRY_MAX_SECONDS": _int(env, "ENGINE_RETRY_MAX_SECONDS", 900, minimum=1),
        "ENGINE_HEAP_MB": _int(env, "ENGINE_HEAP_MB", 512, minimum=64),
        "ENGINE_QUERY_TIMEOUT_SECONDS": _int(env, "ENGINE_QUERY_TIMEOUT_SECONDS", 120, minimum=5),
        "WAL_METRICS_RETENTION_DAYS": retention_days,
        # The hourly and daily roll-ups that charts of long ranges read: kept longer.
        "WAL_ROLLUP_RETENTION_DAYS": rollup_days,
        "AUDIT_RETENTION_DAYS": _int(env, "AUDIT_RETENTION_DAYS", 365, minimum=1),
        "TRUSTED_PROXIES": _int(env, "TRUSTED_PROXIES", 0, minimum=0),
        "METRICS_PUBLIC": _bool(env, "METRICS_PUBLIC", False),
        "LOG_FORMAT": log_format,
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": _bool(env, "SESSION_COOKIE_SECURE", app_env == "production"),
        "REMEMBER_COOKIE_SECURE": _bool(env, "SESSION_COOKIE_SECURE", app_env == "production"),
        "WTF_CSRF_CHECK_DEFAULT": False,
        "WTF_CSRF_TIME_LIMIT": _int(env, "CSRF_TIME_LIMIT_SECONDS", 3600 * 8, minimum=60),
        "LOGIN_MAX_FAILURES": 5,
        # Many names tried from one client address: a password sprayed over the accounts.
        "LOGIN_MAX_FAILURES_PER_ADDRESS": 20,
        "LOGIN_FAILURE_WINDOW_SECONDS": 15 * 60,
    }
