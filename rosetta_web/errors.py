"""The domain errors, the one JSON error envelope, and the handlers that answer every error
with it.

A domain error is a plain exception raised by a service (no request, no HTTP); an area may
declare its own kinds in its services, as subclasses of `DomainError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from flask import Flask, Response, flash, g, jsonify, render_template, request
from flask_login import AnonymousUserMixin
from flask_wtf.csrf import CSRFError
from sqlalchemy import Engine, event
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.http import HTTP_STATUS_CODES

from .extensions import db
from .timeutil import isoformat, utcnow

log = logging.getLogger(__name__)

# The error names operators and scripts see, by HTTP status.
ERROR_NAMES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "EntityNotFoundError",
    405: "MethodNotAllowedError",
    409: "ConflictError",
    413: "PayloadTooLargeError",
    414: "URITooLongError",
    415: "UnsupportedMediaTypeError",
    422: "ValidationError",
    429: "RateLimitError",
    500: "InternalServerError",
    502: "SourceUnreachableError",
    503: "ServiceUnavailableError",
}


class DomainError(Exception):
    """A rule of Rosetta's refused an operation; the message is for the operator.

    The edge answers it with `status` (409 unless a kind says otherwise), its error name
    (`error`, else the status's) and `details`.
    """

    status = 409
    error: str | None = None
    details: dict[str, Any] = {}  # noqa: RUF012 - read-only default; kinds set their own


class NotFound(DomainError):
    """No entity of that kind has that id."""

    def __init__(self, entity_type: str, entity_id: Any) -> None:
        super().__init__(f"{entity_type} with id '{entity_id}' not found")
        self.entity_type = entity_type
        self.entity_id = str(entity_id)


class DuplicateName(DomainError):
    """Another entity of the same kind already has the name."""

    def __init__(self, label: str, name: str) -> None:
        super().__init__(f"A {label} named '{name}' already exists")
        self.field_message = f"A {label} named '{name}' already exists."


class InUse(DomainError):
    """Pipelines use the entity, so it cannot be deleted."""

    def __init__(self, title: str, name: str, pipelines: Sequence[str]) -> None:
        count = len(pipelines)
        super().__init__(
            f"{title} '{name}' is used by {count} pipeline{'s' if count != 1 else ''}; "
            "delete or change them first"
        )
        self.pipelines = list(pipelines)


class ApiError(Exception):
    """An error to answer with the envelope: raise it from any view."""

    def __init__(
        self,
        status: int,
        message: str,
        details: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or {}
        self.error = error or ERROR_NAMES.get(status, "Error")


def from_domain(exc: DomainError) -> ApiError:
    """Translate a domain error into the envelope's status, name and details."""
    if isinstance(exc, NotFound):
        details: dict[str, Any] = {"entity_type": exc.entity_type, "entity_id": exc.entity_id}
        return ApiError(404, str(exc), details)
    if isinstance(exc, DuplicateName):
        details = {"fields": {"name": [exc.field_message]}}
        return ApiError(409, str(exc), details, "DuplicateNameError")
    if isinstance(exc, InUse):
        return ApiError(409, str(exc), {"pipelines": exc.pipelines})
    return ApiError(exc.status, str(exc), dict(exc.details), exc.error)


def envelope(error: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the error envelope as a dict."""
    return {
        "error": error,
        "message": message,
        "details": details or {},
        "timestamp": isoformat(utcnow()),
    }


def wants_json() -> bool:
    """Tell whether this request should get JSON rather than an HTML page."""
    if request.path.startswith("/api/") or request.path in ("/health", "/metrics"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(
    status: int, message: str, details: dict[str, Any] | None = None, error: str | None = None
) -> Response:
    """Answer an error as the JSON envelope, or as an HTML page showing the same fields."""
    error = error or ERROR_NAMES.get(status, "Error")
    body = envelope(error, message, details)
    if wants_json():
        response = jsonify(body)
    else:
        try:
            page = render_template(
                "errors/error.html", status=status, title=HTTP_STATUS_CODES.get(status), **body
            )
        except DATABASE_UNAVAILABLE as exc:  # the page asks who is signed in
            return database_unavailable(exc)
        response = Response(page)
    response.status_code = status
    return response


# What SQLAlchemy raises when the metadata database cannot be reached or a pooled connection
# dies: the server is down, restarting, or out of reach, not a bug of the request.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
RETRY_AFTER_SECONDS = 10


class Outage:
    """Log a metadata database outage once when it starts and once when it ends, not once per
    request: a dashboard polled by many browsers would otherwise write a traceback each.

    The web side has one; the scheduler one for the WAL monitor's jobs and one for alert
    delivery, each naming itself in `prefix` ("alert delivery: "), saying what it does
    `meanwhile`, and logging to its own `logger`.
    """

    def __init__(
        self,
        meanwhile: str = "answering 503",
        prefix: str = "",
        logger: logging.Logger = log,
    ) -> None:
        self._since: float | None = None
        self._lock = threading.Lock()
        self.meanwhile = meanwhile
        self.prefix = prefix
        self.log = logger

    def failed(self, exc: BaseException) -> None:
        """Note that the database did not answer; log it if this starts an outage."""
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
        self.log.error(
            "%smetadata database unavailable (%s); %s until it is back",
            self.prefix,
            type(getattr(exc, "orig", None) or exc).__name__,
            self.meanwhile,
            stacklevel=2,  # the line names who met the outage, not this class
        )

    def answered(self) -> None:
        """Note that the database answered; log the end of an outage."""
        if self._since is None:  # the common case, read without the lock
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            self.log.warning(
                "%smetadata database back after %.0f s",
                self.prefix,
                time.monotonic() - since,
                stacklevel=2,
            )


outage = Outage()


def database_unavailable(exc: BaseException) -> Response:
    """Answer 503 with Retry-After, without touching the database: the envelope, or a page
    that needs no one signed in."""
    outage.failed(exc)
    try:
        db.session.rollback()
    except Exception:
        log.debug("rolling back after the metadata database went away failed", exc_info=True)
    message = "The metadata database is not answering. Try again in a few seconds."
    # Flask-Login puts the signed-in user in every template, loading it from the database:
    # render as nobody instead.
    g._login_user = AnonymousUserMixin()
    if wants_json():
        response = jsonify(envelope(ERROR_NAMES[503], message))
    else:
        response = Response(render_template("errors/unavailable.html", message=message))
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


# The longest URL (path and query string, as sent) Rosetta reads. gunicorn.conf.py lets request
# lines of twice that through, so a longer URL is answered here, as every other error is,
# rather than by gunicorn's own HTML page.
MAX_URL_BYTES = 4096


def refuse_long_urls(app: Flask) -> None:
    """Answer 414 to a URL over MAX_URL_BYTES, before sign-in or the database is asked."""

    @app.before_request
    def refuse_long_url() -> Response | None:
        environ = request.environ
        # RAW_URI (gunicorn, werkzeug) is the target as it came on the request line.
        sent = environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.full_path
        if len(sent) <= MAX_URL_BYTES:
            return None
        return error_response(
            414,
            f"The URL is {len(sent)} bytes long; Rosetta reads URLs of up to {MAX_URL_BYTES} "
            "bytes. Send fewer or shorter query parameters.",
            {"url_bytes": len(sent), "max_url_bytes": MAX_URL_BYTES},
        )


def watch_database(engine: Engine) -> None:
    """End a logged outage as soon as the pool hands out a working connection again."""
    event.listen(engine, "checkout", lambda *args: outage.answered())


def register_error_handlers(app: Flask) -> None:
    """Answer every error, HTTP or unexpected, with the envelope."""

    @app.errorhandler(ApiError)
    def handle_api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.details, exc.error)

    @app.errorhandler(DomainError)
    def handle_domain_error(exc: DomainError) -> Response:
        return handle_api_error(from_domain(exc))

    @app.errorhandler(CSRFError)
    def handle_csrf_error(exc: CSRFError) -> Response:
        message = (
            "The security token of this request is missing or expired. "
            "Reload the page and try again."
        )
        if request.headers.get("HX-Request") and not wants_json():
            # htmx does not swap error responses: reload so the operator gets a fresh token.
            flash(message, "error")
            response = Response(status=204)
            response.headers["HX-Refresh"] = "true"
        else:
            response = error_response(400, message, {"reason": exc.description}, "CSRFError")
        response.vary.add("HX-Request")
        return response

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException) -> Response:
        status = exc.code or 500
        details: dict[str, Any] = {}
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            details["allowed_methods"] = sorted(exc.valid_methods)
        response = error_response(status, exc.description or exc.name, details)
        if status == 405 and details:
            response.headers["Allow"] = ", ".join(details["allowed_methods"])
        return response

    for unavailable in DATABASE_UNAVAILABLE:
        app.register_error_handler(unavailable, database_unavailable)

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        db.session.rollback()  # the page below must not trip over a failed transaction
        return error_response(500, "An unexpected error occurred; it has been logged.")
