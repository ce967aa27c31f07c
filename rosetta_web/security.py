"""Who may call what: sign-in or bearer token on every route, and CSRF on browser writes."""

from __future__ import annotations

import secrets
from typing import Any

from flask import Flask, current_app, g, jsonify, redirect, request, url_for
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask.wrappers import Response as FlaskResponse
from flask_login import current_user
from werkzeug.wrappers import Response

from .auth import services
from .auth.roles import SAFE_METHODS, SELF_SERVICE, rule_of, with_article
from .errors import ERROR_NAMES, ApiError, envelope, error_response, wants_json
from .extensions import csrf, db, login_manager
from .htmx import is_htmx
from .models import User

PUBLIC_ENDPOINTS = {"auth.login", "auth.setup", "health", "static"}


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class ApiSessionInterface(SecureCookieSessionInterface):
    """Send no session cookie to a client that signs its calls with a bearer token."""

    def save_session(self, app: Flask, session: SessionMixin, response: FlaskResponse) -> None:
        if g.get("authenticated_by_token"):
            return
        super().save_session(app, session, response)


# Scripts and everything else from Rosetta's own origin only: no inline script, no eval, no
# framing. Styles may be inline: Plotly adds <style> elements for each chart it draws (a
# browser test shows the violations without it), and a style cannot run code.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


def add_security_headers(app: Flask, response: Response) -> Response:
    """Set the headers that keep pages from being framed, sniffed or leaking their URLs."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Frame-Options", "DENY")  # frame-ancestors for older browsers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    if app.config["APP_ENV"] == "production":
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    return response


def init_security(app: Flask) -> None:
    """Wire sign-in, bearer tokens, CSRF checks and the security headers into the app."""
    app.after_request(lambda response: add_security_headers(app, response))
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Sign in to continue."
    login_manager.login_message_category = "info"
    csrf.init_app(app)
    app.session_interface = ApiSessionInterface()

    @login_manager.user_loader
    def load_user(session_id: str) -> User | None:
        if _bearer_token() is not None:
            return None  # a call signed with a token is judged by the token alone
        user_id, _, nonce = session_id.partition(".")
        user = db.session.get(User, int(user_id)) if user_id.isdigit() else None
        if user is None or not secrets.compare_digest(user.session_nonce, nonce):
            return None
        return user if user.is_active else None  # disabled: signed out at once

    @login_manager.request_loader
    def load_user_from_token(req: Any) -> User | None:
        token = _bearer_token()
        if token is None:
            return None
        try:
            found = services.token_for(token)
        except services.TokenStopped as exc:
            g.token_refusal = str(exc)  # the 401 says why, to the one who holds the token
            return None
        if found is None:
            return None
        g.authenticated_by_token = True
        g.token_read_only = found.read_only
        g.token_name = found.name  # the audit log names the token with its user
        return found.user

    @app.before_request
    def require_operator() -> Response | None:
        if request.endpoint is None or request.endpoint in PUBLIC_ENDPOINTS:
            return None
        if request.endpoint == "metrics" and app.config["METRICS_PUBLIC"]:
            return None
        if not current_user.is_authenticated:
            if wants_json():
                message = g.get("token_refusal") or (
                    "The bearer token is invalid or revoked"
                    if _bearer_token()
                    else "Sign in or send Authorization: Bearer <token>"
                )
                raise ApiError(401, message)
            login_url = url_for("auth.login", next=request.full_path.rstrip("?"))
            if is_htmx():
                # A redirect would be followed by htmx and the login page swapped into a table.
                response = Response(status=204, headers={"HX-Redirect": login_url})
                response.vary.add("HX-Request")
                return response
            return redirect(login_url)
        refusal = _refusal(app, request.endpoint, request.method)
        if refusal is not None:
            return _forbidden(refusal)
        if current_user.must_change_password and request.endpoint not in SELF_SERVICE:
            # An admin reset the password: nothing else until the user chooses a new one (its
            # tokens are refused before this: services.TokenStopped).
            if wants_json() or is_htmx():
                return _forbidden("Choose a new password on your account page first.")
            return redirect(url_for("auth.account"))
        if (
            request.method not in SAFE_METHODS
            and not g.get("authenticated_by_token")
            and app.config.get("WTF_CSRF_ENABLED", True)
        ):
            view = app.view_functions.get(request.endpoint)
            if not getattr(view, "csrf_checked_by_form", False):
                csrf.protect()
        return None


def can(endpoint: str) -> bool:
    """Tell whether the signed-in account may use an endpoint that changes something: the
    pages show a button only to those who may press it."""
    if not current_user.is_authenticated or g.get("token_read_only"):
        return False
    return bool(current_user.may(rule_of(current_app).required(endpoint, "POST")))


def _refusal(app: Flask, endpoint: str, method: str) -> str | None:
    """Say why the signed-in account (or its token) may not call this, or None."""
    if g.get("token_read_only") and method not in SAFE_METHODS:
        return "This token is read-only: it may read, not change anything."
    role = rule_of(app).required(endpoint, method)
    if not current_user.may(role):
        who = current_user.username
        return f"This needs the {role} role or above; {who} is {with_article(current_user.role)}."
    return None


def _forbidden(message: str) -> Response:
    """403: the envelope for the API and htmx, a page for the browser."""
    if is_htmx() and not wants_json():
        response = jsonify(envelope(ERROR_NAMES[403], message))
        response.status_code = 403
        response.vary.add("HX-Request")
        return response
    return error_response(403, message)
