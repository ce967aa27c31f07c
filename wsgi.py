"""The WSGI entry point: `gunicorn wsgi:app`, and FLASK_APP for the flask command."""

from rosetta_web import create_app
from rosetta_web.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # The setting's own message, not a traceback: it says what to change.
    raise SystemExit(f"Rosetta cannot start: {exc}") from None
