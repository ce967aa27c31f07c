"""In a real Chromium at a phone's width: a destination's checks run in place against
fakesnow's Snowflake-protocol server."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from rosetta_web.extensions import db as _db

from ..constants import PHONE
from ..factories import create_operator, new_destination
from ..seed import PASSPHRASE
from ..snowflake import new_user, openssl_fingerprint, write_key

pytestmark = pytest.mark.slow

# Elements wider than the screen, but for those that scroll in a box of their own.
OVERFLOWING = """() => Array.from(document.querySelectorAll('body *'))
    .filter((el) => el.getBoundingClientRect().right > innerWidth + 0.5)
    .filter((el) => !el.closest('.table-scroll, table, pre'))
    .map((el) => el.tagName + '#' + el.id + '.' + el.className)"""


def test_check_button_swaps_the_checklist_in(app, live_server, page, snowflake, tmp_path, sign_in):
    """Check on a destination never checked swaps in the checklist and the fingerprint (as
    openssl computes it), in place, and nothing overflows the phone's screen."""
    key_path = tmp_path / "rsa_key.p8"
    user = new_user(snowflake, write_key(key_path, passphrase=PASSPHRASE))
    create_operator(app)
    with app.app_context():
        destination = new_destination(
            "snowflake-production",
            snowflake_account="xy12345.us-east-1",
            snowflake_user=user,
            snowflake_database="ANALYTICS",
            snowflake_schema="RAW_DATA",
            snowflake_private_key_path=str(key_path),
            snowflake_host=snowflake.host_setting,
            snowflake_private_key_passphrase=PASSPHRASE,
        )
        _db.session.add(destination)
        _db.session.commit()
    page.set_viewport_size(PHONE)
    sign_in()
    page.goto(live_server + "/destinations/1")
    expect(page.locator("#readiness-none")).to_be_visible()
    page.evaluate("window.marker = 'same page'")
    page.click("#check-button")
    expect(page.locator("#check-login")).to_have_attribute("data-status", "pass")
    expect(page.locator("#readiness-none")).to_have_count(0)
    expect(page.locator("#readiness .badge").first).to_have_text("ready")
    expect(page.locator("#key-fingerprint code").first).to_have_text(
        openssl_fingerprint(key_path, PASSPHRASE)
    )
    assert page.evaluate("window.marker") == "same page"
    assert page.evaluate(OVERFLOWING) == []
