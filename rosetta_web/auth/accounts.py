"""Admins manage accounts: create them, change their role, disable and enable them, and reset
a password the user must then change."""

from __future__ import annotations

from flask import flash, redirect, render_template, session, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from ..crypto import decrypt_secret, encrypt_secret
from ..errors import NotFound
from ..extensions import db
from ..forms import ConfirmForm, confirmed_or_flash, filled, form_view
from ..models import ROLES, User
from . import bp, services
from .forms import NewAccountForm, RoleForm


def _account(user_id: int) -> User:
    user = db.session.get(User, user_id) if 0 < user_id < 2**31 else None
    if user is None:
        raise NotFound("Account", user_id)
    return user


def _page(form: NewAccountForm, status: int = 200) -> tuple[str, int]:
    users = services.all_users()
    reset = session.pop("reset_password", None)
    return (
        render_template(
            "auth/accounts.html",
            form=form,
            users=users,
            role_forms={user.id: RoleForm(formdata=None, role=user.role) for user in users},
            confirm=ConfirmForm(),
            reset=(reset[0], decrypt_secret(reset[1])) if reset else None,
        ),
        status,
    )


@bp.route("/accounts", methods=["GET", "POST"])
@form_view
def accounts() -> Response | tuple[str, int]:
    """List the accounts; create one."""
    form = NewAccountForm()
    if form.validate_on_submit():
        try:
            user = services.create_user(
                filled(form.username), filled(form.password), str(form.role.data)
            )
        except services.AccountExists as exc:
            form.username.errors = [f"{exc}."]
            return _page(form, 409)
        flash(f"Created {user.role} {user.username}.", "success")
        return redirect(url_for("auth.accounts"), 303)
    return _page(form)


@bp.post("/accounts/<id:user_id>/role")
@form_view
def account_role(user_id: int) -> Response | tuple[str, int]:
    """Change an account's role; the last enabled admin keeps theirs."""
    user = _account(user_id)
    if not confirmed_or_flash("press Set role again"):
        return redirect(url_for("auth.accounts"), 303)
    form = RoleForm()
    if not form.validate_on_submit():
        flash(f"Choose a role for {user.username}: {', '.join(ROLES)}.", "error")
        return redirect(url_for("auth.accounts"), 303)
    try:
        services.set_role(user, str(form.role.data))
    except services.LastAdmin as exc:
        flash(str(exc), "error")
        return _page(NewAccountForm(formdata=None), 409)
    flash(f"{user.username} is now {user.role}.", "success")
    return redirect(url_for("auth.accounts"), 303)


@bp.post("/accounts/<id:user_id>/disable")
@form_view
def account_disable(user_id: int) -> Response | tuple[str, int]:
    """Disable an account: its sessions end and its API tokens are revoked."""
    user = _account(user_id)
    if not confirmed_or_flash("press Disable again"):
        return redirect(url_for("auth.accounts"), 303)
    try:
        revoked = services.disable_user(user)
    except services.LastAdmin as exc:
        flash(str(exc), "error")
        return _page(NewAccountForm(formdata=None), 409)
    again = " Enabling it again does not bring them back." if revoked else ""
    flash(
        f"Disabled {user.username}: signed out, {services.tokens_revoked_words(revoked)}.{again}",
        "success",
    )
    if user.id == current_user.id:
        return redirect(url_for("auth.login"), 303)
    return redirect(url_for("auth.accounts"), 303)


@bp.post("/accounts/<id:user_id>/enable")
@form_view
def account_enable(user_id: int) -> Response:
    """Let a disabled account sign in again; the tokens its disabling revoked stay revoked."""
    user = _account(user_id)
    if not confirmed_or_flash("press Enable again"):
        return redirect(url_for("auth.accounts"), 303)
    services.enable_user(user)
    flash(
        f"Enabled {user.username}. The API tokens its disabling revoked stay revoked: "
        "new ones are made on its account page.",
        "success",
    )
    return redirect(url_for("auth.accounts"), 303)


@bp.post("/accounts/<id:user_id>/reset-password")
@form_view
def account_reset(user_id: int) -> Response:
    """Give the account a new password, shown once; the user must change it at sign-in, and
    its API tokens stop until then."""
    user = _account(user_id)
    if not confirmed_or_flash("press Reset password again"):
        return redirect(url_for("auth.accounts"), 303)
    password = services.reset_password(user)
    # Carried, encrypted, to the page the redirect shows, which takes it out of the session.
    session["reset_password"] = (user.username, encrypt_secret(password))
    return redirect(url_for("auth.accounts"), 303)
