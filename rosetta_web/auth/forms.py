"""Forms for signing in, setting up the first account, managing accounts and naming API
tokens."""

from __future__ import annotations

from wtforms import BooleanField, HiddenField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Regexp

from ..forms import BaseForm, SelectChoice, lowercase, strip
from ..models import ROLES

USERNAME_RULES = [
    DataRequired(),
    Length(max=80),
    Regexp(r"^[a-z0-9_.@-]+$", message="Use letters, digits and . _ @ - only."),
]
PASSWORD_RULES = [DataRequired(), Length(min=8, max=256, message="Use 8 to 256 characters.")]


class LoginForm(BaseForm):
    username = StringField(
        "Username",
        filters=[lowercase],
        validators=[DataRequired(), Length(max=80)],
        render_kw={"autocomplete": "username"},
    )
    password = PasswordField(
        "Password", validators=[DataRequired()], render_kw={"autocomplete": "current-password"}
    )
    next = HiddenField()


class UserForm(BaseForm):
    """A new account, from /setup or `flask users create`."""

    username = StringField("Username", filters=[lowercase], validators=USERNAME_RULES)
    password = PasswordField("Password", validators=PASSWORD_RULES)
    confirm = PasswordField(
        "Repeat password", validators=[DataRequired(), EqualTo("password", "Passwords differ.")]
    )


class TokenForm(BaseForm):
    name = StringField(
        "Token name",
        filters=[strip],
        validators=[DataRequired(), Length(max=80)],
        description="What will use it, e.g. 'nightly-healthcheck'.",
    )
    read_only = BooleanField(
        "Read-only",
        description="It may read whatever you may read, and change nothing (a dashboard script).",
    )


ROLE_CHOICES = [
    SelectChoice("viewer", "viewer: reads every page, changes nothing"),
    SelectChoice("operator", "operator: runs CDC"),
    SelectChoice("admin", "admin: also accounts, alert channels and settings, drops"),
]


class NewAccountForm(UserForm):
    """An account an admin makes, with its role."""

    role = SelectField("Role", choices=ROLE_CHOICES, default="operator")


class RoleForm(BaseForm):
    """An account's role, set from its row of the accounts list."""

    role = SelectField("Role", choices=[SelectChoice(role, role) for role in ROLES])


class PasswordChangeForm(BaseForm):
    """One's own new password, the current one given first."""

    current = PasswordField(
        "Current password",
        validators=[DataRequired()],
        render_kw={"autocomplete": "current-password"},
    )
    password = PasswordField("New password", validators=PASSWORD_RULES)
    confirm = PasswordField(
        "Repeat new password",
        validators=[DataRequired(), EqualTo("password", "Passwords differ.")],
    )
