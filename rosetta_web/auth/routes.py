"""Sign-in, sign-out, first-run set-up and the account page."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from ..audit import services as audit
from ..crypto import decrypt_secret, encrypt_secret
from ..extensions import db
from ..forms import MAX_INT, ConfirmForm, confirmed_or_flash, filled, form_view
from ..models import ApiToken, User
from . import bp, services
from .forms import LoginForm, PasswordChangeForm, TokenForm, UserForm


def _safe_next(target: str | None) -> str:
    """Return `target` if it is a path on this site, else the home page."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/"):
            return target
    return url_for("dashboard.index")


def _me() -> User:
    """The signed-in account itself, not the proxy to it."""
    user: User = current_user._get_current_object()
    return user


@bp.route("/login", methods=["GET", "POST"])
@form_view
def login() -> Response | str | tuple[str, int, dict[str, str]]:
    """Sign an account in, refusing a username or a client address after too many failures."""
    if services.user_count() == 0:
        return redirect(url_for("auth.setup"))
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm(next=request.args.get("next", ""))
    if form.validate_on_submit():
        username = filled(form.username)
        audit.act_as(audit.Actor(username, None, request.remote_addr))
        throttled = services.begin_attempt(username, request.remote_addr)
        if throttled:
            wait = throttled.wait_seconds
            minutes = (wait + 59) // 60
            whose = "for this username" if throttled.by == "username" else "from your address"
            # Refused without a look at the password: the failures that led here are recorded.
            form.form_errors.append(
                f"Too many failed sign-ins {whose}. Try again in {minutes} minute"
                f"{'s' if minutes != 1 else ''}."
            )
            return render_template("auth/login.html", form=form), 429, {"Retry-After": str(wait)}
        user = services.authenticate(username, filled(form.password))
        if user is None:
            services.sign_in_failed(username, "Unknown username or wrong password.")
            form.form_errors.append("Unknown username or wrong password.")
            return render_template("auth/login.html", form=form), 200, {}
        if not user.is_active:  # the right password: saying so gives nothing away
            services.sign_in_failed(username, "The account is disabled.")
            form.form_errors.append("This account is disabled. An admin can enable it again.")
            return render_template("auth/login.html", form=form), 403, {}
        services.clear_failures(username)
        services.signed_in(user)
        session.clear()  # a fresh session (and CSRF token) for the signed-in operator
        login_user(user)
        return redirect(_safe_next(form.next.data), 303)
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    """Sign the operator out, ending every session cookie issued to them."""
    services.sign_out(_me())
    logout_user()
    session.clear()
    flash("Signed out.", "success")
    return redirect(url_for("auth.login"), 303)


@bp.route("/setup", methods=["GET", "POST"])
@form_view
def setup() -> Response | str:
    """Create the first account, an admin; once one exists this page is gone."""
    if services.user_count() > 0:
        abort(404)
    form = UserForm()
    if form.validate_on_submit():
        # Nobody is signed in yet: the one who sets Rosetta up is the account they make.
        audit.act_as(audit.Actor(filled(form.username), None, request.remote_addr))
        user = services.create_first_user(filled(form.username), filled(form.password))
        if user is None:
            flash("Rosetta was set up a moment ago by someone else: sign in.", "info")
            return redirect(url_for("auth.login"), 303)
        session.clear()
        login_user(user)
        flash(f"Welcome, {user.username}. Add your first source.", "success")
        return redirect(url_for("dashboard.index"), 303)
    return render_template("auth/setup.html", form=form)


@bp.route("/account", methods=["GET", "POST"])
@form_view
def account() -> Response | str:
    """List the operator's API tokens and create one, showing its secret once."""
    form = TokenForm()
    if form.validate_on_submit():
        token, raw = services.create_token(_me(), filled(form.name), bool(form.read_only.data))
        # Carried, encrypted, to the page the redirect shows, which takes it out of the session.
        session["new_token"] = encrypt_secret(raw)
        flash(f"Token '{token.name}' created. Copy it now: it is not shown again.", "success")
        return redirect(url_for("auth.account"), 303)
    return _account_page(form=form)


def _account_page(
    form: TokenForm | None = None, password_form: PasswordChangeForm | None = None
) -> str:
    new_token = session.pop("new_token", None)
    tokens = db.session.scalars(
        select(ApiToken)
        .where(ApiToken.user_id == current_user.id)
        .order_by(ApiToken.created_at.desc())
    ).all()
    return render_template(
        "auth/account.html",
        form=form or TokenForm(formdata=None),
        password_form=password_form or PasswordChangeForm(formdata=None),
        tokens=tokens,
        new_token=decrypt_secret(new_token) if new_token else None,
        revoke_form=ConfirmForm(),
    )


@bp.post("/account/password")
@form_view
def change_password() -> Response | str:
    """Change one's own password (required after an admin's reset); other sessions end."""
    form = PasswordChangeForm()
    if form.validate_on_submit():
        if not current_user.check_password(filled(form.current)):
            form.current.errors = ["That is not your current password."]
        else:
            services.change_password(_me(), filled(form.password))
            login_user(_me())  # this session, under the new id
            flash("Password changed. Your other sessions are signed out.", "success")
            return redirect(url_for("auth.account"), 303)
    return _account_page(password_form=form)


@bp.route("/account/tokens/<id:token_id>/revoke", methods=["POST"])
@form_view
def revoke_token(token_id: int) -> Response:
    """Revoke one of the operator's API tokens."""
    token = db.session.get(ApiToken, token_id) if 0 < token_id <= MAX_INT else None
    if token is None or token.user_id != current_user.id:
        abort(404)
    if confirmed_or_flash("revoke the token again"):
        services.revoke_token(token)
        flash(f"Token '{token.name}' revoked.", "success")
    return redirect(url_for("auth.account"), 303)
