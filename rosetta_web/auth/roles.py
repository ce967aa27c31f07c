"""Who may do what: the one rule every request is held to, and the templates ask.

An endpoint that changes something (any of its methods is not GET, HEAD or OPTIONS) needs an
operator, for all its methods: its GET is the form or the confirmation that leads to the
change. The endpoints listed below need an admin. Everything else is read, by a viewer too.
Signing in and out and one's own account page are open to every account.
"""

from __future__ import annotations

from flask import Flask

from ..models import ROLES

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Every account manages its own sign-in, password and tokens.
SELF_SERVICE = frozenset(
    {
        "auth.login",
        "auth.logout",
        "auth.setup",
        "auth.account",
        "auth.change_password",
        "auth.revoke_token",
    }
)

# Accounts, alert channels and settings, and dropping slots and publications.
ADMIN_ONLY = frozenset(
    {
        "auth.accounts",
        "auth.account_role",
        "auth.account_disable",
        "auth.account_enable",
        "auth.account_reset",
        "alerts.settings",
        "api.replace_alert_settings",
        "channels.create",
        "channels.edit",
        "channels.delete",
        "channels.test",
        "api.create_channel",
        "api.replace_channel",
        "api.update_channel",
        "api.delete_channel",
        "api.test_channel_now",
        "sources.drop_slot",
        "sources.drop_publication",
        "api.drop_slot",
        "api.drop_publication",
    }
)

# Pages whose GET is reading, though their POST changes something.
READ_ON_GET = frozenset({"alerts.settings"})


class Rule:
    """The role each endpoint needs, read off the app's URL map once."""

    def __init__(self, app: Flask) -> None:
        self.changing = frozenset(
            rule.endpoint
            for rule in app.url_map.iter_rules()
            if (rule.methods or set()) - SAFE_METHODS
        )

    def required(self, endpoint: str, method: str) -> str:
        """Return the least role that may call `endpoint` with `method`."""
        if endpoint in SELF_SERVICE:
            return ROLES[0]
        if method in SAFE_METHODS and (endpoint in READ_ON_GET or endpoint not in self.changing):
            return ROLES[0]
        return "admin" if endpoint in ADMIN_ONLY else "operator"


def rule_of(app: Flask) -> Rule:
    """The app's rule, built the first time it is asked for (after every route is added)."""
    rule = app.extensions.get("rosetta_roles")
    if rule is None:
        rule = app.extensions["rosetta_roles"] = Rule(app)
    return rule


def with_article(word: str) -> str:
    """Put 'a' or 'an' before a word as it is said: a viewer, an operator, an admin."""
    return f"{'an' if word[:1].lower() in tuple('aeiou') else 'a'} {word}"
