"""The one JSON error envelope, and the handlers that answer every error with it."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, flash, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.http import HTTP_STATUS_CODES

from .extensions import db
from .resources import DomainError, DuplicateName, InUse, NotFound
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
    415: "UnsupportedMediaTypeError",
    422: "ValidationError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


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
    return ApiError(409, str(exc))


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
        response = Response(
            render_template(
                "errors/error.html", status=status, title=HTTP_STATUS_CODES.get(status), **body
            )
        )
    response.status_code = status
    return response


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

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        db.session.rollback()  # the page below must not trip over a failed transaction
        return error_response(500, "An unexpected error occurred; it has been logged.")
