"""Rosetta: a dashboard for PostgreSQL-to-Snowflake CDC pipelines and the WAL they pin."""

from __future__ import annotations

import logging
import os
from typing import Any

from dotenv import load_dotenv
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from .version import __version__ as __version__

LOG_HANDLER_NAME = "rosetta"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Create the Rosetta app: settings from the environment, overridden by `config`."""
    from .alerts.engine import delivery
    from .audit.services import watch as watch_audit
    from .config import engine_options, load_config
    from .crypto import fernet_for
    from .errors import refuse_long_urls, register_error_handlers, watch_database
    from .extensions import db, migrate
    from .monitor import workers
    from .security import init_security
    from .templating import register_templating

    load_dotenv()
    app = _bare_app()
    app.config.update(load_config(app.instance_path))
    app.config.update(config or {})
    if "SQLALCHEMY_ENGINE_OPTIONS" not in (config or {}):
        # The pool follows the database actually used, also when `config` names another.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(
            app.config["SQLALCHEMY_DATABASE_URI"], os.environ
        )
    _configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    app.extensions["rosetta_fernet"] = fernet_for(
        app.config["SECRET_KEY"], app.config["ENCRYPTION_KEY"]
    )
    # The app's own threads: the alert delivery pool, the sampling lanes and name lookups.
    delivery.init_app(app)
    workers.init_app(app)

    db.init_app(app)
    with app.app_context():
        watch_database(db.engine)
    watch_audit(db.session)
    if app.config["TRUSTED_PROXIES"]:
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    migrate.init_app(
        app,
        db,
        directory=os.path.join(app.root_path, os.pardir, "migrations"),
        render_as_batch=True,
        compare_type=True,
        include_name=_not_offsets,
    )
    refuse_long_urls(app)  # first: a URL too long is refused before sign-in is asked for
    init_security(app)
    register_error_handlers(app)
    app.url_map.converters["id"] = IdConverter
    _register_blueprints(app)
    register_templating(app)

    from .cli import register_cli

    register_cli(app)

    from .monitor.scheduler import serving_with_flask_run, start_monitor

    if serving_with_flask_run():
        start_monitor(app)
    return app


def check_settings() -> None:
    """Read and validate the settings as create_app does, without creating the app; raise
    ConfigError when one is wrong."""
    from .config import load_config

    load_dotenv()
    load_config(_bare_app().instance_path)


def _bare_app() -> Flask:
    from .fastjson import FastJSONProvider

    app = Flask(
        __name__,
        template_folder="../templates",
        static_folder="../static",
        # Where the development key, the lock files and a SQLite database live.
        instance_path=os.path.abspath(os.environ["ROSETTA_INSTANCE_PATH"])
        if os.environ.get("ROSETTA_INSTANCE_PATH")
        else None,
    )
    app.json = FastJSONProvider(app)
    return app


def _not_offsets(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave the engine's offsets tables (one per pipeline, not in the models) to the engine."""
    return not (type_ == "table" and name is not None and name.startswith("rosetta_offsets_"))


class IdConverter(IntegerConverter):
    """An entity id in a URL: any whole number, so every method on the route matches it.

    A number no row can have (past a 4-byte INTEGER) is then a 404 from the lookup, for
    GET, PUT, PATCH and DELETE alike, rather than no route at all.
    """

    regex = r"\d{1,30}"


def _configure_logging(level: str, log_format: str) -> None:
    """Log to stderr as text, or one JSON object per line with LOG_FORMAT=json."""
    handler = logging.StreamHandler()
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.set_name(LOG_HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler, so create_app may run twice (tests) without doubling lines.
    root.handlers = [h for h in root.handlers if h.get_name() != LOG_HANDLER_NAME] + [handler]
    root.setLevel(level)
    # urllib3 names each request's path at DEBUG, and a webhook's path may hold a token.
    logging.getLogger("urllib3").setLevel(logging.INFO)
    # Apprise writes whole URLs, tokens and all, in some of its log lines ("Unparseable URL
    # ..."): none reaches Rosetta's log. Delivery captures its warnings for the delivery log.
    apprise_log = logging.getLogger("apprise")
    apprise_log.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in apprise_log.handlers):
        apprise_log.addHandler(logging.NullHandler())


def _register_blueprints(app: Flask) -> None:
    from .alerts import bp as alerts_bp
    from .api import bp as api_bp
    from .audit import bp as audit_bp
    from .auth import bp as auth_bp
    from .channels import bp as channels_bp
    from .dashboard import bp as dashboard_bp
    from .destinations import bp as destinations_bp
    from .health import init_app as init_health
    from .monitor.prometheus import metrics
    from .pipelines import bp as pipelines_bp
    from .pipelines.metrics import PipelineCollector
    from .sources import bp as sources_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(dashboard_bp)
    app.register_blueprint(sources_bp, url_prefix="/sources")
    app.register_blueprint(destinations_bp, url_prefix="/destinations")
    app.register_blueprint(pipelines_bp, url_prefix="/pipelines")
    app.register_blueprint(alerts_bp, url_prefix="/alerts")
    app.register_blueprint(channels_bp, url_prefix="/alerts/channels")
    app.register_blueprint(audit_bp, url_prefix="/audit")
    app.register_blueprint(api_bp, url_prefix="/api/v1")
    # The monitor's series and the pipelines': /metrics is served by the app, which knows both.
    app.add_url_rule("/metrics", "metrics", lambda: metrics(PipelineCollector()))
    init_health(app)
