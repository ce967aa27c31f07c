"""Waiting for htmx in a page under test."""

from __future__ import annotations

from typing import Any


def wait_settled(page: Any) -> None:
    """Wait until htmx has no request in flight and has settled what it swapped in. Content it
    swapped in is wired (its hx- attributes processed) only when it settles, 20 ms later: an
    event sent to it before then is lost, as it would be for an operator that fast."""
    from playwright.sync_api import expect

    # expect, not wait_for_function: a string predicate is eval'd, which the CSP forbids.
    expect(page.locator(".htmx-settling, .htmx-request")).to_have_count(0)
