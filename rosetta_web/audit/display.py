"""What every template may use of the audit log: the link to an entity's history, and how a
changed value reads."""

from __future__ import annotations

import json
from typing import Any

from flask import url_for


def history_url(target_type: str, target_id: int) -> str:
    """The log filtered to one entity's history, for the entity's own page."""
    return url_for("audit.index", target_type=target_type, target_id=target_id)


def shown(value: Any) -> str:
    """A before or after value as the page shows it: text as it is, the rest as JSON."""
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value)
