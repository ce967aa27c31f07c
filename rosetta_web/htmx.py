"""Render a whole page, or for an htmx request the fragment that the page includes."""

from __future__ import annotations

from typing import Any

from flask import Response, make_response, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse


def is_htmx() -> bool:
    """Tell whether htmx asks for a fragment: not for boosted links or restoring history."""
    headers = request.headers
    return (
        headers.get("HX-Request") == "true"
        and headers.get("HX-Boosted") != "true"
        and headers.get("HX-History-Restore-Request") != "true"
    )


def render_page_or_fragment(page: str, fragment: str, **context: Any) -> Response:
    """Render `fragment` for htmx requests and `page` otherwise, varying the cache on it."""
    response = make_response(render_template(fragment if is_htmx() else page, **context))
    response.vary.add("HX-Request")
    return response


def go_to(url: str) -> BaseResponse:
    """Send the browser to `url`: htmx would swap a followed redirect's whole page into the
    fragment it asked for, so it is told to navigate instead."""
    if is_htmx():
        return Response(status=204, headers={"HX-Redirect": url})
    return redirect(url, 303)
