"""What every template may use of alerts: the banner's counts, the rules' names, the global
settings (as placeholders of a source's overrides). rosetta_web/templating.py registers them,
with the filters of display.py that word alerts."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g
from jinja2 import Template

from ..errors import DATABASE_UNAVAILABLE, outage
from ..extensions import db
from ..models import ALERT_RULES
from .services import banner_counts, current_settings

log = logging.getLogger(__name__)


def firing_banner() -> dict[str, int] | None:
    """Return the unsilenced firing alerts by severity, once per request (one query); None
    while the metadata database does not answer: the banner is left out, nothing breaks."""
    if "rosetta_banner" not in g:
        try:
            counts: dict[str, int] | None = banner_counts()
        except DATABASE_UNAVAILABLE as exc:
            outage.failed(exc)
            try:
                db.session.rollback()
            except Exception:
                log.debug("rollback after the banner's query failed", exc_info=True)
            counts = None
        g.rosetta_banner = counts
    banner: dict[str, int] | None = g.rosetta_banner
    return banner


def template_helpers() -> dict[str, Any]:
    """Lazy helpers for every template: nothing is queried unless a template calls them."""
    return {
        "alert_banner": firing_banner,
        # The global rule settings: a source's overrides show them as placeholders.
        "global_alert_settings": current_settings,
        "alert_rules": ALERT_RULES,
    }


def no_banner_on_error_pages(
    sender: Flask, template: Template, context: dict[str, Any], **extra: Any
) -> None:
    """Error pages query nothing: they may be answering a failed transaction or an outage."""
    if (template.name or "").startswith("errors/"):
        context["alert_banner"] = None
