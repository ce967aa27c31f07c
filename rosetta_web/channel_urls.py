"""Channel URLs as pages, the API and logs may show them: credentials and tokens masked.

Shared by the Channel model (which stores the masked URL beside the encrypted one), the
channel form and the alert engine's target checks; no Flask, no models. Apprise's own log
lines, which may hold whole URLs, are kept out of Rosetta's log by the logging set-up
(rosetta_web/__init__.py).
"""

from __future__ import annotations

from urllib.parse import urlsplit

# Apprise's plain HTTP notifiers: their privacy form keeps the path, where tokens often are.
GENERIC_SCHEMES = {"json", "jsons", "form", "forms", "xml", "xmls"}
# What a masked URL holds that no real one does: sent back, it is refused, never stored.
MASKS = ("…", "****", "...")


def apprise_plugin(url: str) -> object | None:
    """Return Apprise's notifier for a URL, or None when Apprise cannot read it."""
    import apprise  # 0.2 s to import: loaded when a URL is first read, not at start-up

    try:
        return apprise.Apprise.instantiate(url)
    except Exception:  # Apprise raises on some malformed URLs instead of returning None
        return None


def mask_url(url: str) -> str:
    """Show where a channel sends without what authenticates it.

    Apprise's own privacy form for the services it knows (tokens cut to their first and last
    character, passwords starred, options dropped); for any other URL, the scheme, host and
    port, with an ellipsis for the path and query that may carry a token.
    """
    parts = urlsplit(url)
    plugin = apprise_plugin(url) if parts.scheme.lower() not in GENERIC_SCHEMES else None
    if plugin is not None:
        return str(plugin.url(privacy=True)).split("?", 1)[0]  # type: ignore[attr-defined]
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    hidden = "/…" if parts.path.strip("/") or parts.query else "/"
    return f"{parts.scheme}://{host}{hidden}"
